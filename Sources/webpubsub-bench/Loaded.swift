//===----------------------------------------------------------------------===//
// Acked round trips while N of our clients in this process are busy
// receiving (`--busy-receivers`, issue 8: "acked p50 with 100 busy receivers
// in the same process ≤ 2× its unloaded p50"). Each repetition opens N
// `json.webpubsub.azure.v1` receivers that join one group and count in their
// callbacks, measures acked round trips with the receivers idle, then again
// while a raw publisher floods their group, and closes the receivers. The raw
// sender is measured alike, as a control: it shows what the load costs a round
// trip that does not go through our client (the emulator and the shared cores).
//===----------------------------------------------------------------------===//
import Dispatch
import Foundation
import Synchronization
import WebPubSub

/// N of our clients in one group, each counting the group messages it got.
final class BusyReceivers: Sendable {
    let clients: [WebPubSubClient]
    let counts: [AtomicCount]
    let group: String

    /// Opens `count` clients (completion form, in one burst) and joins each to `group`; throws unless every
    /// one opened and joined within 60 s.
    init(count: Int, group: String, make: (Int) throws -> WebPubSubClient) throws {
        self.group = group
        clients = try (0..<count).map(make)
        let counts = (0..<count).map { _ in AtomicCount() }
        self.counts = counts
        for (client, counter) in zip(clients, counts) {
            client.subscribe(.groupMessage) { _ in counter.value.add(1, ordering: .relaxed) }
        }
        do {
            try Self.all(clients, "open") { c, done in c.open { done($0.map { _ in () }) } }
            try Self.all(clients, "joinGroup") { c, done in c.joinGroup(group) { done($0.map { _ in () }) } }
        } catch {
            close()
            throw error
        }
    }

    /// Runs `start` on every client at once and waits (60 s at most) until every completion reported success.
    private static func all(_ clients: [WebPubSubClient], _ what: String,
                            _ start: (WebPubSubClient, @escaping @Sendable (Result<Void, WebPubSubError>) -> Void) -> Void) throws {
        let group = DispatchGroup()
        let ok = AtomicCount()
        for c in clients {
            group.enter()
            start(c) { r in
                if case .success = r { ok.value.add(1, ordering: .relaxed) }
                group.leave()
            }
        }
        let timedOut = group.wait(timeout: .now() + 60) == .timedOut
        let n = ok.value.load(ordering: .relaxed)
        guard !timedOut, n == clients.count else {
            throw RawClientError(description: "busy receivers: \(what) succeeded for \(n) of \(clients.count)\(timedOut ? " within 60 s" : "")")
        }
    }

    var total: Int { counts.reduce(0) { $0 + $1.value.load(ordering: .relaxed) } }
    var minimum: Int { counts.reduce(Int.max) { min($0, $1.value.load(ordering: .relaxed)) } }
    var connected: Int { clients.filter(\.isConnected).count }

    /// Closes every client and waits (30 s at most) for all of them.
    func close() {
        let closed = DispatchGroup()
        for c in clients {
            closed.enter()
            c.close { closed.leave() }
        }
        if closed.wait(timeout: .now() + 30) == .timedOut {
            FileHandle.standardError.write(Data("busy receivers: not all closed within 30 s\n".utf8))
        }
    }
}

/// A raw publisher flooding the receivers' group from a thread of its own until stopped, with at most
/// `window` messages in flight to the slowest receiver (published, not yet received), so that the emulator
/// buffers a bounded amount and never closes a receiver as slow.
final class Flood: Sendable {
    private let running = AtomicCount()
    let published = AtomicCount()
    private let finished = DispatchSemaphore(value: 0)

