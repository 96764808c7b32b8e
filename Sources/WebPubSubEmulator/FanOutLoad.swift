import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A loopback fan-out load generator: N receivers in one group, one publisher sending M fire-and-forget
/// `sendToGroup` messages; measures messages delivered per second. Its clients are SwiftNIO WebSocket clients,
/// so the figure reflects the emulator rather than a slow client. Used by `webpubsub-emulator load`.
public enum FanOutLoad {
    /// What to run.
    public struct Options: Sendable {
        /// Receivers in the group.
        public var receivers = 100
        /// Messages published.
        public var messages = 2000
        /// Payload bytes of each text message.
        public var payloadSize = 64
        /// Receivers use `json.reliable.webpubsub.azure.v1` (and send sequenceAcks) instead of `json.webpubsub.azure.v1`.
        public var reliable = true
        /// Client event-loop threads.
        public var clientThreads = 1
        /// Give up after this long.
        public var timeout: TimeInterval = 120
        /// Creates the defaults.
        public init() {}
    }

    /// What was measured.
    public struct Result: Sendable, CustomStringConvertible {
        /// Receivers in the group.
        public var receivers: Int
        /// Messages the publisher sent.
        public var messagesPublished: Int
        /// Messages counted by all receivers together.
        public var delivered: Int
        /// From the first publish to the last delivery.
        public var seconds: Double
        /// Delivered messages per second, over all receivers.
        public var deliveredPerSecond: Double { seconds > 0 ? Double(delivered) / seconds : 0 }
        /// Whether every receiver got every message.
        public var complete: Bool { delivered == receivers * messagesPublished }

        /// One line: counts, seconds and rate.
        public var description: String {
            String(format: "receivers=%d published=%d delivered=%d seconds=%.3f rate=%.0f msg/s%@", receivers,
                   messagesPublished, delivered, seconds, deliveredPerSecond, complete ? "" : " (INCOMPLETE)")
        }
    }

    struct LoadError: Error, CustomStringConvertible { var description: String }

    /// Shared progress (guarded by its own lock).
    final class Progress: Sendable {
        struct State {
            var delivered = 0
            var remainingReceivers = 0
            var lastDelivery = Date()
        }
        let state = NIOLockedValueBox(State())
        let done: EventLoopPromise<Void>
        init(receivers: Int, done: EventLoopPromise<Void>) {
            self.done = done
            state.withLockedValue { $0.remainingReceivers = receivers }
        }
        func add(_ n: Int, finished: Bool) {
            let allDone: Bool = state.withLockedValue {
                $0.delivered += n
                $0.lastDelivery = Date()
                if finished { $0.remainingReceivers -= 1 }
                return $0.remainingReceivers == 0
            }
            if allDone { done.succeed() }
        }
    }

    /// Runs the load against a running emulator at `endpoint` (`http://host:port`).
    public static func run(endpoint: String, accessKey: String, options: Options) throws -> Result {
        guard let url = URL(string: endpoint), let host = url.host, let port = url.port else {
            throw LoadError(description: "bad endpoint \(endpoint)")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.clientThreads))
        defer { try? group.syncShutdownGracefully() }
        let hub = "load" + Crypto.hex(Crypto.randomBytes(3))
        let done = group.next().makePromise(of: Void.self)
        let progress = Progress(receivers: options.receivers, done: done)
        var channels: [any Channel] = []
        defer { for c in channels { c.close(promise: nil) } }

