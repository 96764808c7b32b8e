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
    /// Delays between reconnect attempts; default 3 retries, exponential from 0.8 s, at most 120 s.
    public var reconnectRetryPolicy: RetryPolicy = RetryPolicy()
    /// Delays between attempts of an operation after a transient failure (same ack id every time);
    /// default 3 retries, exponential from 0.8 s, at most 120 s.
    public var messageRetryPolicy: RetryPolicy = RetryPolicy()
    /// How long one attempt of an operation waits for its ack, in seconds. Default 30.
    public var ackTimeout: TimeInterval = 30
    /// How long opening a connection may take (socket and `connected` message), in seconds. Default 30.
    public var startTimeout: TimeInterval = 30
    /// How long to keep trying to recover a lost reliable connection, in seconds. Default 30 (the service's window).
    public var recoveryTimeout: TimeInterval = 30
    /// The pause between recovery attempts, in seconds (the first attempt is immediate). Default 1.
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

    /// Creates options with the defaults.
    public init() {}
}
