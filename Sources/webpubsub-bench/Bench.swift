//===----------------------------------------------------------------------===//
// webpubsub-bench: `make bench`. Our client and the official Python SDK
// (azure-messaging-webpubsubclient 1.1.0) measured side by side against one
// emulator process in one run. A benchmark, not a test: it prints figures
// and ratios; it asserts nothing about speed.
//===----------------------------------------------------------------------===//
import ArgumentParser
import Dispatch
import EmulatorLauncher
import Foundation
import Logging
import WebPubSub

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpubsub-bench",
        abstract: "Measures the client and the Python SDK side by side against one local emulator.")

    @Option(help: "Path of the webpubsub-emulator executable (default: next to this one).")
    var emulator: String?

    @Option(help: "Python interpreter with azure-messaging-webpubsubclient (empty: skip the Python side).")
    var python: String = ".venv/bin/python"

    @Option(help: "Acked sendToGroup round trips to time.") var acked = 5000
    @Option(help: "Fire-and-forget messages to time.") var fire = 50000
    @Option(help: "Group messages to receive.") var receive = 50000
    @Option(help: "Payload size in bytes (text).") var payload = 64
    @Option(help: "Messages in flight at most while measuring receive rates.") var window = 500
    @Option(help: "Log level of our clients (trace … critical).") var logLevel = "warning"
    @Option(help: "Seconds each Python phase may take at most.") var pythonPhaseLimit = 30.0
    @Option(help: "Repetitions of the raw-baseline comparison (each phase raw, then ours).") var repetitions = 5
    @Option(help: "Idle reliable clients to open in one process (0: skip).") var idleClients = 2000
    @Option(help: "Seconds the idle clients are watched.") var idleSeconds = 30.0
    @Option(help: "Our clients kept busy receiving while acked round trips are timed (raw vs ours; 0: skip).")
    var busyReceivers = 100

    func run() throws {
        // Before the emulator starts, so that it inherits the limit: it holds a socket per client too.
        raiseDescriptorLimit(needed: idleClients + busyReceivers + 256)
        let path = emulator ?? EmulatorProcess.besideThisExecutable
        let emu = try EmulatorProcess(path: path)
        emu.stopOnInterrupt()
        defer { emu.stop() }
        print("emulator: \(emu.endpoint) (\(path))")

        let side = SwiftSide(emulator: emu, payload: payload, logLevel: Logger.Level(rawValue: logLevel) ?? .warning)
        var comparison: [(String, [Sample], [Sample])] = []
        if repetitions > 0 {
            comparison = try Comparison(emulator: emu, side: side, repetitions: repetitions, acked: acked, fire: fire,
                                        receive: receive, window: window, busyReceivers: busyReceivers).run()
        }
        let swift = try side.run(acked: acked, fire: fire, receive: receive, window: window)
        var idle: IdleResult?
        if idleClients > 0 {
            FileHandle.standardError.write(Data("opening \(idleClients) idle clients\n".utf8))
            idle = try idlePhase(emulator: emu, clients: idleClients, idleSeconds: idleSeconds)
        }
        var py: [String: Any]? = nil
        if !python.isEmpty {
            py = try runPython(emu)
        }
        Report(swift: swift, python: py, acked: acked, fire: fire, receive: receive, payload: payload).print()
        if !comparison.isEmpty {
            printComparison(comparison, repetitions: repetitions)
            printLoaded(comparison, receivers: busyReceivers, repetitions: repetitions)
        }
        idle?.print()
        Swift.print("")
        Swift.print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; emulator \(emu.endpoint)")
    }

    private func runPython(_ emu: EmulatorProcess) throws -> [String: Any]? {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Peers/bench_python_client.py").path
        let p = Process()
        let out = Pipe()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-u", script, "--connection-string", emu.connectionString, "--endpoint", emu.endpoint,
                       "--acked", String(acked), "--fire", String(fire), "--receive", String(receive),
                       "--payload", String(payload), "--window", String(window),
                       "--phase-limit", String(pythonPhaseLimit)]
        p.standardOutput = out
        p.standardError = FileHandle.standardError
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("RESULT ") {
            return try JSONSerialization.jsonObject(with: Data(line.dropFirst(7).utf8)) as? [String: Any]
        }
        FileHandle.standardError.write(Data("the Python side printed no RESULT line (status \(p.terminationStatus))\n".utf8))
        return nil
    }
}

