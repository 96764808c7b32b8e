import Dispatch
import Foundation
import Logging
import EmulatorLauncher
import WebPubSub

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One run of the demo: the emulator process, three clients, the transcript and the tally.
final class DemoSession: @unchecked Sendable {  // mutable state guarded by `lock`
    static let hub = "demo"
    static let group = "chat"
    static let senders = ["alice", "bob"]
    static let everyone = ["alice", "bob", "carol"]

    private let emulator: EmulatorProcess
    private let messagesPerSender: Int
    private let interval: DispatchTimeInterval
    private let verbose: Bool
    /// Chaos mode: publish for this long while faults hit random clients.
    private let chaos: TimeInterval?
    /// sender → the numbers the service acked (nothing acknowledged may be lost).
    private var acked: [String: [Int]] = [:]
    /// sender → sends that failed after all retries (they may or may not have arrived).
    private var failed: [String: Int] = [:]
    private let transcript = Transcript()
    private let lock = NSLock()
    private var clients: [String: WebPubSubClient] = [:]
    /// receiver → sender → the message numbers received, in arrival order.
    private var received: [String: [String: [Int]]] = [:]
    private let stoppedGroup = DispatchGroup()

    init(emulatorPath: String, messagesPerSender: Int, interval: DispatchTimeInterval, verbose: Bool,
         chaos: TimeInterval? = nil) throws {
        self.messagesPerSender = messagesPerSender
        self.chaos = chaos
        self.interval = interval
        self.verbose = verbose
        transcript.say("starting the emulator: \(emulatorPath) --port 0")
        emulator = try EmulatorProcess(path: emulatorPath)
        emulator.stopOnInterrupt()
        transcript.say("emulator ready at \(emulator.endpoint)")
    }

    /// Runs the scenario; true when every receiver got every message exactly once and in order.
    func run() throws -> Bool {
        for name in Self.everyone { try connect(name) }
        for name in Self.everyone {
            let result = try client(name).joinGroup(Self.group)
            transcript.say("\(pad(name)) joined group '\(Self.group)' (ack id \(result.ackID.map(String.init) ?? "-"))")
        }

        let ids = Dictionary(uniqueKeysWithValues: Self.everyone.map { ($0, client($0).connectionID ?? "?") })
        let carolID = ids["carol"]!
        let dropAt = chaos == nil ? max(1, messagesPerSender / 3) : nil
        let chaosEnd = chaos.map { Date().addingTimeInterval($0) }
        // Blocking senders get threads of their own (not Dispatch workers, which they would starve).
        let senders = DispatchGroup()
        for (index, name) in Self.senders.enumerated() {
            senders.enter()
            Thread {
                self.publish(from: name, index: index, until: chaosEnd, dropAt: index == 0 ? dropAt : nil, victimID: carolID)
                senders.leave()
            }.start()
        }
        let rssBefore = residentMemoryKiB()
        if let chaosEnd {
            transcript.say("chaos: for \(Int(chaos!)) s, random clients (senders and receivers) get abrupt TCP resets, "
                + "service closes with 1011 and delivery pauses, while alice and bob keep publishing")
            injectFaults(until: chaosEnd)
        }
        senders.wait()

        let deadline = Date().addingTimeInterval(30)
        while !allDelivered() && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let replaced = Self.everyone.filter { client($0).connectionID != ids[$0] }
        let recoveries = (try? emulator.stats()["recoveries"] as? Int) ?? nil
        if chaos == nil {
            let carolNow = client("carol").connectionID ?? "?"
            transcript.say("carol's connection before the drop \(carolID), after it \(carolNow): "
                + (carolNow == carolID ? "the same connection, recovered" : "a new connection")
                + (recoveries.map { " (the emulator counted \($0) recovery)" } ?? ""))
        } else {
            transcript.say("chaos over: \(faults) faults injected; the emulator counted \(recoveries.map(String.init) ?? "?") recoveries; "
                + (replaced.isEmpty ? "every client kept its connection (all recovered)" : "new connections for \(replaced.joined(separator: ", "))"))
            transcript.say("resident memory of this process (three clients): \(rssBefore / 1024) MiB before the run, \(residentMemoryKiB() / 1024) MiB after")
        }
        let ok = summarize() && replaced.isEmpty
        closeAll()
        return ok
    }

