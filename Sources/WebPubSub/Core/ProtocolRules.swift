import Foundation

//===----------------------------------------------------------------------===//
// The protocol's rules, in one place (Docs/Client.md, "Where each rule lives"):
// recover or reconnect, the recovery URL, which service errors are transient,
// `Duplicate` as success, argument validation, the outgoing size limit.
// Sequence-id acceptance lives beside its state in SequenceTracker.swift.
//===----------------------------------------------------------------------===//

enum ProtocolRules {
    /// What to do when the socket of a live (or recovering) session closed.
    enum LossDecision: Equatable, Sendable {
        /// Open the same session again on a new socket (reliable protocol).
        case recover
        /// The session is gone: report `disconnected`, then open a new connection.
        case reconnect
        /// The session is gone and no new connection is wanted: report and stop.
        case stop
    }

    /// Close code 1008 (policy violation): the service will not take this session back (it expired,
    /// its buffer overflowed, or the token is no longer valid).
    static let sessionEndedCloseCode: UInt16 = 1008

    /// The decision table for a lost socket:
    ///
    /// | protocol | has connection id and token | close code | auto-reconnect | decision |
    /// |---|---|---|---|---|
    /// | reliable | yes | not 1008 | any | recover |
    /// | reliable | yes | 1008 | yes / no | reconnect / stop |
    /// | reliable | no | any | yes / no | reconnect / stop |
    /// | plain JSON | — | any | yes / no | reconnect / stop |
    static func afterLoss(reliable: Bool, canResume: Bool, closeCode: UInt16, autoReconnect: Bool) -> LossDecision {
        if reliable && canResume && closeCode != sessionEndedCloseCode { return .recover }
        return autoReconnect ? .reconnect : .stop
    }

    /// Whether a failed recovery *attempt* ends recovery at once: the service answered 1008
    /// (the session cannot be recovered), so waiting for the window is pointless.
    static func recoveryAttemptEndsRecovery(closeCode: UInt16) -> Bool {
        closeCode == sessionEndedCloseCode
    }

    /// Service error names that mean "try again with the same ack id".
    static let transientServiceErrors: Set<String> = ["InternalServerError", "Timeout", "ServiceUnavailable"]

    /// The service's answer to a request that it already processed: counts as success.
    static let duplicateErrorName = "Duplicate"

    /// The service's limit on one message (1 MiB); larger frames make it close the connection.
    static let serviceMessageLimit = 1 << 20

    /// The longest group name the service takes, in UTF-8 bytes.
    static let maximumGroupNameLength = 1024

    /// Checks a group name (nothing is sent when it is bad).
    static func check(group: String) -> WebPubSubError? {
        if group.isEmpty { return WebPubSubError(.invalidArgument, "the group name is empty") }
        if group.utf8.count > maximumGroupNameLength {
            return WebPubSubError(.invalidArgument, "the group name is longer than \(maximumGroupNameLength) bytes")
        }
        return nil
    }

    /// Checks an event name.
    static func check(event: String) -> WebPubSubError? {
        event.isEmpty ? WebPubSubError(.invalidArgument, "the event name is empty") : nil
    }

    /// Checks an encoded frame against the outgoing limit.
    static func check(frameBytes: Int, limit: Int) -> WebPubSubError? {
        guard frameBytes > limit else { return nil }
        return WebPubSubError(
            .messageTooLarge, "the message is \(frameBytes) bytes on the wire, more than the limit of \(limit) bytes")
    }

    /// The recovery URL: the client access URL plus `awps_connection_id` and `awps_reconnection_token`.
    static func recoveryURL(from url: URL, connectionID: String, reconnectionToken: String) -> URL? {
        guard var c = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return nil }
        var items = (c.percentEncodedQueryItems ?? []).filter {
            $0.name != "awps_connection_id" && $0.name != "awps_reconnection_token"
        }
        items.append(URLQueryItem(name: "awps_connection_id", value: strictPercentEncoded(connectionID)))
        items.append(URLQueryItem(name: "awps_reconnection_token", value: strictPercentEncoded(reconnectionToken)))
        c.percentEncodedQueryItems = items
        return c.url
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters (so `+`, `/`, `=` survive any server).
    static func strictPercentEncoded(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    /// A URL for logs: scheme, host, port and path; the query (which holds the access token) is never shown.
    static func redacted(_ url: URL) -> String {
        guard var c = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return "<url>" }
        let hadQuery = c.query != nil
        c.query = nil
        c.fragment = nil
        c.user = nil
        c.password = nil
        return (c.string ?? "<url>") + (hadQuery ? "?<redacted>" : "")
    }
}