/// Our client's side of the measurement.
struct SwiftSide {
    let emulator: EmulatorProcess
    let payload: String

    let logLevel: Logger.Level

    init(emulator: EmulatorProcess, payload: Int, logLevel: Logger.Level) {
        self.emulator = emulator
        self.logLevel = logLevel
        self.payload = String(repeating: "x", count: payload)
    }

    func makeClient(_ user: String, protocol proto: WebPubSubProtocol = .jsonReliable) -> WebPubSubClient {
        var options = WebPubSubClientOptions()
        options.protocolType = proto
        var logger = Logger(label: "bench.\(user)")
        logger.logLevel = logLevel
        options.logger = logger
        options.logsMessagePayloads = logLevel == .trace
        let emulator = self.emulator
        return WebPubSubClient(credential: { try emulator.clientAccessURL(hub: "bench_swift", user: user) },
                               options: options)
    }

    func run(acked: Int, fire: Int, receive: Int, window: Int) throws -> [String: Double] {
        var result: [String: Double] = [:]
        let sender = makeClient("swift-sender")
        try sender.open()
        defer { sender.close() }
        try sender.joinGroup("bench-ack")

        // 1. Acked round trips from one thread.
        var latencies: [Double] = []
        latencies.reserveCapacity(acked)
        var start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<acked {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try sender.sendToGroup("bench-ack", .text(payload), noEcho: true)
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        var elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        latencies.sort()
        result["acked_per_sec"] = Double(acked) / elapsed
        result["ack_p50_ms"] = latencies[latencies.count / 2]
        result["ack_p99_ms"] = latencies[min(latencies.count - 1, latencies.count * 99 / 100)]

        // 1b. Acked sends pipelined through the completion-handler form, at most 256 in flight.
        let inFlight = DispatchSemaphore(value: 256)
        let allDone = DispatchGroup()
        let failures = Counter()
        start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<acked {
            inFlight.wait()
            allDone.enter()
            sender.sendToGroup("bench-ack", .text(payload), noEcho: true) { result in
                if case .failure = result { failures.increment() }
                inFlight.signal()
                allDone.leave()
            }
        }
        allDone.wait()
        elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        result["acked_pipelined_per_sec"] = Double(acked) / elapsed
        result["acked_pipelined_failures"] = Double(failures.wait(atLeast: 0, until: Date()).0)

        // 2. Fire-and-forget from one thread: the call rate, and the rate at which the service got them.
        let inBefore = try messagesIn()
        start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<fire {
            try sender.sendToGroup("bench-fire", .text(payload), noEcho: true, fireAndForget: true)
        }
        elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        result["fire_per_sec"] = Double(fire) / elapsed
        let deadline = Date().addingTimeInterval(60)
        while try messagesIn() - inBefore < fire, Date() < deadline { usleep(2_000) }
        elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        result["fire_arrived_per_sec"] = Double(fire) / elapsed

        // 3. Group messages received by one client, per protocol, with at most `window` in flight
        //    (published, not yet received) so that a slow receiver is measured rather than overrun.
        for (proto, key) in [(WebPubSubProtocol.jsonReliable, "receive_per_sec"), (.json, "receive_json_per_sec")] {
            // Reliable: at most 250 in flight. Our receiver acks every 300 ids, and its ack reaches the
            // emulator's event loop behind the fan-out: with 500 in flight, a publisher as fast as ours
            // overran the emulator's 1000-message reliable buffer (close 1008; Docs/Performance.md).
            let w = proto == .jsonReliable ? min(window, 250) : window
            let (count, rate) = try receivePhase(sender: sender, protocol: proto, count: receive, window: w)
            result[key] = rate
            result[key.replacingOccurrences(of: "_per_sec", with: "_count")] = Double(count)
        }
        return result
    }

    private func receivePhase(sender: WebPubSubClient, protocol proto: WebPubSubProtocol, count: Int, window: Int)
        throws -> (Int, Double)
    {
        let receiver = makeClient("swift-receiver", protocol: proto)
        let counter = Counter()
        receiver.subscribe(.groupMessage) { _ in counter.increment() }
        try receiver.open()
        defer { receiver.close() }
        let group = "bench-recv-\(proto.subprotocol)"
        try receiver.joinGroup(group)
        let start = DispatchTime.now().uptimeNanoseconds
        let deadline = Date().addingTimeInterval(120)
        var sent = 0
        while sent < count, Date() < deadline {
            counter.wait(atLeast: sent - window + 1, until: deadline)
            try sender.sendToGroup(group, .text(payload), noEcho: true, fireAndForget: true)
            sent += 1
        }
        let (received, last) = counter.wait(atLeast: sent, until: deadline)
        return (received, Double(received) / (Double(max(last, start + 1) - start) / 1e9))
    }

    private func messagesIn() throws -> Int {
        (try emulator.stats()["messagesIn"] as? Int) ?? 0
    }
}

/// Counts received messages and remembers when the last one came.
final class Counter: @unchecked Sendable {  // guarded by `condition`
    private let condition = NSCondition()
    private var count = 0
    private var last: UInt64 = 0

