//===----------------------------------------------------------------------===//
// EmulatorLauncher: runs `webpubsub-emulator` as a real server process for the
// demo and the benchmarks, mints client access URLs with its `token`
// subcommand, and calls its `/_emulator/` test hooks. Foundation only: the
// demo and the benchmark never link SwiftNIO.
//===----------------------------------------------------------------------===//
import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What went wrong while starting or talking to the emulator process.
public struct EmulatorProcessError: Error, CustomStringConvertible {
    public var description: String
}

/// A `webpubsub-emulator` process on a free loopback port, stopped by ``stop()`` or `deinit`.
public final class EmulatorProcess: @unchecked Sendable {  // immutable after init but `signalSources` (guarded by `lock`); `process` is thread-safe
    /// The executable.
    public let path: String
    /// The connection string it printed when ready.
    public let connectionString: String
    /// `http://127.0.0.1:PORT`.
    public let endpoint: String
    private let process = Process()

    /// Starts the emulator with `--port 0` and waits (at most `timeout`) for its connection string.
    public init(path: String, extraArguments: [String] = [], timeout: TimeInterval = 30) throws {
        self.path = path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw EmulatorProcessError(description: "no emulator executable at \(path) (run `swift build` first)")
        }
        let out = Pipe()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"] + extraArguments
        process.standardOutput = out
        process.standardError = FileHandle.standardError
        process.standardInput = FileHandle.nullDevice
        try process.run()

        // Read until the ready line (the connection string) arrives.
        let reader = out.fileHandleForReading
        let found = DispatchSemaphore(value: 0)
        let box = LineBox()
        DispatchQueue.global().async {
            var buffer = Data()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...nl)
                    if line.contains("Endpoint="), box.set(line) { found.signal() }
                }
            }
            found.signal()
        }
        guard found.wait(timeout: .now() + timeout) == .success, let line = box.value else {
            process.terminate()
            throw EmulatorProcessError(description: "the emulator did not print its connection string within \(timeout) s")
        }
        connectionString = line.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let e = Self.field("Endpoint", in: connectionString) else {
            process.terminate()
            throw EmulatorProcessError(description: "no Endpoint in '\(connectionString)'")
        }
        endpoint = e.hasSuffix("/") ? String(e.dropLast()) : e
    }

    deinit { stop() }

    /// The emulator's process id (for resource checks through `/proc`).
    public var processIdentifier: Int32 { process.processIdentifier }

    /// Stops the emulator when this process gets SIGINT or SIGTERM (Ctrl-C on `make demo`), then exits with
    /// 128 + the signal number; without this the emulator would outlive an interrupted demo or benchmark.
    public func stopOnInterrupt() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in
                stop()
                exit(128 + sig)
            }
            source.resume()
            lock.withLock { signalSources.append(source) }
        }
    }

    private let lock = NSLock()
    private var signalSources: [any DispatchSourceSignal] = []  // guarded by `lock`

    /// `webpubsub-emulator` in the folder of the running executable (where `swift build` puts both).
    public static var besideThisExecutable: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("webpubsub-emulator").path
    }

    /// Stops the process (SIGTERM, then SIGKILL after 3 s). Idempotent.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// A fresh client access URL from `webpubsub-emulator token`, with the roles to join, leave and
    /// publish to any group.
    public func clientAccessURL(
        hub: String, user: String?,
        roles: [String] = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    ) throws -> URL {
        var args = ["token", "--hub", hub, "--connection-string", connectionString]
        if let user { args += ["--user", user] }
        for role in roles { args += ["--role", role] }
        let p = Process()
        let out = Pipe()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard p.terminationStatus == 0, let url = URL(string: text) else {
            throw EmulatorProcessError(description: "`webpubsub-emulator token` failed (status \(p.terminationStatus))")
        }
        return url
    }

    /// Calls a test hook: `POST /_emulator/<path>`; throws unless the answer is 2xx.
    public func hook(_ path: String, method: String = "POST") throws {
        _ = try request("/_emulator/" + path, method: method)
    }

    /// `GET /_emulator/stats` as a dictionary.
    public func stats() throws -> [String: Any] {
        let data = try request("/_emulator/stats", method: "GET")
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    private func request(_ path: String, method: String) throws -> Data {
        guard let url = URL(string: endpoint + path) else {
            throw EmulatorProcessError(description: "bad hook path \(path)")
        }
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = method
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        let task = URLSession.shared.dataTask(with: request) { data, response, error in
            box.set(data, (response as? HTTPURLResponse)?.statusCode, error)
            done.signal()
        }
        task.resume()
        guard done.wait(timeout: .now() + 15) == .success else {
            task.cancel()
            throw EmulatorProcessError(description: "\(method) \(path) timed out")
        }
        let (data, status, error) = box.get()
        if let error { throw EmulatorProcessError(description: "\(method) \(path) failed: \(error)") }
        guard let status, (200..<300).contains(status) else {
            throw EmulatorProcessError(description: "\(method) \(path) answered \(status.map(String.init) ?? "nothing")")
        }
        return data ?? Data()
    }

    /// `KEY=value` from a connection string.
    static func field(_ key: String, in connectionString: String) -> String? {
        for part in connectionString.split(separator: ";") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            if part[..<eq].lowercased() == key.lowercased() { return String(part[part.index(after: eq)...]) }
        }
        return nil
    }
}

private final class LineBox: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var line: String?
    func set(_ value: String) -> Bool {
        lock.withLock {
            guard line == nil else { return false }
            line = value
            return true
        }
    }
    var value: String? { lock.withLock { line } }
}

private final class ResultBox: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var data: Data?
    private var status: Int?
    private var error: (any Error)?
    func set(_ d: Data?, _ s: Int?, _ e: (any Error)?) { lock.withLock { (data, status, error) = (d, s, e) } }
    func get() -> (Data?, Int?, (any Error)?) { lock.withLock { (data, status, error) } }
}
