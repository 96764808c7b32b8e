import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 client for upstream calls: one request per connection (`Connection: close`), plain http only.
struct MiniHTTPClient: Sendable {
    struct Response: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
    }

    struct ClientError: Error, CustomStringConvertible {
        var description: String
    }

    let group: any EventLoopGroup
    var maxBodySize = 16 * 1024 * 1024

    /// Splits `http://host[:port]/path?query` into its parts.
    static func parse(_ url: String) -> (host: String, port: Int, target: String)? {
        guard url.lowercased().hasPrefix("http://") else { return nil }
        let rest = url.dropFirst(7)
        let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<slash]
        var target = String(rest[slash...])
        if target.isEmpty { target = "/" } else if target.hasPrefix("?") { target = "/" + target }
        var host = String(authority), port = 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { guard let p = Int(after.dropFirst()) else { return nil }; port = p }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]) else { return nil }
            port = p
        }
        guard !host.isEmpty else { return nil }
        return (host, port, target)
    }

    func request(method: HTTPMethod, url: String, headers: [(String, String)], body: [UInt8],
                 timeout: TimeAmount) -> EventLoopFuture<Response> {
        let loop = group.next()
        guard let (host, port, target) = Self.parse(url) else {
            return loop.makeFailedFuture(ClientError(description: "unsupported URL \(url)"))
        }
        let promise = loop.makePromise(of: Response.self)
        let maxBody = maxBodySize
        let timeoutTask = loop.scheduleTask(in: timeout) {
            promise.fail(ClientError(description: "timed out after \(timeout)"))
        }
        ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(Collector(promise: promise, maxBody: maxBody))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    promise.fail(error)
                case .success(let channel):
                    var h = HTTPHeaders()
                    h.add(name: "Host", value: port == 80 ? host : "\(host):\(port)")
                    h.add(name: "Connection", value: "close")
                    h.add(name: "Content-Length", value: String(body.count))
                    for (k, v) in headers { h.add(name: k, value: v) }
                    let head = HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: h)
                    channel.write(HTTPClientRequestPart.head(head), promise: nil)
                    if !body.isEmpty {
                        channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
                    }
                    channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                }
            }
        promise.futureResult.whenComplete { _ in timeoutTask.cancel() }
        return promise.futureResult
    }

    /// Collects one response. Confined to its channel's event loop.
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Response>
        let maxBody: Int
        var head: HTTPResponseHead?
        var body: [UInt8] = []

        init(promise: EventLoopPromise<Response>, maxBody: Int) {
            self.promise = promise
            self.maxBody = maxBody
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body(var b):
                if body.count + b.readableBytes > maxBody {
                    promise.fail(ClientError(description: "response too large"))
                    context.close(promise: nil)
                    return
                }
                body += b.readBytes(length: b.readableBytes) ?? []
            case .end:
                if let head {
                    promise.succeed(Response(status: Int(head.status.code), headers: head.headers, body: body))
                } else {
                    promise.fail(ClientError(description: "no response head"))
                }
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ClientError(description: "connection closed before the response ended"))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