    init(publisher: RawClient, receivers: BusyReceivers, window: Int, payload: String) {
        // 1,024 frames encoded and masked once, sent in turn; the emulator only unmasks them.
        let frames = (0..<1024).map { _ in
            publisher.frame(#"{"type":"sendToGroup","group":"\#(receivers.group)","dataType":"text","data":"\#(payload)"}"#)
        }
        running.value.store(1, ordering: .relaxed)
        let (running, published, finished) = (running, published, finished)
        Thread {
            var sent = 0
            var slowest = 0
            while running.value.load(ordering: .relaxed) == 1 {
                if sent - slowest >= window {
                    slowest = receivers.minimum
                    if sent - slowest >= window {
                        usleep(50)
                        continue
                    }
                }
                publisher.writeAll(frames[sent & 1023])
                sent += 1
                published.value.store(sent, ordering: .relaxed)
            }
            finished.signal()
        }.start()
    }

    /// Stops publishing and waits for the thread (which then no longer uses the publisher).
    func stop() {
        running.value.store(0, ordering: .relaxed)
        finished.wait()
    }
}

extension Comparison {
    /// One repetition: (raw, ours) unloaded, then (raw, ours) with `busyReceivers` receivers flooded. Order:
    /// raw unloaded, ours unloaded, flood on, ours loaded, raw loaded, flood off; each side's loaded run is
    /// nested right around its unloaded one. Each acked run does `acked` round trips, or fewer if 30 s pass.
    func loadedRepetition(_ rep: Int, rawSender: RawClient, rawPublisher: RawClient, sender: WebPubSubClient,
                          nextAckID: inout UInt64) throws -> (unloaded: (Sample, Sample), loaded: (Sample, Sample)) {
        let payload = side.payload
        let receivers = try BusyReceivers(count: busyReceivers, group: "busy-\(rep)") { i in
            try ourClient("busy-\(i)", .json)
        }
        defer { receivers.close() }
        usleep(500_000)  // let the open burst's threads and the emulator settle before the unloaded runs
        let slowBefore = (try? emulator.stats()["slowClients"] as? Int) ?? 0

        let ackMarker = Array(#""ackId""#.utf8)
        func rawFrames() -> [[UInt8]] {
            defer { nextAckID += UInt64(acked) }
            return (0..<acked).map { [nextAckID] i in
                rawSender.frame(#"{"type":"sendToGroup","group":"busy-ack","ackId":\#(nextAckID + UInt64(i)),"dataType":"text","data":"\#(payload)","noEcho":true}"#)
            }
        }
        func raw(_ frames: [[UInt8]]) throws -> Sample {
            try ackedRun(receivers) { rawSender.writeAll(frames[$0]); while !(try rawSender.readTextFrame().contains(marker: ackMarker)) {} }
        }
        func ours() throws -> Sample {
            try ackedRun(receivers) { _ in try sender.sendToGroup("busy-ack", .text(payload), noEcho: true) }
        }

        var frames = rawFrames()
        let rawUnloaded = try raw(frames)
        let oursUnloaded = try ours()

        frames = rawFrames()
        let flood = Flood(publisher: rawPublisher, receivers: receivers, window: window, payload: payload)
        // Every receiver busy before the clock starts: each has had a window's worth.
        let warm = DispatchTime.now().uptimeNanoseconds + 10_000_000_000
        while receivers.minimum < window, DispatchTime.now().uptimeNanoseconds < warm { usleep(1_000) }
        let oursLoaded: Sample, rawLoaded: Sample
        do {
            defer { flood.stop() }
            oursLoaded = try ours()
            rawLoaded = try raw(frames)
        }
        // Drain what is in flight (at most a window per receiver), so the next phase starts unloaded.
        let target = flood.published.value.load(ordering: .relaxed)
        let drain = DispatchTime.now().uptimeNanoseconds + 30_000_000_000
        while receivers.minimum < target, DispatchTime.now().uptimeNanoseconds < drain { usleep(1_000) }
        let slow = ((try? emulator.stats()["slowClients"] as? Int) ?? 0) - slowBefore
        let (got, connected) = (receivers.minimum, receivers.connected)
        if got < target || connected < busyReceivers || slow > 0 {
            FileHandle.standardError.write(Data(("busy receivers: the slowest got \(got) of \(target); \(connected) of "
                + "\(busyReceivers) connected; \(slow) closed as slow\n").utf8))
        }
        return ((rawUnloaded, oursUnloaded), (rawLoaded, oursLoaded))
    }

    /// `acked` blocking round trips (30 s at most): rate, p50, p99, and the busy receivers' messages per second.
    private func ackedRun(_ receivers: BusyReceivers, _ call: (Int) throws -> Void) throws -> Sample {
        var latencies = [Double](repeating: 0, count: acked)
        let receivedBefore = receivers.total
        let start = DispatchTime.now().uptimeNanoseconds
        let deadline = start + 30_000_000_000
        var n = 0
        while n < acked, DispatchTime.now().uptimeNanoseconds < deadline {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try call(n)
            latencies[n] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            n += 1
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var s = Sample()
        latencies = latencies[..<n].sorted()
        s.rate = Double(n) / seconds
        s.p50 = latencies[n / 2]
        s.p99 = latencies[min(n - 1, n * 99 / 100)]
        s.received = Double(receivers.total - receivedBefore) / seconds
        s.threads = Double(procStatus("Threads"))
        if n < acked {
            FileHandle.standardError.write(Data("busy receivers: \(n) of \(acked) round trips within 30 s\n".utf8))
        }
        return s
    }
}

/// Prints the loaded phase: min / median / max per side, and loaded / unloaded of the medians.
func printLoaded(_ rows: [(String, [Sample], [Sample])], receivers: Int, repetitions: Int) {
    guard let unloaded = rows.first(where: { $0.0 == "unloaded" }), let loaded = rows.first(where: { $0.0 == "loaded" })
    else { return }
    func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
    func f(_ v: Double) -> String {
        v >= 100 || v == v.rounded() ? String(format: "%.0f", v) : v >= 1 ? String(format: "%.2f", v) : String(format: "%.3f", v)
    }
    func cell(_ v: [Double]) -> String {
        let s = v.sorted()
        return "\(f(s.first ?? 0)) / \(f(s[s.count / 2])) / \(f(s.last ?? 0))"
    }
    func ratio(_ a: [Double], _ b: [Double]) -> String {
        median(b) > 0 ? String(format: "%.2f×", median(a) / median(b)) : "-"
    }
    print("")
    print("acked round trips (1 thread, noEcho) with \(receivers) busy receivers of ours in this process "
        + "(json.webpubsub.azure.v1, one group flooded by a raw publisher), \(repetitions) repetitions "
        + "(min / median / max; loaded / unloaded of the medians)")
    print("| measure | raw sender | our sender |")
    print("|---|---:|---:|")
    let sides: [(Int) -> [Sample]] = [{ $0 == 0 ? unloaded.1 : loaded.1 }, { $0 == 0 ? unloaded.2 : loaded.2 }]
    func row(_ title: String, _ which: Int, _ get: (Sample) -> Double) {
        print("| \(title) | \(cell(sides[0](which).map(get))) | \(cell(sides[1](which).map(get))) |")
    }
    func ratioRow(_ title: String, _ get: (Sample) -> Double) {
        print("| \(title) | \(ratio(loaded.1.map(get), unloaded.1.map(get))) | \(ratio(loaded.2.map(get), unloaded.2.map(get))) |")
    }
    row("p50 ms, unloaded", 0, { $0.p50 })
    row("p50 ms, \(receivers) busy receivers", 1, { $0.p50 })
    ratioRow("p50 loaded / unloaded", { $0.p50 })
    row("p99 ms, unloaded", 0, { $0.p99 })
    row("p99 ms, \(receivers) busy receivers", 1, { $0.p99 })
    ratioRow("p99 loaded / unloaded", { $0.p99 })
    row("round trips/s, unloaded", 0, { $0.rate })
    row("round trips/s, \(receivers) busy receivers", 1, { $0.rate })
    row("messages the receivers got/s meanwhile (all \(receivers))", 1, { $0.received })
    row("messages the receivers got/s while unloaded", 0, { $0.received })
    row("threads in this process at the end, unloaded", 0, { $0.threads })
    row("threads in this process at the end, loaded", 1, { $0.threads })
}
