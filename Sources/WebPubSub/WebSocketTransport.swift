import Dispatch
import Foundation
import Logging
import WebSocket

/// TLS options for `wss://` URLs (peer verification, extra CA file, server name).
public typealias WebPubSubTLSConfiguration = WebSocketConfiguration.TLSConfiguration

typealias TransportTLS = WebPubSubTLSConfiguration

/// The client's transport on our RFC 6455 `WebSocketConnection`, sharing the client's queue.
final class WebSocketTransport: ClientTransport, @unchecked Sendable {  // immutable; `connection` is thread-safe
    private let connection: WebSocketConnection
    private let queue: DispatchQueue

    static let factory: TransportFactory = { request, queue, logger in
        WebSocketTransport(request, queue: queue, logger: logger)
    }

    init(_ request: TransportRequest, queue: DispatchQueue, logger: Logger) {
        var configuration = WebSocketConfiguration()
        configuration.subprotocols = [request.subprotocol]
        configuration.userAgent = request.userAgent
        configuration.maximumMessageSize = request.maximumMessageSize
        configuration.connectTimeout = request.connectTimeout
        configuration.tls = request.tls
        self.queue = queue
        self.connection = WebSocketConnection(url: request.url, configuration: configuration, queue: queue, logger: logger)
    }

    func start(_ events: TransportEvents) {
        let queue = self.queue
        connection.connect(handlers: WebSocketHandlers(
            onOpen: { _ in events.onOpen() },
            onMessage: { message in
                switch message {
                case .text(let text): events.onText(text)
                case .binary(let bytes): events.onBinary(bytes.count)
                }
            },
            onPong: { _ in },
            onClose: { report in
                // Deferred: a close found while the client writes must not re-enter the client.
                queue.async { events.onClose(report) }
            }))
    }

    func send(text: String) -> Bool { connection.send(text: text) }

    /// `WebSocketConnection.send` takes any thread: it reserves the bytes in the output buffer on the
    /// caller's thread (refusing beyond the limit) and writes on the shared queue, in call order.
    func sendFromAnyThread(text: String) -> Bool? { connection.send(text: text) }

    func close() { connection.close(code: .normalClosure, reason: "") }

    func abort() { connection.abort() }

    func pauseReading() { connection.pauseReading() }

    func resumeReading() { connection.resumeReading() }
}
