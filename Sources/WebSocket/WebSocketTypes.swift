//===----------------------------------------------------------------------===//
// swift-webpubsub: public value types of the WebSocket module.
//===----------------------------------------------------------------------===//
import Foundation

/// A complete WebSocket message (fragments already joined).
public enum WebSocketMessage: Sendable, Equatable {
    /// A text message (opcode 0x1), valid UTF-8.
    case text(String)
    /// A binary message (opcode 0x2).
    case binary([UInt8])
}

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// Any `UInt16` can be represented; ``isValidOnWire`` says whether it may appear in a close frame.
public struct WebSocketCloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric code.
    public var rawValue: UInt16

    /// Creates a code from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Creates a code from its number.
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    /// 1000: normal closure.
    public static let normalClosure = WebSocketCloseCode(1000)
    /// 1001: the endpoint is going away.
    public static let goingAway = WebSocketCloseCode(1001)
    /// 1002: protocol error.
    public static let protocolError = WebSocketCloseCode(1002)
    /// 1003: unsupported data.
    public static let unsupportedData = WebSocketCloseCode(1003)
    /// 1005: no status code was present (never sent on the wire).
    public static let noStatusReceived = WebSocketCloseCode(1005)
    /// 1006: the connection closed without a close frame (never sent on the wire).
    public static let abnormalClosure = WebSocketCloseCode(1006)
    /// 1007: a text message was not valid UTF-8.
    public static let invalidFramePayloadData = WebSocketCloseCode(1007)
    /// 1008: policy violation.
    public static let policyViolation = WebSocketCloseCode(1008)
    /// 1009: a message was too big to process.
    public static let messageTooBig = WebSocketCloseCode(1009)
    /// 1010: the client expected an extension the server did not negotiate.
    public static let mandatoryExtension = WebSocketCloseCode(1010)
    /// 1011: the server hit an unexpected condition.
    public static let internalServerError = WebSocketCloseCode(1011)
    /// 1012: service restart.
    public static let serviceRestart = WebSocketCloseCode(1012)
    /// 1013: try again later.
    public static let tryAgainLater = WebSocketCloseCode(1013)
    /// 1014: bad gateway.
    public static let badGateway = WebSocketCloseCode(1014)
    /// 1015: TLS handshake failure (never sent on the wire).
    public static let tlsHandshakeFailure = WebSocketCloseCode(1015)

    /// Whether this code may be sent or received in a close frame: 1000–1003, 1007–1014, 3000–4999.
    /// 1005, 1006 and 1015 are reserved for reports and never appear on the wire.
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    /// The number, e.g. `1000`.
    public var description: String { String(rawValue) }
}

/// What the server answered to the upgrade request.
public struct WebSocketHandshakeResponse: Sendable {
    /// The HTTP status (101).
    public var status: Int
    /// The response headers in order (names as sent).
    public var headers: [(name: String, value: String)]
    /// The subprotocol the server selected, if any.
    public var subprotocol: String?