        func connect(roles: [String], groups: [String], subprotocol: String, expected: Int)
            throws -> (any Channel, EventLoopFuture<Void>)
        {
            let token = AccessTokenCodec(accessKey: accessKey).sign(AccessTokenClaims(
                audience: "\(endpoint.lowercased())/client/hubs/\(hub)", expires: Int(Date().timeIntervalSince1970) + 3600,
                roles: roles, groups: groups))
            let loop = group.next()
            let connected = loop.makePromise(of: Void.self)
            let reliable = subprotocol == ClientProtocolKind.reliable.rawValue
            let channel = try ClientBootstrap(group: loop)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let upgrader = NIOWebSocketClientUpgrader(
                            maxFrameSize: 1 << 20, automaticErrorHandling: false,
                            upgradePipelineHandler: { ch, _ in
                                ch.eventLoop.makeCompletedFuture {
                                    try ch.pipeline.syncOperations.addHandler(LoadClientHandler(
                                        connected: connected, progress: progress, expected: expected, reliable: reliable))
                                }
                            })
                        // The service's first frame often shares a segment with the 101: keep those bytes.
                        try channel.pipeline.syncOperations.addHTTPClientHandlers(
                            leftOverBytesStrategy: .forwardBytes, withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                        try channel.pipeline.syncOperations.addHandler(UpgradeRequester(
                            target: "/client/hubs/\(hub)?access_token=\(token)", host: "\(host):\(port)", subprotocol: subprotocol))
                    }
                }
                .connect(host: host, port: port).wait()
            return (channel, connected.futureResult)
        }

        let sub = options.reliable ? ClientProtocolKind.reliable.rawValue : ClientProtocolKind.json.rawValue
        var ready: [EventLoopFuture<Void>] = []
        for _ in 0..<options.receivers {
            let (c, f) = try connect(roles: [], groups: ["load"], subprotocol: sub, expected: options.messages)
            channels.append(c)
            ready.append(f)
        }
        let (publisher, publisherReady) = try connect(roles: ["webpubsub.sendToGroup"], groups: [],
                                                      subprotocol: ClientProtocolKind.json.rawValue, expected: -1)
        channels.append(publisher)
        ready.append(publisherReady)
        try EventLoopFuture.andAllSucceed(ready, on: group.next()).wait()

        let payload = String(repeating: "x", count: max(0, options.payloadSize))
        let frameText = #"{"type":"sendToGroup","group":"load","dataType":"text","data":"\#(payload)","noEcho":true}"#
        let start = Date()
        let messages = options.messages
        try publisher.eventLoop.submit {
            let buffer = publisher.allocator.buffer(string: frameText)
            for i in 0..<messages {
                publisher.write(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer), promise: nil)
                if i % 64 == 63 { publisher.flush() }
            }
            publisher.flush()
        }.wait()
        let timeout = group.next().scheduleTask(in: .milliseconds(Int64(options.timeout * 1000))) {
            done.fail(LoadError(description: "timed out"))
        }
        _ = try? done.futureResult.wait()
        timeout.cancel()
        let state = progress.state.withLockedValue { $0 }
        return Result(receivers: options.receivers, messagesPublished: options.messages, delivered: state.delivered,
                      seconds: state.lastDelivery.timeIntervalSince(start))
    }

    /// Sends the upgrade request when the socket opens. Reads pass through untouched.
    final class UpgradeRequester: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundOut = HTTPClientRequestPart
        let target: String, host: String, subprotocol: String
        init(target: String, host: String, subprotocol: String) {
            self.target = target
            self.host = host
            self.subprotocol = subprotocol
        }
        func channelActive(context: ChannelHandlerContext) {
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: host)
            headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
            headers.add(name: "Content-Length", value: "0")
            context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers))),
                          promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            context.fireChannelActive()
        }
    }

    /// Counts data messages on one receiver; acks reliable sequence ids. Confined to its channel's loop.
    final class LoadClientHandler: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        typealias OutboundOut = WebSocketFrame
        let connected: EventLoopPromise<Void>
        let progress: Progress
        let expected: Int
        let reliable: Bool
        var sawConnected = false
        var count = 0
        var reported = 0

        init(connected: EventLoopPromise<Void>, progress: Progress, expected: Int, reliable: Bool) {
            self.connected = connected
            self.progress = progress
            self.expected = expected
            self.reliable = reliable
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            switch frame.opcode {
            case .text:
                guard sawConnected else {
                    sawConnected = true
                    connected.succeed()
                    return
                }
                guard expected > 0 else { return }  // the publisher ignores what it gets
                count += 1
                if reliable && (count % 100 == 0 || count == expected) {
                    // Every message here is a data message, so the sequence id equals the count.
                    let ack = context.channel.allocator.buffer(string: #"{"type":"sequenceAck","sequenceId":\#(count)}"#)
                    context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ack)),
                                          promise: nil)
                }
                if count == expected || count - reported >= 500 {
                    progress.add(count - reported, finished: count == expected)
                    reported = count
                }
            case .ping:
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(),
                                                                     data: frame.data)), promise: nil)
            default:
                break
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            connected.fail(LoadError(description: "connection closed before connected"))
        }
    }
}
