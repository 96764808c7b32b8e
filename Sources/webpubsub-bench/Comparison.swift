//===----------------------------------------------------------------------===//
// Ours against the raw baseline (RawClient.swift), interleaved: every
// repetition runs each phase raw, then ours, against the same emulator
// process, so that the noise of this shared machine hits both alike. Per phase
// it reports the rate and, per message, the process's CPU time and context
// switches (getrusage) and heap allocations (CAllocCounter).
//===----------------------------------------------------------------------===//
#if canImport(Glibc)
import Glibc
#endif
import CAllocCounter
import Dispatch
import EmulatorLauncher
import Foundation
import Synchronization
import WebPubSub

/// The process's resource counters at one moment.
struct Usage {
    var nanoseconds: UInt64
    var cpuMicroseconds: Double
    var contextSwitches: Double
    var allocations: Double

    static func now(_ who: Int32 = RUSAGE_SELF.rawValue) -> Usage {
        var u = rusage()
        getrusage(who, &u)
        let cpu = Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec)
        return Usage(nanoseconds: DispatchTime.now().uptimeNanoseconds, cpuMicroseconds: cpu,
                     contextSwitches: Double(u.ru_nvcsw + u.ru_nivcsw), allocations: Double(alloc_counter_total()))
    }

    static func - (a: Usage, b: Usage) -> Usage {
        Usage(nanoseconds: a.nanoseconds - b.nanoseconds, cpuMicroseconds: a.cpuMicroseconds - b.cpuMicroseconds,
              contextSwitches: a.contextSwitches - b.contextSwitches, allocations: a.allocations - b.allocations)
    }
}

/// Figures of one phase run once.
struct Sample {
    var rate = 0.0
    var p50 = 0.0
    var p99 = 0.0
    var arrived = 0.0
    var cpu = 0.0
    var switches = 0.0
    var allocations = 0.0
    /// The loaded phase: messages the busy receivers got per second during the run.
    var received = 0.0
    /// The loaded phase: threads of this process at the end of the run (/proc/self/status).
    var threads = 0.0

    init() {}

    init(count: Int, _ u: Usage) {
        rate = Double(count) / (Double(u.nanoseconds) / 1e9)
        cpu = u.cpuMicroseconds / Double(count)
        switches = u.contextSwitches / Double(count)
        allocations = u.allocations / Double(count)
    }
}

final class AtomicCount: Sendable {
    let value = Atomic<Int>(0)
}

struct Comparison {
    let emulator: EmulatorProcess
    let side: SwiftSide
    let repetitions: Int
    let acked: Int
    let fire: Int
    let receive: Int
    let window: Int
    /// Our receivers kept busy in the loaded phase (Loaded.swift); 0 skips it.
    let busyReceivers: Int

    private static let hub = "bench_raw"

