import Foundation

//===----------------------------------------------------------------------===//
// The pure ledgers of the client core: acked operations (ack ids, the outbox,
// retries, deadlines) and invocations. No clock: every deadline is an input.
//===----------------------------------------------------------------------===//

/// A point on the monotonic clock, in nanoseconds (the shell passes `DispatchTime.now()`).
struct Instant: Comparable, Hashable, Sendable {
    var nanoseconds: UInt64

    init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// `self` plus `seconds` (negative and huge values saturate).
    func adding(_ seconds: TimeInterval) -> Instant {
        guard seconds > 0 else { return self }
        let ns = seconds * 1e9
        guard ns < Double(UInt64.max - nanoseconds) else { return Instant(nanoseconds: .max) }
        return Instant(nanoseconds: nanoseconds + UInt64(ns))
    }

    /// Seconds from `earlier` to `self` (0 when `earlier` is later).
    func seconds(since earlier: Instant) -> TimeInterval {
        nanoseconds > earlier.nanoseconds ? Double(nanoseconds - earlier.nanoseconds) / 1e9 : 0
    }
}

/// What an acked operation does.
enum OperationKind: Equatable, Sendable {
    case join(String), leave(String), rejoin(String), send, event

    var name: String {
        switch self {
        case .join: return "joinGroup"
        case .leave: return "leaveGroup"
        case .rejoin: return "rejoinGroup"
        case .send: return "sendToGroup"
        case .event: return "sendEvent"
        }
    }
}

/// Who waits for an operation: a caller (by the shell's token), or the client itself (rejoins).
enum OperationOrigin: Equatable, Sendable {
    case caller(UInt64)
    case rejoin
}

/// The operations that are not finished, by serial number (submission order).
struct OperationLedger: Sendable {
    enum Phase: Equatable, Sendable {
        /// Waiting for a connection (in the outbox).
        case queued
        /// Written; waiting for the ack.
        case sent
        /// Waiting out a retry delay.
        case retryWait
    }

    struct Entry: Equatable, Sendable {
        let serial: UInt64
        let origin: OperationOrigin
        let kind: OperationKind
        /// nil for fire-and-forget.
        let ackID: UInt64?
        let frame: String
        /// Attempts after the first (retries and resends after a lost connection).
        var retries = 0
        var phase: Phase = .queued
        /// When the current phase ends: ack time-out, connection wait or retry delay.
        var deadline: Instant
        /// The caller's own deadline for the whole operation, if any.
        var overallDeadline: Instant?
        var lastError: WebPubSubError?
        /// When the caller asked (for the latency metric).
        var submittedAt: Instant

        var isFireAndForget: Bool { ackID == nil }
    }

    private(set) var entries: [UInt64: Entry] = [:]
    private var ackIndex: [UInt64: UInt64] = [:]  // ack id → serial
    private var tokenIndex: [UInt64: UInt64] = [:]  // caller token → serial
    private var outbox: [UInt64] = []  // serials (lazily valid: phase must still be .queued)
    private var heap = DeadlineHeap()
    private var nextAckID: UInt64 = 0
    private var nextSerial: UInt64 = 0

    var count: Int { entries.count }

    /// A fresh ack id: above every id used so far, the caller's included, and not pending.
    mutating func allocateAckID() -> UInt64 {
        repeat { nextAckID &+= 1 } while nextAckID == 0 || ackIndex[nextAckID] != nil
        return nextAckID
    }

    func isPending(ackID: UInt64) -> Bool { ackIndex[ackID] != nil }

    /// Takes a caller's ack id: the generator never hands it out later.
    mutating func reserve(ackID: UInt64) { nextAckID = max(nextAckID, ackID) }

    /// Adds an operation in phase `.queued` (not yet in the outbox); returns its serial.
    mutating func add(origin: OperationOrigin, kind: OperationKind, ackID: UInt64?, frame: String,
                      overallDeadline: Instant?, now: Instant) -> UInt64 {
        nextSerial += 1
        let serial = nextSerial
        entries[serial] = Entry(serial: serial, origin: origin, kind: kind, ackID: ackID, frame: frame,
                                deadline: now, overallDeadline: overallDeadline, submittedAt: now)
        if let ackID { ackIndex[ackID] = serial }
        if case .caller(let token) = origin { tokenIndex[token] = serial }
        if let overallDeadline { heap.push(overallDeadline, serial) }
        return serial
    }

