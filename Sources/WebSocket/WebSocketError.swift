//===----------------------------------------------------------------------===//
// swift-webpubsub: the WebSocket module's error type.
//===----------------------------------------------------------------------===//

/// An error of a WebSocket connection: a ``code`` to switch on plus details.
///
/// A struct wrapping a private enum (as swift-certificates does), so that codes can be added without
/// breaking clients. Compare ``code`` values: `error.code == .upgradeRejected`.
public struct WebSocketError: Error, Sendable, CustomStringConvertible {
    /// The kind of error.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Backing: String, Hashable, Sendable {
            case invalidURL, nameResolutionFailed, connectionFailed, timedOut, tlsHandshakeFailed
            case certificateVerificationFailed, upgradeRejected, invalidUpgradeResponse, subprotocolMismatch
            case invalidAcceptKey, protocolViolation, invalidUTF8, messageTooBig, pongTimeout
            case connectionReset, closeTimeout, cancelled, ioError, peerNotReading
        }
        fileprivate var backing: Backing

        /// The URL is not `ws://` / `wss://` with a host.
        public static let invalidURL = Code(backing: .invalidURL)
        /// getaddrinfo failed (``WebSocketError/errno`` holds the EAI code) or found nothing.
        public static let nameResolutionFailed = Code(backing: .nameResolutionFailed)
        /// No address accepted the TCP connection (``WebSocketError/errno`` of the last attempt).
        public static let connectionFailed = Code(backing: .connectionFailed)
        /// Connecting (DNS + TCP + TLS + upgrade) took longer than the connect timeout.
        public static let timedOut = Code(backing: .timedOut)
        /// The TLS handshake failed for a reason other than certificate verification.
        public static let tlsHandshakeFailed = Code(backing: .tlsHandshakeFailed)
        /// The server's certificate was not trusted or did not match the host
        /// (``WebSocketError/verifyResult`` holds OpenSSL's reason).
        public static let certificateVerificationFailed = Code(backing: .certificateVerificationFailed)
        /// The server answered the upgrade with a status other than 101
        /// (``WebSocketError/httpStatus``, ``WebSocketError/httpHeaders``, ``WebSocketError/httpBody``).
        public static let upgradeRejected = Code(backing: .upgradeRejected)
        /// The upgrade response was not valid HTTP/1.1 or lacked `Upgrade`/`Connection` headers.
        public static let invalidUpgradeResponse = Code(backing: .invalidUpgradeResponse)
        /// The server selected no subprotocol, or one that was not offered.
        public static let subprotocolMismatch = Code(backing: .subprotocolMismatch)
        /// `Sec-WebSocket-Accept` was missing or wrong.
        public static let invalidAcceptKey = Code(backing: .invalidAcceptKey)
        /// The peer broke RFC 6455 framing rules (we closed with 1002).
        public static let protocolViolation = Code(backing: .protocolViolation)
        /// A text message or close reason was not valid UTF-8 (we closed with 1007).
        public static let invalidUTF8 = Code(backing: .invalidUTF8)
        /// A message or frame exceeded the configured maximum (we closed with 1009).
        public static let messageTooBig = Code(backing: .messageTooBig)
        /// Keep-alive: nothing arrived within the timeout.
        public static let pongTimeout = Code(backing: .pongTimeout)
        /// The connection was lost without a close frame (reported with 1006).
        public static let connectionReset = Code(backing: .connectionReset)
        /// The close handshake did not finish within the close timeout.
        public static let closeTimeout = Code(backing: .closeTimeout)
        /// ``WebSocketConnection/abort()`` or ``WebSocketConnection/close(code:reason:)`` before the connection opened.
        public static let cancelled = Code(backing: .cancelled)
        /// The peer kept sending pings without reading our pongs: the pongs waiting to be written passed
        /// ``WebSocketConnection/maximumUnwrittenControlBytes`` and we closed with 1008 (policy violation).
        public static let peerNotReading = Code(backing: .peerNotReading)
        /// A socket call failed (``WebSocketError/errno``).
        public static let ioError = Code(backing: .ioError)

        /// The code's name, e.g. `upgradeRejected`.
        public var description: String { backing.rawValue }
    }

    /// The kind of error.
    public var code: Code
    /// A human-readable explanation (never holds tokens or headers' secret values).
    public var reason: String
    /// The HTTP status of a rejected upgrade.
    public var httpStatus: Int?
    /// The response headers of a rejected upgrade.
    public var httpHeaders: [(name: String, value: String)]
    /// The first bytes (at most 4 KiB) of a rejected upgrade's body.
    public var httpBody: [UInt8]
    /// OpenSSL's verification result (`X509_verify_cert_error_string`) for ``Code/certificateVerificationFailed``.
    public var verifyResult: String?
    /// The `errno` (or getaddrinfo `EAI_*` code) of a failed system call.
    public var errno: Int32?
    /// The close code we sent when this error failed an open connection.
    public var closeCode: WebSocketCloseCode?

    init(
        _ code: Code, _ reason: String, httpStatus: Int? = nil, httpHeaders: [(name: String, value: String)] = [],
        httpBody: [UInt8] = [], verifyResult: String? = nil, errno: Int32? = nil, closeCode: WebSocketCloseCode? = nil
    ) {
        self.code = code
        self.reason = reason
        self.httpStatus = httpStatus
        self.httpHeaders = httpHeaders
        self.httpBody = httpBody
        self.verifyResult = verifyResult
        self.errno = errno
        self.closeCode = closeCode
    }

    /// The body of a rejected upgrade as text (lossy UTF-8).
    public var httpBodyText: String { String(decoding: httpBody, as: UTF8.self) }

    /// The code, the reason and the main details, on one line.
    public var description: String {
        var s = "WebSocketError.\(code): \(reason)"
        if let httpStatus { s += " (HTTP \(httpStatus))" }
        if let verifyResult { s += " (verify: \(verifyResult))" }
        if let errno { s += " (errno \(errno))" }
        return s
    }
}
