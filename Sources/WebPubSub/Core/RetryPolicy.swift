import Foundation

/// How often and how long to wait before trying again (operations, reconnects).
///
/// ``WebPubSubClientOptions/messageRetryPolicy`` defaults to the Python SDK's: 3 retries, exponential, 0.8 s base, 120 s
/// cap (0.8, 1.6, 3.2 s). ``reconnectDefault`` retries without limit, exponential from 0.8 s,
/// capped at 30 s, with jitter, as the JavaScript, .NET and Java clients do. A delay of 0 is a valid
/// delay, not "stop".
///
/// The delay is a pure function of the attempt number and a random draw in `0..<1` (see
/// ``delay(forRetry:random:)``), so it is tested without clocks (Docs/Client.md, "Where each rule lives").
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
    /// The share of each delay that is random, from 0 (none) to 1: a delay `d` becomes a value in
    /// `d·(1 − jitter) ... d`, so many clients that lost the service together do not return together.
    public var jitter: Double

    /// Creates a policy; the defaults are the Python SDK's (no jitter).
    public init(maxRetries: Int = 3, delay: TimeInterval = 0.8, maxDelay: TimeInterval = 120,
                mode: Mode = .exponential, jitter: Double = 0) {
        self.maxRetries = max(0, maxRetries)
        self.delay = max(0, delay)
        self.maxDelay = max(0, maxDelay)
        self.mode = mode
        self.jitter = min(1, max(0, jitter))
    }

    /// No retries at all.
    public static let none = RetryPolicy(maxRetries: 0)

    /// The default reconnect policy: unlimited attempts, exponential from 0.8 s, at most 30 s,
    /// 20 % jitter.
    public static let reconnectDefault = RetryPolicy(maxRetries: .max, delay: 0.8, maxDelay: 30, jitter: 0.2)

    /// Whether the policy never runs out.
    public var isUnlimited: Bool { maxRetries == .max }

    /// The nominal delay before retry number `attempt` (1, 2, …), without jitter, or `nil` when there
    /// are no retries left.
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

    /// The delay before retry number `attempt` with jitter applied: `random` is a draw in `0..<1`.
    public func delay(forRetry attempt: Int, random: Double) -> TimeInterval? {
        guard let nominal = delay(forRetry: attempt) else { return nil }
        let r = min(max(random, 0), 1)
        return nominal * (1 - jitter * r)
    }
}

/// A small deterministic random source (SplitMix64) for jitter: the state machine owns one, seeded
/// by its shell, so tests replay the same delays.
struct JitterSource: Sendable, Hashable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// The next draw in `0..<1`.
    mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
    }
}
