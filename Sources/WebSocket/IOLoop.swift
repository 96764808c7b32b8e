//===----------------------------------------------------------------------===//
// The module's own I/O loop: a fixed set of threads, each waiting in epoll for
// the sockets registered with it, shared by every connection of the process
// (the way NIO's event loops work). A readiness event runs the connection's
// handler on the loop's own thread: the thread enters the connection's serial
// queue with `sync`, so the queue still owns every mutable field, and a
// received ack reaches a blocked caller with one thread hand-off (loop thread
// → caller) instead of Dispatch's three (manager thread → worker → caller).
// Docs/Performance.md has the measurements; Docs/Threading.md the rule this
// brings: a connection's queue is never blocked for long.
//===----------------------------------------------------------------------===//

import Dispatch
import Foundation

/// What a registered descriptor is ready for.
struct IOReadiness: OptionSet, Sendable {
    let rawValue: UInt32
    static let readable = IOReadiness(rawValue: 1)
    static let writable = IOReadiness(rawValue: 2)
    /// Hang-up or error: reading (or, while connecting, writing) tells which.
    static let hangup = IOReadiness(rawValue: 4)
}

/// Which readiness a registration wants to hear about (hang-ups and errors always arrive while
/// registered, see ``IORegistration/detach()``).
struct IOInterest: Equatable, Sendable {
    var read: Bool
    var write: Bool
}

#if os(Linux)
import CEpoll

/// One epoll instance and the thread that waits on it.
final class IOLoop: Sendable {
    /// The loops of the process: one per core, at most 4, started on first use and never stopped.
    static let shared: [IOLoop] = {
        let count = max(1, min(ProcessInfo.processInfo.activeProcessorCount, 4))
        return (0..<count).map { IOLoop(index: $0) }
    }()

    private static let nextLoop = LockedValue<Int>(0)

    /// The loop for a new registration (round robin).
    static func next() -> IOLoop {
        let loops = shared
        let i = nextLoop.withLock { n -> Int in
            n &+= 1
            return n
        }
        return loops[i % loops.count]
    }

    private let epoll: Int32
    /// Registrations by tag; the tag travels in the epoll event, so an event for a descriptor that
    /// was deregistered (and whose number may be reused) finds nothing, or finds the new owner.
    private let registrations = LockedValue<(next: UInt64, byTag: [UInt64: IORegistration])>((1, [:]))

    private init(index: Int) {
        epoll = cepoll_create()
        precondition(epoll >= 0, "epoll_create1 failed: \(String(cString: strerror(errno)))")
        let thread = Thread { [self] in self.run() }
        thread.name = "WebSocket.IOLoop.\(index)"
        thread.start()
    }

    /// Registers `fd` (non-blocking) for `interest`; `handler` runs on `queue` for each event.
    func register(
        fd: Int32, interest: IOInterest, queue: DispatchQueue, handler: @escaping @Sendable (IOReadiness) -> Void
    ) -> IORegistration? {
        let registration = registrations.withLock { table -> IORegistration in
            let r = IORegistration(tag: table.next, fd: fd, loop: self, queue: queue, interest: interest, handler: handler)
            table.next += 1
            table.byTag[r.tag] = r
            return r
        }
        guard cepoll_ctl(epoll, 0, fd, Self.mask(interest), registration.tag) == 0 else {
            registrations.modify { $0.byTag[registration.tag] = nil }
            return nil
        }
        return registration
    }

    fileprivate func change(_ r: IORegistration, to interest: IOInterest, add: Bool) -> Bool {
        cepoll_ctl(epoll, add ? 0 : 1, r.fd, Self.mask(interest), r.tag) == 0
    }

    fileprivate func remove(_ r: IORegistration, forget: Bool) {
        _ = cepoll_ctl(epoll, 2, r.fd, 0, r.tag)
        if forget { registrations.modify { $0.byTag[r.tag] = nil } }
    }

    private static func mask(_ i: IOInterest) -> UInt32 {
        let read: UInt32 = i.read ? CEPOLL_IN | CEPOLL_RDHUP : 0
        let write: UInt32 = i.write ? CEPOLL_OUT : 0
        return read | write
    }