    subscript(serial: UInt64) -> Entry? { entries[serial] }

    func serial(forAckID ackID: UInt64) -> UInt64? { ackIndex[ackID] }

    func serial(forToken token: UInt64) -> UInt64? { tokenIndex[token] }

    /// Moves an operation to `phase` until `deadline`.
    mutating func set(_ serial: UInt64, phase: Phase, until deadline: Instant) {
        guard var e = entries[serial] else { return }
        e.phase = phase
        e.deadline = deadline
        entries[serial] = e
        heap.push(deadline, serial)
        if phase == .queued { outbox.append(serial) }
    }

    mutating func update(_ serial: UInt64, _ body: (inout Entry) -> Void) {
        guard var e = entries[serial] else { return }
        body(&e)
        entries[serial] = e
    }

    /// Removes and returns an operation.
    @discardableResult
    mutating func remove(_ serial: UInt64) -> Entry? {
        guard let e = entries.removeValue(forKey: serial) else { return nil }
        if let id = e.ackID, ackIndex[id] == serial { ackIndex[id] = nil }
        if case .caller(let token) = e.origin { tokenIndex[token] = nil }
        return e
    }

    /// The queued operations, in submission order; the outbox is empty afterwards.
    mutating func takeOutbox() -> [UInt64] {
        let serials = Set(outbox.filter { entries[$0]?.phase == .queued }).sorted()
        outbox.removeAll(keepingCapacity: true)
        return serials
    }

    /// The serials of the operations that were written and not yet acked, in submission order.
    var sentSerials: [UInt64] { entries.values.filter { $0.phase == .sent }.map(\.serial).sorted() }

    /// Every serial, in submission order.
    var allSerials: [UInt64] { entries.keys.sorted() }

    /// The earliest deadline of any operation.
    mutating func earliestDeadline() -> Instant? {
        while let top = heap.top {
            if let e = entries[top.serial], e.deadline == top.deadline || e.overallDeadline == top.deadline {
                return top.deadline
            }
            heap.pop()
        }
        return nil
    }

    /// Removes from the deadline index and returns the operations whose deadline is at or before `now`.
    mutating func takeDue(_ now: Instant) -> [UInt64] {
        var due: [UInt64] = []
        while let top = heap.top, top.deadline <= now {
            heap.pop()
            if let e = entries[top.serial], e.deadline == top.deadline || e.overallDeadline == top.deadline,
                !due.contains(top.serial)
            {
                due.append(top.serial)
            }
        }
        return due
    }
}

/// A binary min-heap of (deadline, serial), with lazy deletion by the ledger.
struct DeadlineHeap: Sendable {
    private var items: [(deadline: Instant, serial: UInt64)] = []

    var top: (deadline: Instant, serial: UInt64)? { items.first }

    mutating func push(_ deadline: Instant, _ serial: UInt64) {
        items.append((deadline, serial))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].deadline < items[parent].deadline else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l].deadline < items[m].deadline { m = l }
            if r < items.count && items[r].deadline < items[m].deadline { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
    }
}

/// The pending invocations, by invocation id.
struct InvocationLedger: Sendable {
    struct Entry: Equatable, Sendable {
        let token: UInt64
        let deadline: Instant
        let submittedAt: Instant
    }

    private(set) var entries: [String: Entry] = [:]
    private var nextID: UInt64 = 0

    /// A fresh id: "1", "2", … skipping ids in use.
    mutating func allocateID() -> String {
        repeat { nextID += 1 } while entries["\(nextID)"] != nil
        return "\(nextID)"
    }

    func isPending(_ id: String) -> Bool { entries[id] != nil }

    mutating func add(_ id: String, token: UInt64, deadline: Instant, now: Instant) {
        entries[id] = Entry(token: token, deadline: deadline, submittedAt: now)
    }

    mutating func remove(_ id: String) -> Entry? { entries.removeValue(forKey: id) }

    func id(forToken token: UInt64) -> String? { entries.first { $0.value.token == token }?.key }

    var earliestDeadline: Instant? { entries.values.map(\.deadline).min() }

    func due(_ now: Instant) -> [String] { entries.filter { $0.value.deadline <= now }.map(\.key).sorted() }

    var allIDs: [String] { entries.keys.sorted() }
}
