import Foundation

/// What a client did, for metrics and tracing: ``WebPubSubClientOptions/instrumentation`` receives
/// each one. The `WebPubSubMetrics` product turns them into swift-metrics counters and timers.
public enum WebPubSubInstrumentationEvent: Sendable, Hashable {
    /// A socket became usable: a new connection (`connected` arrived), or a recovered one.
    case connectionOpened(recovery: Bool)
    /// A new connection attempt after a loss or a failed attempt (not the first `open()`).
    case reconnecting
    /// The reliable connection's socket was lost and its recovery starts.
    case recovering
    /// A frame of an operation was written (its first attempt and every retry).
    case messageSent(WebPubSubOperationKind)
    /// A message was delivered to the subscribers.
    case messageReceived(WebPubSubMessageSource)
    /// An operation is tried again (after a transient failure, or resent after a lost connection).
    case retried(WebPubSubOperationKind)
    /// An operation finished: `latency` from the call to its outcome; `failure` is nil on success.
    case finished(WebPubSubOperationKind, latency: TimeInterval, failure: WebPubSubError.Code?)
}

/// The kinds of operation, as metric labels.
public enum WebPubSubOperationKind: String, Sendable, Hashable, CaseIterable {
    /// ``WebPubSubClient/joinGroup(_:ackID:timeout:completion:)`` and its other forms.
    case joinGroup
    /// `leaveGroup`.
    case leaveGroup
    /// A group joined again by the client itself on a new connection.
    case rejoinGroup
    /// `sendToGroup`.
    case sendToGroup
    /// `sendEvent`.
    case sendEvent
    /// `invokeEvent`.
    case invokeEvent
}

/// Where a received message came from.
public enum WebPubSubMessageSource: String, Sendable, Hashable, CaseIterable {
    /// A group the client is in.
    case group
    /// The server (REST or an event handler).
    case server
}

/// Receives a client's ``WebPubSubInstrumentationEvent``s. Called on the client's private queue, in
/// order: keep it quick and never block.
public protocol WebPubSubInstrumentation: Sendable {
    /// Records one event.
    func record(_ event: WebPubSubInstrumentationEvent)
}

extension OperationKind {
    var instrumentationKind: WebPubSubOperationKind {
        switch self {
        case .join: return .joinGroup
        case .leave: return .leaveGroup
        case .rejoin: return .rejoinGroup
        case .send: return .sendToGroup
        case .event: return .sendEvent
        }
    }
}
