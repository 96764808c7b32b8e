//===----------------------------------------------------------------------===//
// webpubsub-bench: our client and the Python SDK side by side against one local
// emulator (loopback only, bounded in count and time). Prints a Markdown table.
//===----------------------------------------------------------------------===//
import ArgumentParser
import Dispatch
import Foundation
import Logging
import WebPubSub

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpubsub-bench",
        abstract: "Measure WebPubSubClient (and the Python SDK) against a local webpubsub-emulator.")

    @Option(help: "Path of the webpubsub-emulator executable.")
    var emulator: String = ".build/release/webpubsub-emulator"

    @Option(help: "A Python with azure-messaging-webpubsubclient 1.1.0; leave out to skip the Python side.")
    var python: String?

    @Option(help: "The Python side's script.")
    var script: String = "Tests/Peers/py_bench.py"

    @Option(help: "Sequential acked sends (latency).")
    var sequential = 2000

    @Option(help: "Pipelined acked sends, and messages received.")
    var pipelined = 20000

    @Option(help: "Payload bytes per message.")
    var size = 64

    func run() throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let service = try EmulatorProcess(path: emulator)
        defer { service.stop() }
        let payload = String(repeating: "x", count: size)
        var rows: [(String, String, String)] = []

        // Sequential acked sends: the ack round trip.
        let client = try open(service, "swift-sender")
        var latencies: [Double] = []
        latencies.reserveCapacity(sequential)
        let started = Date()
        for _ in 0..<sequential {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try client.sendToGroup("bench-nobody", .text(payload))
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        let seqSeconds = Date().timeIntervalSince(started)
        latencies.sort()
        rows.append(("acked sendToGroup, one at a time (\(sequential) × \(size) B)", "Swift",
                     String(format: "p50 %.3f ms, p99 %.3f ms, %.0f ops/s", latencies[latencies.count / 2],
                            latencies[latencies.count * 99 / 100], Double(sequential) / seqSeconds)))

        // Pipelined acked sends (completion handlers).
        let acked = Countdown(pipelined)
        let pStart = Date()
        for _ in 0..<pipelined {
            client.sendToGroup("bench-nobody", .text(payload)) { _ in acked.tick() }
        }
        acked.wait(timeout: 120)
        let pSeconds = Date().timeIntervalSince(pStart)
        rows.append(("acked sendToGroup, pipelined (\(pipelined) × \(size) B)", "Swift",
                     String(format: "%.0f msgs/s (all acked in %.2f s)", Double(pipelined) / pSeconds, pSeconds)))

        // Receiving: a Swift receiver in group "rx" while the sender publishes fire-and-forget.
        let receiver = try open(service, "swift-receiver")
        try receiver.joinGroup("rx")
        let rx = Countdown(pipelined)
        receiver.subscribe(.groupMessage) { _ in rx.tick() }
        let (rate, swiftGot) = publish(client, count: pipelined, payload: payload, received: { rx.done })
        rows.append(("group messages received (\(pipelined) × \(size) B, reliable, ≤ \(window) ahead)", "Swift",
                     String(format: "%.0f msgs/s (%d received)", rate, swiftGot)))
        receiver.close()

        if let python {
            let n = min(sequential, 500)
            let seq = try runPython(python, [try url(service, "py-sender"), "acked", "\(n)", "\(size)"])
            rows.append(("acked sendToGroup, one at a time (\(n) × \(size) B)", "Python 1.1.0",
                         String(format: "p50 %.3f ms, p99 %.3f ms, %.0f ops/s, %d stalls ≥ 0.5 s",
                                seq["p50_ms"] as? Double ?? 0, seq["p99_ms"] as? Double ?? 0,
                                seq["ops_per_s"] as? Double ?? 0, seq["stalls"] as? Int ?? 0)))
            let m = min(pipelined, 5000)
            let peer = try PythonReceiver(python, [script, try url(service, "py-receiver"), "receive", "\(m)"])
            let (_, _) = publish(client, count: m, payload: payload, received: { peer.progress })
            peer.waitForResult(timeout: 40)
            let result = peer.result ?? [:]
            rows.append(("group messages received (\(m) × \(size) B, reliable, ≤ \(window) ahead)", "Python 1.1.0",
                         String(format: "%.0f msgs/s (%d received)", result["msgs_per_s"] as? Double ?? 0,
                                result["count"] as? Int ?? 0)))
        }
        client.close()

        print("| measurement | client | result |")
        print("|---|---|---|")
        for (what, who, result) in rows { print("| \(what) | \(who) | \(result) |") }
    }

    private func url(_ service: EmulatorProcess, _ user: String) throws -> String {
        try service.clientAccessURL(hub: "bench", user: user,
                                    roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]).absoluteString
    }

    private func open(_ service: EmulatorProcess, _ user: String) throws -> WebPubSubClient {
        let url = try service.clientAccessURL(hub: "bench", user: user,
                                              roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        var options = WebPubSubClientOptions()
        options.ackTimeout = 60
        let client = WebPubSubClient(url: url, options: options)
        try client.open()
        return client
    }

    /// How far the publisher may run ahead of the receiver: the service closes a reliable connection
    /// with more than 1000 unacknowledged messages, so an unbounded burst measures that, not the client.
    var window: Int { 100 }

    /// Publishes `count` fire-and-forget messages to "rx", at most ``window`` ahead of `received()`;
    /// returns messages/s and how many arrived (it gives up when the receiver stalls for 10 s).
    private func publish(_ client: WebPubSubClient, count: Int, payload: String,
                         received: () -> Int) -> (Double, Int) {
        let start = Date()
        var sent = 0
        var lastProgress = Date()
        var lastSeen = 0
        while received() < count {
            while sent < count, sent - received() < window {
                client.sendToGroup("rx", .text(payload), fireAndForget: true) { _ in }
                sent += 1
            }
            let now = received()
            if now != lastSeen {
                lastSeen = now
                lastProgress = Date()
            } else if Date().timeIntervalSince(lastProgress) > 10 {
                break
            }
            usleep(200)
        }
        return (Double(received()) / Date().timeIntervalSince(start), received())
    }

    private func runPython(_ python: String, _ arguments: [String]) throws -> [String: Any] {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script] + arguments
        process.standardOutput = pipe
        try process.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let last = String(decoding: out, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        return (try? JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]) ?? [:]
    }
}