    private func url(_ user: String) throws -> URL {
        try WebPubSubClientCredential(connectionString: emulator.connectionString, hub: Self.hub, userID: user,
                                      roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]).clientAccessURL()
    }

    func ourClient(_ user: String, _ proto: WebPubSubProtocol) throws -> WebPubSubClient {
        var options = WebPubSubClientOptions()
        options.protocolType = proto
        options.logger.logLevel = side.logLevel
        let credential = try WebPubSubClientCredential(
            connectionString: emulator.connectionString, hub: Self.hub, userID: user,
            roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        return WebPubSubClient(credential: credential, options: options)
    }

    /// Runs every phase `repetitions` times, raw then ours; returns per phase the raw and our samples.
    func run() throws -> [(String, [Sample], [Sample])] {
        let payload = side.payload
        let reliable = WebPubSubProtocol.jsonReliable.subprotocol
        let plain = WebPubSubProtocol.json.subprotocol
        let rawSender = try RawClient(url: url("raw-sender"), subprotocol: reliable)
        let rawPublisher = try RawClient(url: url("raw-publisher"), subprotocol: plain)
        let rawReceiver = try RawClient(url: url("raw-receiver"), subprotocol: plain)
        rawReceiver.writeAll(rawReceiver.frame(#"{"type":"joinGroup","group":"recv-raw","ackId":1}"#))
        while !(try rawReceiver.readTextFrame().contains(marker: Array(#""ackId""#.utf8))) {}

        let sender = try ourClient("our-sender", .jsonReliable)
        try sender.open()
        defer { sender.close() }
        let receiver = try ourClient("our-receiver", .json)
        let received = AtomicCount()
        let done = DispatchSemaphore(value: 0)
        let target = AtomicCount()
        receiver.subscribe(.groupMessage) { _ in
            if received.value.add(1, ordering: .relaxed).newValue == target.value.load(ordering: .relaxed) { done.signal() }
        }
        try receiver.open()
        defer { receiver.close() }
        try receiver.joinGroup("recv-ours")

        var results: [String: ([Sample], [Sample])] = [:]
        let phases = ["acked", "fire", "receive"] + (busyReceivers > 0 ? ["unloaded", "loaded"] : [])
        var nextAckID: UInt64 = 1
        for rep in 1...repetitions {
            FileHandle.standardError.write(Data("raw vs ours: repetition \(rep) of \(repetitions)\n".utf8))
            // Acked round trips.
            let frames = (0..<acked).map { i in
                rawSender.frame(#"{"type":"sendToGroup","group":"bench-ack","ackId":\#(nextAckID + UInt64(i)),"dataType":"text","data":"\#(payload)","noEcho":true}"#)
            }
            nextAckID += UInt64(acked)
            let ackMarker = Array(#""ackId""#.utf8)
            var raw = try timedAcked { rawSender.writeAll(frames[$0]); while !(try rawSender.readTextFrame().contains(marker: ackMarker)) {} }
            var ours = try timedAcked { _ in try sender.sendToGroup("bench-ack", .text(payload), noEcho: true) }
            results["acked", default: ([], [])].0.append(raw)
            results["acked", default: ([], [])].1.append(ours)

            // Fire-and-forget calls, and their arrival at the emulator.
            let fireFrames = (0..<fire).map { _ in
                rawSender.frame(#"{"type":"sendToGroup","group":"bench-fire","dataType":"text","data":"\#(payload)","noEcho":true}"#)
            }
            raw = try timedFire(barrier: {}) { for f in fireFrames { rawSender.writeAll(f) } }
            ours = try timedFire(barrier: { _ = sender.isConnected }) {
                for _ in 0..<fire { try sender.sendToGroup("bench-fire", .text(payload), noEcho: true, fireAndForget: true) }
            }
            results["fire", default: ([], [])].0.append(raw)
            results["fire", default: ([], [])].1.append(ours)

            // Receive alone: the raw publisher floods (at most `window` in flight), one receiver counts.
            let message = Array(#""message""#.utf8)
            let rawCount = AtomicCount()
            raw = try timedReceive(publisher: rawPublisher, group: "recv-raw", received: rawCount) {
                for _ in 0..<receive {
                    if try rawReceiver.readTextFrame().contains(marker: message) { rawCount.value.add(1, ordering: .relaxed) }
                }
            }
            target.value.store(received.value.load(ordering: .relaxed) + receive, ordering: .relaxed)
            ours = try timedReceive(publisher: rawPublisher, group: "recv-ours", received: received) {
                guard done.wait(timeout: .now() + 120) == .success else { throw RawClientError(description: "our receiver timed out") }
            }
            results["receive", default: ([], [])].0.append(raw)
            results["receive", default: ([], [])].1.append(ours)

            // Acked round trips with our receivers idle, then busy (Loaded.swift).
            if busyReceivers > 0 {
                let (unloaded, loaded) = try loadedRepetition(rep, rawSender: rawSender, rawPublisher: rawPublisher,
                                                              sender: sender, nextAckID: &nextAckID)
                results["unloaded", default: ([], [])].0.append(unloaded.0)
                results["unloaded", default: ([], [])].1.append(unloaded.1)
                results["loaded", default: ([], [])].0.append(loaded.0)
                results["loaded", default: ([], [])].1.append(loaded.1)
            }
        }
        return phases.map { ($0, results[$0]!.0, results[$0]!.1) }
    }

    private func timedAcked(_ call: (Int) throws -> Void) throws -> Sample {
        var latencies = [Double](repeating: 0, count: acked)
        let before = Usage.now()
        for i in 0..<acked {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try call(i)
            latencies[i] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        }
        var s = Sample(count: acked, Usage.now() - before)
        latencies.sort()
        s.p50 = latencies[acked / 2]
        s.p99 = latencies[min(acked - 1, acked * 99 / 100)]
        return s
    }

    private func messagesIn() throws -> Int { (try emulator.stats()["messagesIn"] as? Int) ?? 0 }

    /// The call rate is timed over the calls; CPU, context switches and allocations until `barrier`
    /// returned (ours: a call through the client's queue, behind every write the calls queued).
    private func timedFire(barrier: () -> Void, _ body: () throws -> Void) throws -> Sample {
        let inBefore = try messagesIn()
        let before = Usage.now()
        try body()
        let called = Usage.now()
        barrier()
        var s = Sample(count: fire, Usage.now() - before)
        s.rate = Double(fire) / (Double(called.nanoseconds - before.nanoseconds) / 1e9)
        let deadline = Date().addingTimeInterval(60)
        while try messagesIn() - inBefore < fire, Date() < deadline { usleep(1_000) }
        s.arrived = Double(fire) / (Double(DispatchTime.now().uptimeNanoseconds - before.nanoseconds) / 1e9)
        return s
    }

    /// The publisher runs on a thread of its own; its own CPU time and context switches are subtracted, so
    /// the figures per message are the receiving side's.
    private func timedReceive(publisher: RawClient, group: String, received: AtomicCount, _ wait: () throws -> Void) throws -> Sample {
        let frames = (0..<receive).map { _ in
            publisher.frame(#"{"type":"sendToGroup","group":"\#(group)","dataType":"text","data":"\#(side.payload)"}"#)
        }
        let base = received.value.load(ordering: .relaxed)
        let window = self.window
        let publisherUsage = LockedUsage()
        let before = Usage.now()
        let thread = Thread {
            let mine = Usage.now(rusageThread)
            for (i, f) in frames.enumerated() {
                while i - (received.value.load(ordering: .relaxed) - base) >= window { usleep(50) }
                publisher.writeAll(f)
            }
            publisherUsage.set(Usage.now(rusageThread) - mine)
        }
        thread.start()
        try wait()
        var u = Usage.now() - before
        while publisherUsage.get() == nil { usleep(100) }
        let p = publisherUsage.get()!
        u.cpuMicroseconds -= p.cpuMicroseconds
        u.contextSwitches -= p.contextSwitches
        // Allocations are not subtracted: the counter is process-wide, and the publisher's loop allocates nothing.
        return Sample(count: receive, u)
    }
}

/// RUSAGE_THREAD (Linux; Glibc does not export it without _GNU_SOURCE).
let rusageThread: Int32 = 1

final class LockedUsage: @unchecked Sendable {  // `value` is guarded by `lock`
    private let lock = NSLock()
    private var value: Usage?
    func set(_ u: Usage) { lock.withLock { value = u } }
    func get() -> Usage? { lock.withLock { value } }
}

/// Prints min/median/max of raw and ours, and ours/raw of the medians.
func printComparison(_ rows: [(String, [Sample], [Sample])], repetitions: Int) {
    func stats(_ v: [Double]) -> (Double, Double, Double) {
        let s = v.sorted()
        return (s.first ?? 0, s[s.count / 2], s.last ?? 0)
    }
    func f(_ v: Double) -> String {
        v >= 100 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v)
    }
    print("")
    print("raw baseline vs ours, interleaved, \(repetitions) repetitions (min / median / max; ours/raw of the medians)")
    print("| phase | measure | raw | ours | ours/raw |")
    print("|---|---|---:|---:|---:|")
    let measures: [(String, String, (Sample) -> Double)] = [
        ("acked", "round trips/s", { $0.rate }), ("acked", "p50 ms", { $0.p50 }), ("acked", "p99 ms", { $0.p99 }),
        ("acked", "CPU µs/msg", { $0.cpu }), ("acked", "context switches/msg", { $0.switches }),
        ("acked", "allocations/msg", { $0.allocations }),
        ("fire", "calls/s", { $0.rate }), ("fire", "arrived at emulator/s", { $0.arrived }),
        ("fire", "CPU µs/msg", { $0.cpu }), ("fire", "context switches/msg", { $0.switches }),
        ("fire", "allocations/msg", { $0.allocations }),
        ("receive", "received/s (json)", { $0.rate }), ("receive", "CPU µs/msg", { $0.cpu }),
        ("receive", "context switches/msg", { $0.switches }), ("receive", "allocations/msg", { $0.allocations }),
    ]
    for (phase, name, get) in measures {
        guard let row = rows.first(where: { $0.0 == phase }) else { continue }
        let r = stats(row.1.map(get)), o = stats(row.2.map(get))
        let ratio = r.1 > 0 ? String(format: "%.2f×", o.1 / r.1) : "-"
        print("| \(phase) | \(name) | \(f(r.0)) / \(f(r.1)) / \(f(r.2)) | \(f(o.0)) / \(f(o.1)) / \(f(o.2)) | \(ratio) |")
    }
}
