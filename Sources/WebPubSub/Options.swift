import Dispatch
import Foundation
import Logging

/// The JSON subprotocol a client speaks.
public enum WebPubSubProtocol: String, Sendable, Hashable, CaseIterable {
    /// `json.webpubsub.azure.v1`: no sequence ids, no recovery; a lost connection is re-established.
    case json = "json.webpubsub.azure.v1"
    /// `json.reliable.webpubsub.azure.v1` (the default): sequence ids, acks and recovery of a lost
    /// connection, so nothing is lost or duplicated across a short network failure.
    case jsonReliable = "json.reliable.webpubsub.azure.v1"

    /// The `Sec-WebSocket-Protocol` value.
    public var subprotocol: String { rawValue }

    /// Whether this protocol has sequence ids and recovery.
    public var isReliable: Bool { self == .jsonReliable }
}

/// Options of a ``WebPubSubClient``. The defaults are the Python SDK's, plus a keepalive.
public struct WebPubSubClientOptions: Sendable {
    /// The subprotocol; default ``WebPubSubProtocol/jsonReliable``.
    public var protocolType: WebPubSubProtocol = .jsonReliable
    /// Whether to open a new connection (with a fresh URL from the credential) when the connection is
    /// lost and cannot be recovered. Default true.
    public var autoReconnect: Bool = true
    /// Whether to join again, on a new connection, the groups this client joined. Default true.
    public var autoRejoinGroups: Bool = true
    /// Delays between new connection attempts after a connection was lost for good or an attempt
    /// failed. Default ``RetryPolicy/reconnectDefault``: unlimited, exponential from 0.8 s, at most
    /// 30 s, with jitter. Every attempt is paced, also when the previous connection died right
    /// after it opened; the first attempt after a connection that stayed up for
    /// ``backoffResetInterval`` is immediate. With a finite policy the client stops (``CallbackType/stopped``)
    /// when it runs out.
    public var reconnectRetryPolicy: RetryPolicy = .reconnectDefault
    /// A connection that stayed up this long resets the reconnect and recovery backoff, in seconds. Default 30.
    public var backoffResetInterval: TimeInterval = 30
    /// Delays between attempts of an operation after a transient failure (same ack id every time);
    /// default 3 retries, exponential from 0.8 s, at most 120 s.
    public var messageRetryPolicy: RetryPolicy = RetryPolicy()
    /// How long one attempt of an operation waits for its ack, in seconds. Default 30.
    public var ackTimeout: TimeInterval = 30
    /// How long opening a connection may take (socket and `connected` message), in seconds. Default 30.
    public var startTimeout: TimeInterval = 30
    /// How long to keep trying to recover a lost reliable connection, in seconds. Default 30 (the service's window).
    public var recoveryTimeout: TimeInterval = 30
    /// The pause between recovery attempts, in seconds. The first attempt after a loss is immediate,
    /// unless the previous loss was also less than ``backoffResetInterval`` ago. Default 1.
    public var recoveryRetryInterval: TimeInterval = 1
    /// How often to acknowledge received sequence ids when they changed, in seconds. Default 1.
    public var sequenceAckInterval: TimeInterval = 1
    /// Send a `ping` message this often while connected, in seconds; nil or 0 turns the keepalive off. Default 20.
    public var keepAliveInterval: TimeInterval? = 20
    /// Consider the connection dead (and recover it) when nothing at all arrived for this long, in seconds. Default 120.
    public var keepAliveTimeout: TimeInterval = 120
    /// The serial queue on which every callback and completion handler runs; nil: a queue of the client's own.
    /// Must be a serial queue.
    public var callbackQueue: DispatchQueue? = nil
    /// Where the client logs. Access tokens are never logged.
    public var logger: Logger = Logger(label: "WebPubSubClient")
    /// Log every message payload at `trace` level. Default false.
    public var logsMessagePayloads: Bool = false
    /// Put in front of the client's own `User-Agent`.
    public var userAgent: String? = nil
    /// TLS options for `wss://` URLs.
    public var tls: WebPubSubTLSConfiguration = .init()
    /// The largest incoming message accepted, in bytes. Default 1 MiB.
    public var maximumMessageSize: Int = 1 << 20
    /// The largest outgoing message, in bytes of its encoded frame. Default 1 MiB, the service's limit
    /// (it closes a connection that sends more). A larger operation fails at once with
    /// ``WebPubSubError/Code/messageTooLarge``, and the connection is untouched.
    public var maximumOutgoingMessageSize: Int = 1 << 20
    /// Backpressure: when this many received messages wait for their callbacks, the client stops
    /// reading the socket until half of them ran. Default 10,000.
    public var maximumPendingCallbackMessages: Int = 10_000
    /// Backpressure: when received messages of this many bytes (of content) wait for their callbacks,
    /// the client stops reading the socket until half of them ran. Default 16 MiB.
    public var maximumPendingCallbackBytes: Int = 16 << 20

    /// Receives what the client does, for metrics (e.g. `WebPubSubMetrics` from the product of that
    /// name); nil (the default) costs nothing.
    public var instrumentation: (any WebPubSubInstrumentation)? = nil

    /// Creates options with the defaults.
    public init() {}
}
