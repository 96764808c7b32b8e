import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// An HTTP response built by the router.
struct HTTPResult {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body: [UInt8] = []

    static func json(_ status: HTTPResponseStatus, _ text: String) -> HTTPResult {
        HTTPResult(status: status, headers: [("Content-Type", "application/json")], body: Array(text.utf8))
    }

    /// An `ErrorDetail` body with `x-ms-error-code`.
    static func error(_ status: HTTPResponseStatus, _ code: String, _ message: String) -> HTTPResult {
        HTTPResult(status: status, headers: [("Content-Type", "application/json"), ("x-ms-error-code", code)],
                   body: Array("{\"code\":\(JSONScanner.quoted(code)),\"message\":\(JSONScanner.quoted(message))}".utf8))
    }
}

/// Serves plain HTTP requests (REST, hooks, refused upgrades) on one socket. Confined to its channel's loop.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let server: WebPubSubEmulator
    let box: UpgradeBox
    /// The socket is a TLS one (for `https` in minted URLs).
    let secure: Bool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    static let maxBody = 16 * 1024 * 1024

    init(server: WebPubSubEmulator, box: UpgradeBox, secure: Bool = false) {
        self.server = server
        self.box = box
        self.secure = secure
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.removeAll(keepingCapacity: true)
            tooLarge = false
            // The body must follow within the header time-out too.
            box.arm(context.channel, after: server.configuration.headerTimeout, server: server, what: "request body")
        case .body(let b):
            if body.count + b.readableBytes > Self.maxBody { tooLarge = true } else { body += b.readableBytesView }
        case .end:
            box.disarm()
            guard let head else { return }
            self.head = nil
            let result: HTTPResult
            if tooLarge {
                result = .error(.payloadTooLarge, "PayloadTooLarge", "The request body is too large.")
            } else {
                result = respond(head)
            }
            write(context, head, result)
        }
    }

    private func respond(_ head: HTTPRequestHead) -> HTTPResult {
        var target = RequestTarget(head.uri)
        target.secure = secure
        if case .some = WebPubSubEmulator.clientHub(target) {
            // A client-endpoint request that was not upgraded.
            defer { box.decision = .none }
            if case .reject(let status, let message) = box.decision {
                return .error(status, status == .unauthorized ? "Unauthorized" : "BadRequest", message)
            }
            server.state.countBadRequest()
            server.configuration.logger.warning("non-WebSocket request to the client endpoint", metadata: ["uri": "\(target.path)"])
            return .error(.badRequest, "BadRequest", "A WebSocket upgrade request is required.")
        }
        return server.route(head, target, body)
    }

    private func write(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ result: HTTPResult) {
        var headers = HTTPHeaders()
        for (k, v) in result.headers { headers.add(name: k, value: v) }
        headers.replaceOrAdd(name: "Content-Length", value: String(result.body.count))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: result.status, headers: headers))),
                      promise: nil)
        if request.method != .HEAD && !result.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: result.body)))), promise: nil)
        }
        let channel = context.channel
        let box = self.box, server = self.server
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive {
                channel.close(promise: nil)
            } else if channel.isActive {
                box.arm(channel, after: server.configuration.idleTimeout, server: server, what: "new request (idle)")
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused upgrade arrives here first; the request itself follows and gets its status.
        if error is NIOWebSocketUpgradeError { return }
        server.configuration.logger.debug("HTTP error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