    /// Creates a response value.
    public init(status: Int, headers: [(name: String, value: String)], subprotocol: String?) {
        self.status = status
        self.headers = headers
        self.subprotocol = subprotocol
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

/// How and why a connection ended. Delivered exactly once through ``WebSocketHandlers/onClose``.
public struct WebSocketCloseReport: Sendable, CustomStringConvertible {
    /// The close code: the peer's code after a close handshake, the code we sent when we failed the
    /// connection (1002, 1007, 1009, ...), 1005 when the peer's close frame had no code, and 1006 when the
    /// connection was lost or never opened.
    public var code: WebSocketCloseCode
    /// The close reason from the peer's close frame (or the one we sent when failing).
    public var reason: String
    /// Why, when the close was not a clean close handshake started by either side.
    public var error: WebSocketError?
    /// Whether a close frame was received from the peer.
    public var wasClean: Bool

    /// Creates a report.
    public init(code: WebSocketCloseCode, reason: String = "", error: WebSocketError? = nil, wasClean: Bool) {
        self.code = code
        self.reason = reason
        self.error = error
        self.wasClean = wasClean
    }

    /// E.g. `close 1000 "bye" (clean)`.
    public var description: String {
        var s = "close \(code.rawValue)"
        if !reason.isEmpty { s += " \"\(reason)\"" }
        s += wasClean ? " (clean)" : " (unclean)"
        if let error { s += ": \(error)" }
        return s
    }
}

/// The callbacks of a ``WebSocketConnection``. All run on the connection's queue, one at a time, in order.
public struct WebSocketHandlers: Sendable {
    /// The upgrade succeeded; the connection is open.
    public var onOpen: @Sendable (WebSocketHandshakeResponse) -> Void
    /// A complete message arrived.
    public var onMessage: @Sendable (WebSocketMessage) -> Void
    /// A pong arrived (an answer to ``WebSocketConnection/ping(_:)`` or keep-alive, or unsolicited).
    public var onPong: @Sendable ([UInt8]) -> Void
    /// The connection ended. Called exactly once, also when connecting fails; nothing is called after it.
    public var onClose: @Sendable (WebSocketCloseReport) -> Void

    /// Creates handlers; any left out do nothing.
    public init(
        onOpen: @escaping @Sendable (WebSocketHandshakeResponse) -> Void = { _ in },
        onMessage: @escaping @Sendable (WebSocketMessage) -> Void = { _ in },
        onPong: @escaping @Sendable ([UInt8]) -> Void = { _ in },
        onClose: @escaping @Sendable (WebSocketCloseReport) -> Void = { _ in }
    ) {
        self.onOpen = onOpen
        self.onMessage = onMessage
        self.onPong = onPong
        self.onClose = onClose
    }
}

/// Options of a ``WebSocketConnection``.
public struct WebSocketConfiguration: Sendable {
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in preference order. When non-empty, the server
    /// must select one of them, else connecting fails with ``WebSocketError/Code/subprotocolMismatch``.
    public var subprotocols: [String] = []
    /// Extra request headers (e.g. `Authorization`). Never logged.
    public var additionalHeaders: [(name: String, value: String)] = []
    /// The `User-Agent` header; nil sends none.
    public var userAgent: String? = "swift-webpubsub-websocket"
    /// Bound on name resolution + TCP connect + TLS handshake + HTTP upgrade, in seconds.
    public var connectTimeout: TimeInterval = 30
    /// How long the close handshake may take (our close frame → the peer's close frame and TCP close), in seconds.
    public var closeTimeout: TimeInterval = 5
    /// The largest message accepted, in bytes; a bigger one fails the connection with 1009.
    public var maximumMessageSize: Int = 1 << 20
    /// The largest single frame accepted, in bytes; a bigger one fails the connection with 1009.
    /// Defaults to ``maximumMessageSize``.
    public var maximumFrameSize: Int? = nil
    /// When set, outgoing messages longer than this are split into fragments of at most this many bytes.
    public var outgoingFragmentSize: Int? = nil
    /// The output buffer limit in bytes: ``WebSocketConnection/send(_:)`` refuses a message (returns false)
    /// that would take ``WebSocketConnection/bufferedAmount`` beyond it.
    public var maximumBufferedAmount: Int = 16 << 20
    /// Client pings and a liveness deadline; nil (the default) disables them.
    public var keepAlive: KeepAlive? = nil
    /// TLS options for `wss://`.
    public var tls: TLSConfiguration = .init()

    /// Creates the default configuration.
    public init() {}

    /// Keep-alive: send a ping every ``interval`` seconds; fail the connection with
    /// ``WebSocketError/Code/pongTimeout`` when nothing at all arrives for ``timeout`` seconds.
    public struct KeepAlive: Sendable {
        /// Seconds between pings.
        public var interval: TimeInterval
        /// Seconds without any inbound byte after which the connection is considered dead.
        public var timeout: TimeInterval

        /// Creates a keep-alive setting.
        public init(interval: TimeInterval, timeout: TimeInterval) {
            self.interval = interval
            self.timeout = timeout
        }
    }

    /// TLS options.
    public struct TLSConfiguration: Sendable {
        /// Verify the server's certificate chain and name (default true). Turning this off is for tests only.
        public var verifyPeer: Bool = true
        /// A PEM file with extra trusted CA certificates, added to the system trust store.
        public var additionalCAFile: String? = nil
        /// Verify and send SNI for this name instead of the URL's host.
        public var serverName: String? = nil

        /// Creates the default TLS options.
        public init() {}
    }
}
