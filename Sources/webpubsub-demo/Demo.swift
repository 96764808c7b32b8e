//===----------------------------------------------------------------------===//
// webpubsub-demo: starts the local emulator (the `webpubsub-emulator` executable)
// and runs a real client session against it: connect, join, send every data
// type, ack ids and Duplicate, Forbidden, a dropped connection recovered with
// nothing lost, close. Exits non-zero when anything did not happen as expected.
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
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpubsub-demo",
        abstract: "Run a WebPubSubClient session against a local webpubsub-emulator.")

    @Option(help: "Path of the webpubsub-emulator executable.")
    var emulator: String = ".build/debug/webpubsub-emulator"

    @Option(help: "Hub name.")
    var hub: String = "demo"

    @Flag(help: "Log warnings only (by default the clients' lifecycle is logged at info level).")
    var quiet = false

    func run() throws {
        let level: Logger.Level = quiet ? .warning : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let service = try EmulatorProcess(path: emulator)
        defer { service.stop() }
        say("emulator listening on \(service.endpoint)")
        let session = DemoSession(service: service, hub: hub)
        let failures = session.run()
        if failures.isEmpty {
            say("OK: every step behaved as expected")
        } else {
            for f in failures { say("FAILED: \(f)") }
            throw ExitCode.failure
        }
    }
}

func say(_ line: String) {
    FileHandle.standardOutput.write(Data(("demo: " + line + "\n").utf8))
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

/// What the callbacks saw, so the demo can check it.
final class Inbox: @unchecked Sendable {  // `items` guarded by `condition`
    private let condition = NSCondition()
    private var items: [String] = []

    func add(_ s: String) {
        condition.lock()
        items.append(s)
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until `predicate` holds for the items, up to `timeout` seconds.
    func wait(timeout: TimeInterval = 10, until predicate: ([String]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !predicate(items) {
            if !condition.wait(until: deadline) { return predicate(items) }
        }
        return true
    }
}

struct DemoSession {
    let service: EmulatorProcess
    let hub: String

    func client(_ user: String, roles: [String] = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
                inbox: Inbox) -> WebPubSubClient {
        let service = self.service, hub = self.hub
        var options = WebPubSubClientOptions()
        options.logger = Logger(label: "WebPubSubClient.\(user)")
        options.ackTimeout = 5
        let client = WebPubSubClient(credential: {
            // Called on open() and before every reconnect: always a fresh token.
            try service.clientAccessURL(hub: hub, user: user, roles: roles)
        }, options: options)
        client.subscribe(.connected) { e in
            say("[\(user)] connected as \(e.connectionID)")
            inbox.add("connected")
        }
        client.subscribe(.groupMessage) { e in
            if let t = e.content.text, t.hasPrefix("n"), Int(t.dropFirst()) != nil {
                inbox.add(t)  // the numbered stream: checked, not printed
                return
            }
            say("[\(user)] \(e.group) ← \(e.fromUserID ?? "?"): \(Self.show(e.content)) (sequenceId \(e.sequenceID.map(String.init) ?? "-"))")
            inbox.add(e.content.text ?? Self.show(e.content))
        }
        client.subscribe(.disconnected) { e in
            say("[\(user)] disconnected\(e.message.map { ": \($0)" } ?? "")")
            inbox.add("disconnected")
        }
        client.subscribe(.stopped) { _ in
            say("[\(user)] stopped")
            inbox.add("stopped")
        }
        return client
    }

    static func show(_ content: MessageContent) -> String {
        switch content {
        case .text(let s): return "text \"\(s)\""
        case .json(let s): return "json \(s)"
        case .binary(let d): return "binary \(d.map { String(format: "%02x", $0) }.joined())"
        case .protobuf(let d): return "protobuf \(d.count) bytes"
        }
    }

    /// Runs the session; returns what went wrong.
    func run() -> [String] {
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) {
            if !ok { failures.append(what) }
        }
        let aliceInbox = Inbox(), bobInbox = Inbox(), carolInbox = Inbox()
        let alice = client("alice", inbox: aliceInbox)
        let bob = client("bob", inbox: bobInbox)
        let carol = client("carol", roles: [], inbox: carolInbox)
        do {
            try alice.open()
            try bob.open()
            try carol.open()

            say("alice and bob join group 'chat'")
            try alice.joinGroup("chat")
            try bob.joinGroup("chat")

            say("alice sends text, JSON and binary to 'chat' (noEcho)")
            let r = try alice.sendToGroup("chat", .text("hello, bob"), noEcho: true)
            say("  acked with ackId \(r.ackID ?? 0)")
            try alice.sendToGroup("chat", .json(#"{"temperature":21.5,"unit":"C"}"#), noEcho: true)
            try alice.sendToGroup("chat", .binary(Data([0xCA, 0xFE])), noEcho: true)
            check(bobInbox.wait { $0.contains("hello, bob") && $0.contains("binary cafe") }, "bob got alice's messages")

            say("bob answers")
            try bob.sendToGroup("chat", .text("hi alice"), noEcho: true)
            check(aliceInbox.wait { $0.contains("hi alice") }, "alice got bob's answer")

            say("the same ack id twice: the service de-duplicates")
            let first = try alice.sendToGroup("chat", .text("exactly once"), noEcho: true, ackID: 1000)
            let second = try alice.sendToGroup("chat", .text("exactly once"), noEcho: true, ackID: 1000)
            say("  first: ackId \(first.ackID ?? 0) duplicated=\(first.isDuplicated); second: duplicated=\(second.isDuplicated)")
            check(!first.isDuplicated && second.isDuplicated, "Duplicate reported as success")

            say("carol has no role: joining is Forbidden, and not retried")
            do {
                try carol.joinGroup("chat")
                failures.append("carol could join without permission")
            } catch {
                say("  \(error)")
                check(error.errorName == "Forbidden" && error.ackID != nil, "Forbidden carries the ack id and name")
            }

            say("bob's TCP connection is reset while alice publishes n1…n50")
            let bobID = bob.connectionID
            for i in 1...50 {
                if i == 20 { check(service.hook(bobID ?? "", "drop"), "drop hook") }
                try alice.sendToGroup("chat", .text("n\(i)"), noEcho: true)
            }
            let numbers = (1...50).map { "n\($0)" }
            check(bobInbox.wait { items in items.filter { $0.hasPrefix("n") } == numbers },
                  "bob got n1…n50 once each, in order, across the recovery")
            check(bob.connectionID == bobID, "recovered the same connection")
            say("  bob received all 50, in order, no duplicates; connection id unchanged: \(bob.connectionID ?? "?")")
        } catch {
            failures.append("unexpected error: \(error)")
        }
        say("closing")
        alice.close()
        bob.close()
        carol.close()
        check(aliceInbox.wait { $0.contains("stopped") }, "alice stopped")
        check(bobInbox.wait { $0.contains("stopped") }, "bob stopped")
        return failures
    }
}