    private var faults = 0

    /// Chaos: every 0.2–0.8 s, one fault on a random client, until `end`.
    private func injectFaults(until end: Date) {
        var generator = SystemRandomNumberGenerator()
        while Date() < end {
            Thread.sleep(forTimeInterval: Double.random(in: 0.2...0.8, using: &generator))
            let victim = Self.everyone.randomElement(using: &generator)!
            guard let id = client(victim).connectionID else { continue }
            let kind = Int.random(in: 0..<10, using: &generator)
            do {
                switch kind {
                case 0..<6:
                    try emulator.hook("connections/\(id)/drop")
                    transcript.say("⚡ chaos: TCP reset of \(victim)'s connection")
                case 6..<8:
                    try emulator.hook("connections/\(id)/close?code=1011&reason=chaos")
                    transcript.say("⚡ chaos: the service closes \(victim)'s connection with 1011")
                default:
                    try emulator.hook("connections/\(id)/pause")
                    Thread.sleep(forTimeInterval: 0.3)
                    try emulator.hook("connections/\(id)/resume")
                    transcript.say("⚡ chaos: \(victim)'s connection paused for 0.3 s")
                }
                lock.withLock { faults += 1 }
            } catch {
                // The connection may be between sockets right now; that is part of the game.
                transcript.say("chaos: \(victim) not hit (\(error))")
            }
        }
    }

    /// Stops every client and the emulator (idempotent).
    func shutdown() {
        closeAll()
        emulator.stop()
    }

    // MARK: Clients

    private func connect(_ name: String) throws {
        var options = WebPubSubClientOptions()
        // The client logs through swift-log; carol's log (info and up) goes into the transcript, so
        // her recovery shows; the others log warnings only.
        let transcript = self.transcript
        var logger = Logger(label: "demo.\(name)") { _ in TranscriptLogHandler(name: name, transcript: transcript) }
        logger.logLevel = name == "carol" ? .info : .warning
        options.logger = logger
        let emulator = self.emulator
        let client = WebPubSubClient(credential: { try emulator.clientAccessURL(hub: Self.hub, user: name) },
                                     options: options)
        client.subscribe(.connected) { [transcript] e in
            transcript.say("\(pad(name)) connected: connection \(e.connectionID), user \(e.userID ?? "-")")
        }
        client.subscribe(.disconnected) { [transcript] e in
            transcript.say("\(pad(name)) disconnected\(e.message.map { ": \($0)" } ?? "")")
        }
        client.subscribe(.groupMessage) { [weak self] e in self?.record(e, at: name) }
        client.subscribe(.stopped) { [transcript, stoppedGroup] _ in
            transcript.say("\(pad(name)) stopped")
            stoppedGroup.leave()
        }
        lock.withLock {
            clients[name] = client
            received[name] = [:]
        }
        stoppedGroup.enter()
        try client.open()
    }

    private func client(_ name: String) -> WebPubSubClient { lock.withLock { clients[name]! } }

