/// The outcome of an acknowledged operation.
public struct WebPubSubResult: Sendable, Hashable {
    /// The ack id the operation used (nil for fire-and-forget sends).
    public var ackID: UInt64?
    /// Whether the service answered `Duplicate`: it had already processed this ack id (success).
    public var isDuplicated: Bool

    /// Creates a result.
    public init(ackID: UInt64?, isDuplicated: Bool) {
        self.ackID = ackID
        self.isDuplicated = isDuplicated
    }
}

/// The answer to `invokeEvent(_:_:invocationID:timeout:)`.
public struct InvokeEventResult: Sendable, Hashable {
    /// The invocation id.
    public var invocationID: String
    /// The content the upstream answered with, if any.
    public var content: MessageContent?
}

/// Where a client is in its life.
public enum WebPubSubClientState: Sendable, Hashable {
    /// Not open (never opened, closed, or gave up).
    case stopped
    /// Opening a new connection (at `open()` or on a reconnect).
    case connecting
    /// Connected: operations are sent at once.
    case connected
    /// The reliable connection dropped; recovering the same session.
    case recovering
    /// Between reconnect attempts.
    case disconnected
    /// `close()` is in progress.
    case stopping
}
