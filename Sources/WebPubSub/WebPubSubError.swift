import WebSocket

//===----------------------------------------------------------------------===//
// The one public error type of the client: a struct wrapping a private enum
// (the swift-certificates pattern), so new cases never break callers.
//===----------------------------------------------------------------------===//

/// An error from ``WebPubSubClient``.
///
/// Every error of an operation that had an ack id carries it in ``ackID``, including ack
/// time-outs and lost connections, so a caller can retry with the same id and let the
/// service de-duplicate. When the service refused an operation, ``errorName`` and
/// ``errorMessage`` hold what its `ack` said (for example `"Forbidden"`).
///
/// Errors compare and hash by ``code`` alone, so a test or a mock can build one with
/// ``init(_:message:ackID:)`` and compare. A failure of the transport keeps its typed cause:
/// ``webSocketError`` (HTTP status, headers and body of a rejected upgrade, OpenSSL's verification
/// result, the `errno`), and ``underlyingError`` for a credential that threw.
public struct WebPubSubError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, to switch on.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: Hashable, Sendable {
            case invalidArgument, invalidContent, clientClosed, notConnected, alreadyOpen, openFailed
            case serviceError, ackTimeout, connectionLost, stopped, ackIDInUse
            case invocationFailed, invocationTimedOut, invocationCancelled, messageTooLarge, cancelled
            case timedOut, invalidConnectionString
        }
        fileprivate let base: Base
        fileprivate init(_ base: Base) { self.base = base }

        /// An argument is not valid, for example an empty group or event name. Nothing was sent.
        public static let invalidArgument = Code(.invalidArgument)
        /// The content does not fit its data type, for example `.json` that is not valid JSON. Nothing was sent.
        public static let invalidContent = Code(.invalidContent)
        /// The client was closed with `close()` (and not opened again). Nothing was sent.
        public static let clientClosed = Code(.clientClosed)
        /// The client is not open: never opened, or it stopped after giving up reconnecting. Nothing was sent.
        public static let notConnected = Code(.notConnected)
        /// `open()` was called on a client that is not stopped.
        public static let alreadyOpen = Code(.alreadyOpen)
        /// Opening failed: the credential threw, the socket did not open, or no `connected` message came in time.
        public static let openFailed = Code(.openFailed)
        /// The service answered the operation with an error (see ``WebPubSubError/errorName``).
        public static let serviceError = Code(.serviceError)
        /// No ack came within the ack time-out, on any attempt.
        public static let ackTimeout = Code(.ackTimeout)
        /// The connection was lost and could not be recovered or re-established before the operation's time ran out.
        public static let connectionLost = Code(.connectionLost)
        /// The client stopped (closed, or gave up reconnecting) while the operation was pending.
        public static let stopped = Code(.stopped)
        /// Another pending operation of this client already uses this ack id.
        public static let ackIDInUse = Code(.ackIDInUse)
        /// The service's upstream answered an invocation with an error.
        public static let invocationFailed = Code(.invocationFailed)
        /// No invocation response came in time.
        public static let invocationTimedOut = Code(.invocationTimedOut)
        /// The invocation was cancelled with ``WebPubSubClient/cancelInvocation(_:)``.
        public static let invocationCancelled = Code(.invocationCancelled)
        /// A connection string given to ``WebPubSubClientCredential`` is malformed; the message names the
        /// missing or bad part (`Endpoint`, `AccessKey`, `Port`) and never repeats the access key.
        public static let invalidConnectionString = Code(.invalidConnectionString)

        /// The encoded message is larger than ``WebPubSubClientOptions/maximumOutgoingMessageSize``
        /// (the service closes a connection that sends more than 1 MiB). Nothing was sent; not transient.
        public static let messageTooLarge = Code(.messageTooLarge)
        /// The operation was cancelled (its task was cancelled, or its ``OperationHandle`` was).
        /// If it had been sent, the service may still carry it out; retrying with the same ack id is safe.
        public static let cancelled = Code(.cancelled)
        /// The operation's own deadline (`timeout:`) passed before the service acknowledged it.
        public static let timedOut = Code(.timedOut)

        /// The code's name.
        public var description: String { String(describing: base) }
    }

    /// What went wrong.
    public let code: Code
    /// A human-readable explanation.
    public let message: String
    /// The ack id of the operation, when it had one.
    public let ackID: UInt64?
    /// The invocation id, for errors of `invokeEvent(_:_:invocationID:timeout:)`.
    public let invocationID: String?
    /// The error name the service sent (`ack.error.name`, e.g. `"Forbidden"`), when it sent one.
    public let errorName: String?
    /// The error message the service sent, when it sent one.
    public let errorMessage: String?
    /// The transport's typed error, when the socket failed (for `.openFailed` and `.connectionLost`):
    /// for a rejected upgrade its `httpStatus`, `httpHeaders` and `httpBodyText`; for TLS its
    /// `verifyResult`; for DNS and TCP its `errno`.
    public let webSocketError: WebSocketError?
    /// The error a credential threw, for `.openFailed`.
    public let underlyingError: (any Error & Sendable)?

    /// Creates an error, for tests and mocks; it equals every error with the same ``code``.
    public init(_ code: Code, message: String, ackID: UInt64? = nil) {
        self.init(code, message, ackID: ackID)
    }

    init(
        _ code: Code, _ message: String, ackID: UInt64? = nil, invocationID: String? = nil,
        errorName: String? = nil, errorMessage: String? = nil, webSocketError: WebSocketError? = nil,
        underlyingError: (any Error & Sendable)? = nil
    ) {
        self.code = code
        self.message = message
        self.ackID = ackID
        self.invocationID = invocationID
        self.errorName = errorName
        self.errorMessage = errorMessage
        self.webSocketError = webSocketError
        self.underlyingError = underlyingError
    }

    /// The HTTP status of a rejected upgrade (e.g. 401), when the service answered one.
    public var httpStatus: Int? { webSocketError?.httpStatus }

    /// Equal when the codes are equal (the message text and details do not count).
    public static func == (lhs: WebPubSubError, rhs: WebPubSubError) -> Bool { lhs.code == rhs.code }

    /// Hashes the code.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// Whether retrying the same operation (with the same ack id) may succeed: ack time-outs,
    /// lost connections and the service's transient errors. Never `Forbidden` or bad arguments.
    public var isTransient: Bool {
        switch code.base {
        case .ackTimeout, .connectionLost: return true
        case .serviceError: return ProtocolRules.transientServiceErrors.contains(errorName ?? "")
        default: return false
        }
    }

    func withAckID(_ id: UInt64?) -> WebPubSubError {
        WebPubSubError(code, message, ackID: id ?? ackID, invocationID: invocationID, errorName: errorName,
                       errorMessage: errorMessage, webSocketError: webSocketError, underlyingError: underlyingError)
    }

    func withInvocationID(_ id: String) -> WebPubSubError {
        WebPubSubError(code, message, ackID: ackID, invocationID: id, errorName: errorName,
                       errorMessage: errorMessage, webSocketError: webSocketError, underlyingError: underlyingError)
    }

    /// The code, message, ack id and the service's error name.
    public var description: String {
        var s = "WebPubSubError.\(code): \(message)"
        if let ackID { s += " (ackId \(ackID))" }
        if let invocationID { s += " (invocationId \(invocationID))" }
        if let errorName { s += " [\(errorName)\(errorMessage.map { ": \($0)" } ?? "")]" }
        return s
    }
}
