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
    /// Queues a text message from any thread, behind everything the client's queue runs before it;
    /// false when the output buffer is full; nil when this transport cannot be used off the queue.
    func sendFromAnyThread(text: String) -> Bool?
    /// Starts a normal close (1000).
    func close()
    /// Drops the connection now, without a close frame.
    func abort()
    /// Stops reading (inbound backpressure) until ``resumeReading()``.
    func pauseReading()
    func resumeReading()
}

extension ClientTransport {
    func sendFromAnyThread(text: String) -> Bool? { nil }
}

/// Makes sockets; every handler of the socket runs on `queue`.
typealias TransportFactory = @Sendable (TransportRequest, DispatchQueue, Logger) -> any ClientTransport

/// Where a blocked caller sleeps: one semaphore, reused call after call. The completing side stores the
/// result and then signals, holding no lock, so the caller wakes once and runs (a condition variable
/// signalled under its mutex wakes the caller only for it to sleep again on that mutex). Dispatch's
/// semaphore is a futex: no system call when the result is already there.
final class Parker: Sendable {
    let semaphore = DispatchSemaphore(value: 0)

    /// Parkers not in use. A parker goes back only after a wait that consumed its signal, so each one
    /// in the pool is at zero.
    private static let pool = LockedValue<[Parker]>([])

    static func take() -> Parker { pool.withLock { $0.popLast() } ?? Parker() }

    static func give(_ parker: Parker) {
        pool.modify { if $0.count < 64 { $0.append(parker) } }
    }
}

/// The result slot of one blocking call, on the caller's stack. Written once, by the completion (which
/// the client calls exactly once: its completion tables are emptied as they are called), before the
/// parker's signal; read by the caller after its wait returns.
struct ResultSlot<Value>: @unchecked Sendable {  // guarded by the parker's semaphore: write, signal, wait, read
    let pointer: UnsafeMutablePointer<Value?>
    let parker: Parker

    func fulfill(_ value: Value) {
        pointer.pointee = value
        parker.semaphore.signal()
    }
}

/// Blocks a caller until a value arrives, with a time limit (``WebPubSubClient/close()``); rare, so a
/// fresh object per call.
final class Waiter<Value: Sendable>: @unchecked Sendable {  // `value` is guarded by `condition`
    private let condition = NSCondition()
    private var value: Value?

    func fulfill(_ v: Value) {
        condition.lock()
        if value == nil { value = v }
        condition.unlock()
        condition.signal()
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