    func increment() {
        condition.lock()
        count += 1
        last = DispatchTime.now().uptimeNanoseconds
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until at least `target` were counted (or `deadline`); returns the count and the time of the last.
    @discardableResult
    func wait(atLeast target: Int, until deadline: Date) -> (Int, UInt64) {
        condition.lock()
        defer { condition.unlock() }
        while count < target && condition.wait(until: deadline) {}
        return (count, last)
    }
}

/// The side-by-side table.
struct Report {
    var swift: [String: Double]
    var python: [String: Any]?
    var acked: Int
    var fire: Int
    var receive: Int
    var payload: Int

    func print() {
        func py(_ key: String) -> Double? { (python?[key] as? NSNumber)?.doubleValue }
        let rows: [(String, String, Bool)] = [
            ("acked sendToGroup round trips/s (1 thread)", "acked_per_sec", true),
            ("ack latency p50 (ms)", "ack_p50_ms", false),
            ("ack latency p99 (ms)", "ack_p99_ms", false),
            ("acked sendToGroup, pipelined (completion handlers, 256 in flight)/s", "acked_pipelined_per_sec", true),
            ("fire-and-forget calls/s (1 thread)", "fire_per_sec", true),
            ("fire-and-forget arrived at the service/s", "fire_arrived_per_sec", true),
            ("group messages received/s (1 client, reliable)", "receive_per_sec", true),
            ("group messages received/s (1 client, json)", "receive_json_per_sec", true),
        ]
        Swift.print("")
        Swift.print("payload \(payload) B text; acked \(acked), fire-and-forget \(fire), received \(receive) messages")
        Swift.print("| measure | Swift client | Python SDK 1.1.0 | Swift / Python |")
        Swift.print("|---|---:|---:|---:|")
        for (title, key, higherIsBetter) in rows {
            let s = swift[key]
            let p = py(key)
            let ratio: String
            if let s, let p, s > 0, p > 0 {
                ratio = String(format: "%.1f×", higherIsBetter ? s / p : p / s)
            } else {
                ratio = "-"
            }
            Swift.print("| \(title) | \(format(s)) | \(format(p)) | \(ratio) |")
        }
        for key in ["receive_count", "receive_json_count"] {
            if let got = swift[key], Int(got) < receive {
                Swift.print("note: the Swift receiver (\(key)) got \(Int(got)) of \(receive)")
            }
            if let got = py(key), Int(got) < receive {
                Swift.print("note: the Python receiver (\(key)) got \(Int(got)) of \(receive) within its time limit")
            }
        }
        if let count = py("acked_count"), Int(count) < acked {
            Swift.print("note: the Python sender completed \(Int(count)) of \(acked) acked sends within its time limit")
        }
        Swift.print("(ratios: higher is better for Swift; for latencies the ratio is Python / Swift)")
    }

    private func format(_ v: Double?) -> String {
        guard let v else { return "-" }
        return v >= 100 ? String(format: "%.0f", v) : String(format: "%.2f", v)
    }
}
