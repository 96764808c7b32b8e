import Dispatch
import Foundation
import Logging

//===----------------------------------------------------------------------===//
// The client's view of a WebSocket: the few calls and events it needs. The
// real one wraps `WebSocketConnection` (WebSocketTransport.swift); unit tests
// plug in a scripted one.
//===----------------------------------------------------------------------===//

/// What the client needs to open a socket.
struct TransportRequest: Sendable {
    var url: URL
    var subprotocol: String
    var userAgent: String
    var maximumMessageSize: Int
    var connectTimeout: TimeInterval
    var tls: TransportTLS
}

/// The events of one socket. Every one runs on the client's queue; `onClose` exactly once.
struct TransportEvents: Sendable {
    var onOpen: @Sendable () -> Void
    var onText: @Sendable (String) -> Void
    var onBinary: @Sendable (Int) -> Void
    var onClose: @Sendable (_ code: UInt16, _ reason: String, _ error: String?) -> Void
}

/// One socket, used only on the client's queue.
protocol ClientTransport: AnyObject, Sendable {
    func start(_ events: TransportEvents)
    /// Queues a text message; false when it could not be (closed, or the output buffer is full).
    @discardableResult func send(text: String) -> Bool
    /// Starts a normal close (1000).
    func close()
    /// Drops the connection now, without a close frame.
    func abort()
}

/// Makes sockets; every handler of the socket runs on `queue`.
typealias TransportFactory = @Sendable (TransportRequest, DispatchQueue, Logger) -> any ClientTransport

/// Blocks a caller until a value arrives (used by the blocking public calls).
final class Waiter<Value: Sendable>: @unchecked Sendable {  // `value` is guarded by `condition`
    private let condition = NSCondition()
    private var value: Value?

    func fulfill(_ v: Value) {
        condition.lock()
        if value == nil { value = v }
        condition.signal()
        condition.unlock()
    }

    func wait() -> Value {
        condition.lock()
        defer { condition.unlock() }
        while value == nil { condition.wait() }
        return value!
    }

    func wait(timeout: TimeInterval) -> Value? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while value == nil {
            if !condition.wait(until: deadline) { break }
        }
        return value
    }
}

/// A URL for logs: scheme, host, port and path; the query (which holds the access token) is never shown.
func redacted(_ url: URL) -> String {
    guard var c = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return "<url>" }
    let hadQuery = c.query != nil
    c.query = nil
    c.fragment = nil
    c.user = nil
    c.password = nil
    return (c.string ?? "<url>") + (hadQuery ? "?<redacted>" : "")
}

/// The recovery URL: the client access URL plus `awps_connection_id` and `awps_reconnection_token`.
func recoveryURL(from url: URL, connectionID: String, reconnectionToken: String) -> URL? {
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
func strictPercentEncoded(_ s: String) -> String {
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