    private func closeAll() {
        let all = lock.withLock { () -> [WebPubSubClient] in
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        guard !all.isEmpty else { return }
        for c in all { c.close() }
        _ = stoppedGroup.wait(timeout: .now() + 10)
    }

    // MARK: Publishing

    private func publish(from name: String, index: Int, until end: Date?, dropAt: Int?, victimID: String) {
        let client = self.client(name)
        var n = 0
        while true {
            n += 1
            if let end { if Date() >= end { break } } else if n > messagesPerSender { break }
            let content = DemoMessage(sender: name, senderIndex: index, number: n).content
            do {
                let result = try client.sendToGroup(Self.group, content, noEcho: true)
                lock.withLock { acked[name, default: []].append(n) }
                if verbose || n <= 2 || (end == nil && n == messagesPerSender) {
                    transcript.say("\(pad(name)) → \(Self.group)  #\(n) \(content.dataType.rawValue)  acked (ack id \(result.ackID.map(String.init) ?? "-"))")
                }
            } catch {
                lock.withLock { failed[name, default: 0] += 1 }
                transcript.say("\(pad(name)) → \(Self.group)  #\(n) FAILED: \(error)")
            }
            if n == dropAt {
                transcript.say("⚡ dropping carol's connection \(victimID) abruptly (TCP reset, no close frame) while the stream goes on")
                do {
                    try emulator.hook("connections/\(victimID)/drop")
                } catch {
                    transcript.say("⚠ the drop hook failed: \(error)")
                }
            }
            Thread.sleep(forTimeInterval: interval.seconds)
        }
        transcript.say("\(pad(name)) finished sending: \(n - 1) messages")
    }

    // MARK: Receiving and the tally

    private func record(_ event: GroupMessageEvent, at receiver: String) {
        guard let message = DemoMessage(event.content) else {
            transcript.say("\(pad(receiver)) ← unexpected content \(event.content)")
            return
        }
        let count = lock.withLock { () -> Int in
            received[receiver, default: [:]][message.sender, default: []].append(message.number)
            return received[receiver]![message.sender]!.count
        }
        if verbose || message.number <= 2 || receiver == "carol" && count % 8 == 0 {
            transcript.say("\(pad(receiver)) ← \(message.sender) #\(message.number) \(message.describe) seq \(event.sequenceID.map(String.init) ?? "-")")
        }
    }

    private func expectedSenders(for receiver: String) -> [String] { Self.senders.filter { $0 != receiver } }

    private func allDelivered() -> Bool {
        lock.withLock {
            Self.everyone.allSatisfy { r in
                expectedSenders(for: r).allSatisfy { s in Set(received[r]?[s] ?? []).isSuperset(of: acked[s] ?? []) }
            }
        }
    }

    private func summarize() -> Bool {
        let (snapshot, ackedSnapshot, failedSnapshot) = lock.withLock { (received, acked, failed) }
        var ok = true
        var totalSent = 0, totalReceived = 0, totalLost = 0, totalDuplicated = 0, totalReordered = 0
        transcript.raw("")
        transcript.raw(chaos == nil
            ? "Summary (\(Self.senders.count) senders × \(messagesPerSender) messages, noEcho; carol dropped mid-stream)"
            : "Summary (chaos for \(Int(chaos!)) s; expected = the messages the service acked to their sender)")
        transcript.raw("receiver  expected  received  lost  duplicated  out-of-order")
        for r in Self.everyone {
            var expected = 0, got = 0, lost = 0, dup = 0, reordered = 0
            for s in expectedSenders(for: r) {
                let numbers = snapshot[r]?[s] ?? []
                let sentByS = ackedSnapshot[s] ?? []
                expected += sentByS.count
                got += numbers.count
                let unique = Set(numbers)
                dup += numbers.count - unique.count
                lost += sentByS.filter { !unique.contains($0) }.count
                reordered += zip(numbers, numbers.dropFirst()).filter { $0 >= $1 }.count
            }
            totalSent += expected
            totalReceived += got
            totalLost += lost
            totalDuplicated += dup
            totalReordered += reordered
            if lost + dup + reordered > 0 { ok = false }
            transcript.raw("\(pad(r, 8))  \(String(expected).leftPad(8))  \(String(got).leftPad(8))  \(String(lost).leftPad(4))  \(String(dup).leftPad(10))  \(String(reordered).leftPad(12))")
        }
        transcript.raw("total     sent \(totalSent), received \(totalReceived), lost \(totalLost), duplicated \(totalDuplicated), out of order \(totalReordered)")
        let failures = failedSnapshot.values.reduce(0, +)
        if failures > 0 { transcript.raw("sends that failed after every retry (not acked, so not expected): \(failures)") }
        transcript.raw(ok ? "RESULT: every message delivered exactly once and in order" : "RESULT: FAILED")
        transcript.raw("")
        return ok
    }
}

/// `VmRSS` of this process in KiB (0 where /proc is missing).
func residentMemoryKiB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
    return 0
}

