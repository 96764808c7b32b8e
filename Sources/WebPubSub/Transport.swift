import Dispatch
import Foundation
import Logging
import WebSocket

//===----------------------------------------------------------------------===//
// The client's view of a WebSocket: the few calls and events it needs. The
// real one wraps `WebSocketConnection` (WebSocketTransport.swift). The close
// report crosses the seam typed: the state machine and the errors keep it.
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
    var onClose: @Sendable (WebSocketCloseReport) -> Void
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
    /// Stops reading (inbound backpressure) until ``resumeReading()``.
    func pauseReading()
    func resumeReading()
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
        condition.unlock()
        condition.signal()
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

/// A URL for logs (the query, which holds the access token, is never shown).
func redacted(_ url: URL) -> String { ProtocolRules.redacted(url) }