    private func run() {
        let max = 64
        var events = [UInt32](repeating: 0, count: max)
        var tags = [UInt64](repeating: 0, count: max)
        while true {
            let n = events.withUnsafeMutableBufferPointer { e in
                tags.withUnsafeMutableBufferPointer { t in
                    cepoll_wait(epoll, e.baseAddress, t.baseAddress, Int32(max), -1)
                }
            }
            if n < 0 { continue }  // EINTR (no other error is possible on a valid epoll descriptor)
            for i in 0..<Int(n) {
                guard let r = registrations.withLock({ $0.byTag[tags[i]] }) else { continue }
                var ready: IOReadiness = []
                let e = events[i]
                if e & CEPOLL_IN != 0 { ready.insert(.readable) }
                if e & CEPOLL_OUT != 0 { ready.insert(.writable) }
                let hangup: UInt32 = CEPOLL_ERR | CEPOLL_HUP | CEPOLL_RDHUP
                if e & hangup != 0 { ready.insert(.hangup) }
                // On the loop's thread: `sync` runs the handler here as soon as the queue is free.
                r.queue.sync { r.handler(ready) }
            }
        }
    }
}

/// A descriptor registered with an ``IOLoop``. Every method is called on the owner's queue.
final class IORegistration: @unchecked Sendable {  // `interest`/`attached` confined to the owner's queue
    let tag: UInt64
    let fd: Int32
    fileprivate let loop: IOLoop
    fileprivate let queue: DispatchQueue
    fileprivate let handler: @Sendable (IOReadiness) -> Void
    private(set) var interest: IOInterest
    private var attached = true

    fileprivate init(
        tag: UInt64, fd: Int32, loop: IOLoop, queue: DispatchQueue, interest: IOInterest,
        handler: @escaping @Sendable (IOReadiness) -> Void
    ) {
        self.tag = tag
        self.fd = fd
        self.loop = loop
        self.queue = queue
        self.interest = interest
        self.handler = handler
    }

    /// Changes what the loop reports (an `epoll_ctl` only when it changes); re-attaches after
    /// ``detach()``. False if the kernel refused (the descriptor is gone).
    @discardableResult
    func set(_ new: IOInterest) -> Bool {
        guard new != interest || !attached else { return true }
        interest = new
        let add = !attached
        attached = true
        return loop.change(self, to: new, add: add)
    }

    /// Stops every report, hang-ups included (epoll reports those whatever the interest, so a paused
    /// reader of a closed socket would otherwise spin); ``set(_:)`` attaches again.
    func detach() {
        guard attached else { return }
        attached = false
        loop.remove(self, forget: false)
    }

    /// Deregisters for good and closes the descriptor. An event already taken from epoll may still run
    /// the handler once: the owner checks that the registration is still its own.
    func cancel() {
        attached = false
        loop.remove(self, forget: true)
        WebSocketConnection.closeSocket(fd)
    }
}

#else

/// Where epoll is missing: Dispatch read and write sources per descriptor behind the same interface.
final class IOLoop: Sendable {
    static func next() -> IOLoop { IOLoop() }

    func register(
        fd: Int32, interest: IOInterest, queue: DispatchQueue, handler: @escaping @Sendable (IOReadiness) -> Void
    ) -> IORegistration? {
        IORegistration(fd: fd, interest: interest, queue: queue, handler: handler)
    }
}

final class IORegistration: @unchecked Sendable {  // everything confined to the owner's queue
    let fd: Int32
    private let read: any DispatchSourceRead
    private let write: any DispatchSourceWrite
    private(set) var interest: IOInterest
    private var readRunning = true
    private var writeRunning = true

    fileprivate init(fd: Int32, interest: IOInterest, queue: DispatchQueue, handler: @escaping @Sendable (IOReadiness) -> Void) {
        self.fd = fd
        self.interest = IOInterest(read: true, write: true)
        read = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        write = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        read.setEventHandler { handler(.readable) }
        write.setEventHandler { handler(.writable) }
        read.activate()
        write.activate()
        set(interest)
    }

    @discardableResult
    func set(_ new: IOInterest) -> Bool {
        if new.read != readRunning {
            readRunning = new.read
            new.read ? read.resume() : read.suspend()
        }
        if new.write != writeRunning {
            writeRunning = new.write
            new.write ? write.resume() : write.suspend()
        }
        interest = new
        return true
    }

    func detach() { set(IOInterest(read: false, write: false)) }

    /// Deregisters for good; the descriptor is closed once both sources have let go of it.
    func cancel() {
        let fd = self.fd
        let remaining = LockedValue(2)
        let release: @Sendable () -> Void = {
            if remaining.withLock({ n -> Int in
                n -= 1
                return n
            }) == 0 { WebSocketConnection.closeSocket(fd) }
        }
        read.setCancelHandler(handler: release)
        write.setCancelHandler(handler: release)
        read.cancel()
        write.cancel()
        set(IOInterest(read: true, write: true))  // a suspended source must be resumed to finish cancelling
    }
}
#endif
