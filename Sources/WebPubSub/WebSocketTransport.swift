// Pre-merge stand-in for the transport adapter (replaced when the WebSocket module lands).
public struct WebPubSubTLSConfiguration: Sendable { public init() {} }
typealias TransportTLS = WebPubSubTLSConfiguration
enum WebSocketTransport {
    static let factory: TransportFactory = { _, _, _ in fatalError("the WebSocket transport has not landed yet") }
}