/// Counts down to zero; `wait` blocks until then (or the time-out).
final class Countdown: @unchecked Sendable {  // `remaining` guarded by `condition`
    private let condition = NSCondition()
    private var remaining: Int
    private let total: Int
    init(_ n: Int) { remaining = n; total = n }
    /// How many ticks so far.
    var done: Int { condition.lock(); defer { condition.unlock() }; return total - remaining }
    func tick() {
        condition.lock()
        remaining -= 1
        if remaining <= 0 { condition.broadcast() }
        condition.unlock()
    }
    func wait(timeout: TimeInterval) {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        while remaining > 0, condition.wait(until: deadline) {}
        condition.unlock()
    }
}

/// The Python receiver: started first, READY when it joined; its JSON result line comes at the end.
final class PythonReceiver: @unchecked Sendable {  // `lines` guarded by `condition`
    private let process = Process()
    private let pipe = Pipe()
    private let condition = NSCondition()
    private var lines: [String] = []
    private var partial = Data()

    init(_ python: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        process.standardOutput = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] h in self?.append(h.availableData) }
        try process.run()
        guard waitFor(timeout: 60, { $0.contains("READY") }) else { throw ValidationError("the Python receiver did not start") }
    }

    private func append(_ data: Data) {
        condition.lock()
        partial.append(data)
        while let nl = partial.firstIndex(of: UInt8(ascii: "\n")) {
            lines.append(String(decoding: partial[partial.startIndex..<nl], as: UTF8.self))
            partial.removeSubrange(partial.startIndex...nl)
        }
        if data.isEmpty { pipe.fileHandleForReading.readabilityHandler = nil }
        condition.broadcast()
        condition.unlock()
    }

    private func waitFor(timeout: TimeInterval, _ predicate: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !lines.contains(where: predicate) {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }

    func waitForResult(timeout: TimeInterval) {
        _ = waitFor(timeout: timeout) { $0.hasPrefix("{") }
        process.waitUntilExit()
    }

    /// The last `GOT n` progress line's n.
    var progress: Int {
        condition.lock()
        defer { condition.unlock() }
        if let line = lines.last(where: { $0.hasPrefix("{") }),
            let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] {
            return o["count"] as? Int ?? 0
        }
        return lines.last(where: { $0.hasPrefix("GOT ") }).flatMap { Int($0.dropFirst(4)) } ?? 0
    }

    var result: [String: Any]? {
        condition.lock()
        defer { condition.unlock() }
        guard let line = lines.last(where: { $0.hasPrefix("{") }) else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }
}

/// The emulator as a child process: `serve --port 0`, ready when it prints its connection string.
final class EmulatorProcess: @unchecked Sendable {  // immutable after init; `Process` is used from one thread at a time
    let path: String
    let process = Process()
    let connectionString: String
    let endpoint: String

    init(path: String) throws {
        self.path = path
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["serve", "--port", "0", "--log-level", "warning"]
        process.standardOutput = pipe
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw ValidationError("cannot start the emulator at \(path): \(error)") }
        var buffer = Data()
        var line: String?
        while line == nil {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }  // the emulator exited
            buffer.append(chunk)
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                line = String(decoding: buffer[..<nl], as: UTF8.self)
            }
        }
        guard let line, line.hasPrefix("Endpoint=") else {
            if process.isRunning { process.terminate() }
            throw ValidationError("the emulator did not print its connection string")
        }
        connectionString = line
        endpoint = line.split(separator: ";").first.map { String($0.dropFirst("Endpoint=".count)) } ?? ""
    }

    /// A client access URL made by `webpubsub-emulator token` (the job of your server in real life).
    func clientAccessURL(hub: String, user: String, roles: [String]) throws -> URL {
        let token = Process()
        let pipe = Pipe()
        token.executableURL = URL(fileURLWithPath: path)
        token.arguments = ["token", "--hub", hub, "--user", user, "--connection-string", connectionString]
            + roles.flatMap { ["--role", $0] }
        token.standardOutput = pipe
        try token.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        token.waitUntilExit()
        let text = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard token.terminationStatus == 0, let url = URL(string: text) else {
            throw ValidationError("token failed: \(text)")
        }
        return url
    }

    /// Runs one of the emulator's `/_emulator/connections/{id}/{hook}` test hooks.
    func hook(_ connectionID: String, _ name: String) -> Bool {
        var request = URLRequest(url: URL(string: "\(endpoint)/_emulator/connections/\(connectionID)/\(name)")!)
        request.httpMethod = "POST"
        let done = DispatchSemaphore(value: 0)
        let status = StatusBox()
        URLSession.shared.dataTask(with: request) { _, response, _ in
            status.set((response as? HTTPURLResponse)?.statusCode ?? 0)
            done.signal()
        }.resume()
        _ = done.wait(timeout: .now() + 10)
        return status.get() == 200
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

final class StatusBox: @unchecked Sendable {  // `value` guarded by `lock`
    private let lock = NSLock()
    private var value = 0
    func set(_ v: Int) { lock.lock(); value = v; lock.unlock() }
    func get() -> Int { lock.lock(); defer { lock.unlock() }; return value }
}
