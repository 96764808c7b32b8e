import Foundation

/// How often and how long to wait before trying again (operations and reconnects).
///
/// The defaults are the Python SDK's: 3 retries, exponential, 0.8 s base, 120 s cap
/// (0.8, 1.6, 3.2 s). A delay of 0 is a valid delay, not "stop" (unlike Python's bug P9).
public struct RetryPolicy: Sendable, Hashable {
    /// How the delay grows.
    public enum Mode: Sendable, Hashable {
        /// `delay · 2^(attempt-1)`, capped at `maxDelay`.
        case exponential
        /// Always `delay`.
        case fixed
    }

    /// How many times to try again after the first attempt (0 = never). `Int.max` means unlimited.
    public var maxRetries: Int
    /// The base delay, in seconds.
    public var delay: TimeInterval
    /// The largest delay, in seconds.
    public var maxDelay: TimeInterval
    /// How the delay grows.
    public var mode: Mode

    /// Creates a policy; the defaults are the Python SDK's.
    public init(maxRetries: Int = 3, delay: TimeInterval = 0.8, maxDelay: TimeInterval = 120,
                mode: Mode = .exponential) {
        self.maxRetries = max(0, maxRetries)
        self.delay = max(0, delay)
        self.maxDelay = max(0, maxDelay)
        self.mode = mode
    }

    /// No retries at all.
    public static let none = RetryPolicy(maxRetries: 0)

    /// The delay before retry number `attempt` (1, 2, …), or `nil` when there are no retries left.
    public func delay(forRetry attempt: Int) -> TimeInterval? {
        guard attempt >= 1, attempt <= maxRetries else { return nil }
        switch mode {
        case .fixed:
            return min(delay, maxDelay)
        case .exponential:
            // 2^(attempt-1) without overflow: past 2^62 the cap has long been reached.
            let exponent = min(attempt - 1, 62)
            let value = delay * Double(UInt64(1) << UInt64(exponent))
            return min(value, maxDelay)
        }
    }
}
