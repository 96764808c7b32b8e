//===----------------------------------------------------------------------===//
// Test support: capture what a component logs, as text lines, to check that
// bad input was logged and that secrets never are.
//===----------------------------------------------------------------------===//
import Foundation
import Logging

/// Log records captured as text lines: `level message key=value …` (metadata sorted by key).
public final class LogCapture: @unchecked Sendable {  // `records` guarded by `lock`
    private let lock = NSLock()
    private var records: [String] = []

    public init() {}

    /// Every line captured so far.
    public var lines: [String] { lock.withLock { records } }

    /// Whether a captured line contains `needle`.
    public func contains(_ needle: String) -> Bool { lines.contains { $0.contains(needle) } }

    /// A logger that writes into this capture, at `level` and above.
    public func logger(label: String, level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: label) { _ in CapturingLogHandler(self) }
        logger.logLevel = level
        return logger
    }

    fileprivate func append(_ line: String) { lock.withLock { records.append(line) } }
}

/// A swift-log handler writing into a ``LogCapture``.
public struct CapturingLogHandler: LogHandler {
    public let capture: LogCapture
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    public init(_ capture: LogCapture) { self.capture = capture }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        capture.append("\(event.level) \(event.message) " + all.map { "\($0)=\($1)" }.sorted().joined(separator: " "))
    }
}
