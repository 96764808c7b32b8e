//===----------------------------------------------------------------------===//
// Test support: start a real peer process (a Python script from Tests/Peers,
// the emulator executable, ...), read its output line by line, wait for the
// line that says it is ready, and always stop it.
//===----------------------------------------------------------------------===//
import Foundation

/// Where things are, for tests.
public enum TestPaths {
    /// The package root (the folder holding Package.swift).
    public static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }  // Tests/TestSupport/PeerProcess.swift
        return url
    }()

    /// `Tests/Peers`, the Python peers and helper scripts.
    public static var peers: URL { packageRoot.appendingPathComponent("Tests/Peers") }

    /// The venv Python with the peers' packages: `$WPS_PYTHON`, else `.venv/bin/python`.
    public static var python: String {
        if let env = ProcessInfo.processInfo.environment["WPS_PYTHON"], !env.isEmpty { return env }
        return packageRoot.appendingPathComponent(".venv/bin/python").path
    }

    /// The build folder of the running test bundle (to find executables built beside it).
    public static var buildProducts: URL {
        Bundle.main.bundleURL.hasDirectoryPath
            ? Bundle.main.bundleURL : Bundle.main.bundleURL.deletingLastPathComponent()
    }
}

/// Errors from ``PeerProcess``.
public struct PeerProcessError: Error, CustomStringConvertible {
    public var description: String
}

/// Every peer process still running, so that none outlives the test process: `atexit` kills them even
/// when a test leaked its `PeerProcess` (for example through a reference cycle).
private enum LivePeers {
    nonisolated(unsafe) static var pids: Set<Int32> = []  // guarded by `lock`
    static let lock = NSLock()
    static let installExitHook: Void = {
        atexit {
            LivePeers.lock.lock()
            let pids = LivePeers.pids
            LivePeers.lock.unlock()
            for pid in pids { kill(pid, SIGKILL) }
        }
    }()

    static func add(_ pid: Int32) {
        _ = installExitHook
        lock.withLock { _ = pids.insert(pid) }
    }

    static func remove(_ pid: Int32) { lock.withLock { _ = pids.remove(pid) } }
}

/// A child process that a test starts and is sure to stop.
///
/// Output (stdout and stderr merged) is collected line by line; ``waitForLine(containing:timeout:)``
/// blocks until a matching line arrives. ``stop()`` (also run by `deinit`) sends SIGTERM, then SIGKILL
/// after a grace period, and reaps the child.
public final class PeerProcess: @unchecked Sendable {  // mutable state guarded by `lock`
    public let process = Process()
    private let pipe = Pipe()
    private let lock = NSCondition()
    private var lines: [String] = []
    private var partial = Data()
    private var ended = false

    /// Starts `executable` with `arguments`.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        currentDirectory: URL? = nil
    ) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["PYTHONUNBUFFERED"] = "1"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        if let currentDirectory { process.currentDirectoryURL = currentDirectory }
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            self?.append(data)
        }
        try process.run()
        LivePeers.add(process.processIdentifier)
    }

    /// Starts a Python script from `Tests/Peers` with the venv's interpreter.
    public static func python(_ script: String, _ arguments: [String] = [], environment: [String: String] = [:])
        throws -> PeerProcess
    {
        try PeerProcess(
            TestPaths.python, ["-u", TestPaths.peers.appendingPathComponent(script).path] + arguments,
            environment: environment)
    }

    private func append(_ data: Data) {
        lock.lock()
        defer { lock.unlock() }
        if data.isEmpty {
            if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)) }
            partial.removeAll()
            ended = true
            pipe.fileHandleForReading.readabilityHandler = nil
        } else {
            partial.append(data)
            while let nl = partial.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(String(decoding: partial[partial.startIndex..<nl], as: UTF8.self))
                partial.removeSubrange(partial.startIndex...nl)
            }
        }
        lock.broadcast()
    }

    /// All lines printed so far.
    public var output: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    /// Waits until a line containing `needle` has been printed and returns it.
    @discardableResult
    public func waitForLine(containing needle: String, timeout: TimeInterval = 30) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        var scanned = 0
        while true {
            while scanned < lines.count {
                if lines[scanned].contains(needle) { return lines[scanned] }
                scanned += 1
            }
            if ended {
                throw PeerProcessError(description: "process ended before printing '\(needle)'; output:\n"
                    + lines.joined(separator: "\n"))
            }
            if !lock.wait(until: deadline) {
                throw PeerProcessError(description: "timed out waiting for '\(needle)'; output:\n"
                    + lines.joined(separator: "\n"))
            }
        }
    }

    /// Waits for a line `PREFIX<value>` and returns the value after the prefix, trimmed.
    public func value(after prefix: String, timeout: TimeInterval = 30) throws -> String {
        let line = try waitForLine(containing: prefix, timeout: timeout)
        let range = line.range(of: prefix)!
        return line[range.upperBound...].trimmingCharacters(in: .whitespaces)
    }

    /// Waits for the process to exit by itself, up to `timeout`; returns its status, or nil on timeout.
    public func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return nil }
            usleep(20_000)
        }
        return process.terminationStatus
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace` seconds. Idempotent.
    public func stop(grace: TimeInterval = 3) {
        defer { LivePeers.remove(process.processIdentifier) }
        guard process.isRunning else { return }
        process.terminate()
        if waitForExit(timeout: grace) == nil {
            kill(process.processIdentifier, SIGKILL)
            _ = waitForExit(timeout: 5)
        }
    }

    deinit { stop() }
}