/// A demo message: who sent it and its number, as text, json or binary content.
struct DemoMessage {
    var sender: String
    var senderIndex: Int
    var number: Int

    init(sender: String, senderIndex: Int, number: Int) {
        self.sender = sender
        self.senderIndex = senderIndex
        self.number = number
    }

    /// The content for this message: text, json and binary in turn.
    var content: MessageContent {
        switch number % 3 {
        case 1: return .text("\(sender) #\(number): hello over text")
        case 2: return .json(#"{"from":"\#(sender)","n":\#(number),"kind":"json"}"#)
        default:
            var bytes = [UInt8(senderIndex)]
            withUnsafeBytes(of: UInt32(number).bigEndian) { bytes.append(contentsOf: $0) }
            return .binary(Data(bytes))
        }
    }

    /// Parses received content back.
    init?(_ content: MessageContent) {
        switch content {
        case .text(let text):
            let parts = text.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[1].hasPrefix("#"), let n = Int(parts[1].dropFirst().dropLast()) else { return nil }
            self.init(sender: String(parts[0]), senderIndex: DemoSession.senders.firstIndex(of: String(parts[0])) ?? -1, number: n)
        case .json(let text):
            struct Payload: Decodable { var from: String; var n: Int }
            guard let p = try? JSONDecoder().decode(Payload.self, from: Data(text.utf8)) else { return nil }
            self.init(sender: p.from, senderIndex: DemoSession.senders.firstIndex(of: p.from) ?? -1, number: p.n)
        case .binary(let data), .protobuf(let data):
            let bytes = [UInt8](data)
            guard bytes.count == 5, Int(bytes[0]) < DemoSession.senders.count else { return nil }
            let n = bytes[1...4].reduce(0) { $0 << 8 | Int($1) }
            self.init(sender: DemoSession.senders[Int(bytes[0])], senderIndex: Int(bytes[0]), number: n)
        }
    }

    var describe: String {
        switch number % 3 {
        case 1: return "text"
        case 2: return "json"
        default: return "binary"
        }
    }
}

/// A swift-log handler that writes into the transcript.
struct TranscriptLogHandler: LogHandler {
    let name: String
    let transcript: Transcript
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let details = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: " ")
        transcript.say("\(pad(name)) [log \(event.level)] \(event.message)\(details)")
    }
}

/// Timestamped lines, printed in order from any thread.
final class Transcript: @unchecked Sendable {  // `lock` serialises printing
    private let start = Date()
    private let lock = NSLock()

    /// Writes `line` as it is, without a timestamp.
    func raw(_ line: String) {
        lock.withLock { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    }

    func say(_ line: String) {
        lock.withLock {
            let t = Date().timeIntervalSince(start)
            let text = String(format: "[%7.3fs] ", t) + line + "\n"
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}

func pad(_ s: String, _ width: Int = 5) -> String { s.padding(toLength: max(width, s.count), withPad: " ", startingAt: 0) }

extension String {
    func leftPad(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

extension DispatchTimeInterval {
    var seconds: TimeInterval {
        switch self {
        case .seconds(let s): return TimeInterval(s)
        case .milliseconds(let ms): return TimeInterval(ms) / 1000
        case .microseconds(let us): return TimeInterval(us) / 1_000_000
        case .nanoseconds(let ns): return TimeInterval(ns) / 1_000_000_000
        default: return 0
        }
    }
}
