import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A local Azure Web PubSub service on SwiftNIO: the client WebSocket endpoint (both JSON subprotocols and plain
/// WebSocket clients), the data-plane REST API, upstream CloudEvents, and test hooks under `/_emulator/`.
///
/// Use it inside a test process (port 0, then read ``port``) or through the `webpubsub-emulator` executable.
///
/// `Sendable`: the configuration is immutable, hub state is guarded by a lock inside `ServiceState`, and the
/// running server (loop group, listener) sits in a `NIOLockedValueBox`.
public final class WebPubSubEmulator: Sendable {
    /// The settings the emulator was created with.
    public let configuration: Configuration
    let state: ServiceState

    struct Runtime: Sendable {
        var group: MultiThreadedEventLoopGroup
        var listener: any Channel
        var port: Int
        /// The TLS listener beside the plain one (``Configuration/TLS/port`` set).
        var tlsListener: (any Channel)?
        var tlsPort: Int?
    }
    private let runtime = NIOLockedValueBox<Runtime?>(nil)
    /// Sockets open now (HTTP and WebSocket), checked against ``Configuration/maxConnections``.
    private let openSockets = NIOLockedValueBox<Int>(0)
    /// The connection cap in force (resolved at ``start()``).
    private let connectionCap = NIOLockedValueBox<Int>(Int.max)

    /// How the `/_emulator/` hooks are served, from ``Configuration/testHooks`` and the bind address.
    enum HookAccess { case open, keyed, off }
    var hookAccess: HookAccess {
        switch configuration.testHooks {
        case .disabled: return .off
        case .automatic: return Self.isLoopback(configuration.host) ? .open : .off
        case .enabled: return Self.isLoopback(configuration.host) ? .open : .keyed
        }
    }

    /// Creates an emulator; nothing is bound until ``start()``.
    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        self.state = ServiceState(configuration: configuration)
    }

    /// Binds the listener (or both listeners, see ``Configuration/TLS``). ``port`` is valid afterwards.
    ///
    /// Throws ``TLSSetupError`` naming the file when a TLS certificate or key is missing, unreadable or invalid.
    public func start() throws {
        let tls = try configuration.tls.map { tls throws(TLSSetupError) in
            try TLSServerContext(certificateFile: tls.certificateFile, privateKeyFile: tls.privateKeyFile)
        }
        try runtime.withLockedValue { rt in
            precondition(rt == nil, "WebPubSubEmulator.start() called twice")
            let cap = configuration.maxConnections ?? Self.descriptorBudget()
            connectionCap.withLockedValue { $0 = max(1, cap) }
            let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
            let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            state.timerLoop = group.next()
            state.upstream = configuration.eventHandlers.isEmpty ? nil : Upstream(
                handlers: configuration.eventHandlers, group: group, accessKey: configuration.accessKey,
                origin: Self.urlHost(configuration.host), timeout: configuration.eventHandlerTimeout,
                logger: configuration.logger, state: state)
            let server = self
            func bootstrap(_ tls: TLSServerContext?) -> ServerBootstrap {
                ServerBootstrap(group: group)
                    .serverChannelOption(ChannelOptions.backlog, value: 1024)
                    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                    .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try server.initialize(channel, tls: tls) }
                    }
            }
            var bound: [any Channel] = []
            do {
                // TLS only (no TLS port), or plain on `port` and TLS on the TLS port.
                let tlsBeside = configuration.tls?.port
                let listener = try bootstrap(tlsBeside == nil ? tls : nil).bind(host: configuration.host, port: configuration.port).wait()
                bound.append(listener)
                let port = listener.localAddress?.port ?? configuration.port
                var runtime = Runtime(group: group, listener: listener, port: port)
                if let tlsBeside, let tls {
                    let tlsListener = try bootstrap(tls).bind(host: configuration.host, port: tlsBeside).wait()
                    bound.append(tlsListener)
                    runtime.tlsListener = tlsListener
                    runtime.tlsPort = tlsListener.localAddress?.port ?? tlsBeside
                } else if tls != nil {
                    runtime.tlsPort = port
                }
                rt = runtime
                logStart(runtime)
                configuration.logger.info("limits", metadata: [
                    "maxConnections": "\(max(1, cap))", "testHooks": "\(hookAccess)"])
            } catch {
                for channel in bound { try? channel.close().wait() }
                try? group.syncShutdownGracefully()
                throw error
            }
        }
    }

    /// Closes every connection (close frame 1001) and the listener, and stops the event loops.
    /// Do not call it from one of the emulator's own event loops.
    public func stop() {
        guard let rt = runtime.withLockedValue({ rt -> Runtime? in defer { rt = nil }; return rt }) else { return }
        state.closeEverything()
        try? rt.listener.close().wait()
        try? rt.tlsListener?.close().wait()
        // Let close frames go out, then stop.
        Thread.sleep(forTimeInterval: 0.05)
        try? rt.group.syncShutdownGracefully()
        configuration.logger.info("stopped")
    }

    deinit {
        if let rt = runtime.withLockedValue({ $0 }) { try? rt.group.syncShutdownGracefully() }
    }

    /// The bound port (the configured one before ``start()``): the plain listener's, or the TLS listener's when
    /// it is the only one.
    public var port: Int { runtime.withLockedValue { $0?.port } ?? configuration.port }

    /// The TLS listener's port once started with ``Configuration/tls`` (the same as ``port`` without a TLS port).
    public var tlsPort: Int? { runtime.withLockedValue { $0?.tlsPort } }

    /// `https://HOST:TLSPORT` with TLS, else `http://HOST:PORT`.
    public var endpoint: String {
        if let tlsPort { return Self.endpoint(configuration.host, tlsPort, secure: true) }
        return Self.endpoint(configuration.host, port, secure: configuration.tls != nil && configuration.tls?.port == nil)
    }

    /// `http://HOST:PORT` when there is a plain listener (no TLS, or TLS on a port of its own), else nil.
    public var plainEndpoint: String? {
        guard configuration.tls == nil || configuration.tls?.port != nil else { return nil }
        return Self.endpoint(configuration.host, port)
    }

    /// `Endpoint=http(s)://HOST:PORT;AccessKey=...;Version=1.0;` (the TLS endpoint when there is one).
    public var connectionString: String { "Endpoint=\(endpoint);AccessKey=\(configuration.accessKey);Version=1.0;" }

    /// A client access URL `ws(s)://HOST:PORT/client/hubs/HUB?access_token=...` signed with the access key.
    public func clientAccessURL(hub: String, userID: String? = nil, roles: [String] = [], groups: [String] = [],
                                expiresIn: TimeInterval = 3600) -> URL {
        URL(string: Self.clientAccessURL(endpoint: endpoint, accessKey: configuration.accessKey, hub: hub,
                                         userID: userID, roles: roles, groups: groups, expiresIn: expiresIn))!
    }

    /// A client access URL for any endpoint and key (what `get_client_access_token` builds).
    public static func clientAccessURL(endpoint: String, accessKey: String, hub: String, userID: String? = nil,
                                       roles: [String] = [], groups: [String] = [], expiresIn: TimeInterval = 3600) -> String {
        var base = endpoint
        while base.hasSuffix("/") { base.removeLast() }
        let now = Int(Date().timeIntervalSince1970)
        let token = AccessTokenCodec(accessKey: accessKey).sign(AccessTokenClaims(
            audience: base.lowercased() + "/client/hubs/" + hub, expires: now + Int(expiresIn), issuedAt: now,
            userID: userID, roles: roles, groups: groups))
        let ws = base.hasPrefix("https://") ? "wss://" + base.dropFirst(8) : "ws://" + base.dropFirst(7)
        let escapedHub = hub.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? hub
        return "\(ws)/client/hubs/\(escapedHub)?access_token=\(token)"
    }

    /// The stats counters as JSON (the body of `GET /_emulator/stats`).
    public func statsJSON() -> String { state.statsJSON() }

    static func urlHost(_ host: String) -> String {
        switch host {
        case "0.0.0.0", "": return "127.0.0.1"
        case "::": return "[::1]"
        default: return host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        }
    }

    static func endpoint(_ host: String, _ port: Int, secure: Bool = false) -> String {
        "\(secure ? "https" : "http")://\(urlHost(host)):\(port)"
    }

    /// The soft `RLIMIT_NOFILE` less 64 descriptors kept for the listener, upstream calls and the host process.
    static func descriptorBudget() -> Int {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rlim_t(Int32.max) else { return 1 << 20 }
        return max(16, Int(clamping: rl.rlim_cur) - 64)
    }

    // MARK: - Pipeline

    func initialize(_ channel: any Channel, tls: TLSServerContext? = nil) throws {
        let cap = connectionCap.withLockedValue { $0 }
        let count = openSockets.withLockedValue { n -> Int in n += 1; return n }
        let server = self
        channel.closeFuture.whenComplete { _ in server.openSockets.withLockedValue { $0 -= 1 } }
        if count > cap {
            // Over the cap: answer 503 at once (before reading anything) and close, so the descriptor is
            // given back and well-behaved clients see a status rather than a hang.
            state.countRefusedConnection()
            configuration.logger.warning("connection limit reached; socket refused with 503", metadata: [
                "limit": "\(cap)", "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            let text = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nx-ms-error-code: "
                + "ConnectionCountLimitReached\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            channel.writeAndFlush(channel.allocator.buffer(string: text)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        if let tls {
            try channel.pipeline.syncOperations.addHandler(TLSServerHandler(
                context: tls, handshakeTimeout: configuration.tls?.handshakeTimeout ?? 10, logger: configuration.logger), name: "tls")
        }
        let box = UpgradeBox()
        box.arm(channel, after: configuration.headerTimeout, server: self, what: "request head")
        channel.closeFuture.whenComplete { _ in box.disarm() }  // on the channel's loop, like every box access
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: max(configuration.maxMessageSize, 1 << 14),
            automaticErrorHandling: false,
            shouldUpgrade: { channel, head in server.shouldUpgrade(channel, head, box) },
            upgradePipelineHandler: { channel, head in server.upgraded(channel, head, box) })
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                context.pipeline.removeHandler(name: "http", promise: nil)
            }))
        try channel.pipeline.syncOperations.addHandler(HTTPHandler(server: self, box: box, secure: tls != nil), name: "http")
    }
}

/// What the upgrade check decided for one socket. Confined to that channel's event loop
/// (`@unchecked Sendable` because NIO's upgrade callbacks are `@Sendable`; they all run on that loop).
final class UpgradeBox: @unchecked Sendable {
    enum Decision {
        case none
        case reject(HTTPResponseStatus, String)
        case open(OpenPlan)
        case recover(connectionID: String, token: String, hub: String, kind: ClientProtocolKind)
    }
    var decision: Decision = .none
    /// The header or idle time-out running for this socket, if any.
    private var deadline: Scheduled<Void>?

    /// (Re)starts the time-out: when it fires before ``disarm()``, the socket is closed and the event logged.
    func arm(_ channel: any Channel, after seconds: TimeInterval, server: WebPubSubEmulator, what: String) {
        deadline?.cancel()
        guard seconds > 0 else { deadline = nil; return }
        deadline = channel.eventLoop.scheduleTask(in: .clamped(seconds: seconds)) {
            server.state.countTimedOutConnection()
            server.configuration.logger.warning("socket closed: no \(what) in time", metadata: [
                "timeoutSeconds": "\(seconds)", "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            channel.close(promise: nil)
        }
    }

    /// Stops the time-out (a whole request arrived, or the socket was upgraded).
    func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}

/// A new connection, as decided at upgrade time.
struct OpenPlan: Sendable {
    var connectionID: String
    var hub: String
    var kind: ClientProtocolKind
    var userID: String?
    var roles: [String]
    var groups: [String]
    var claims: [String: [String]]
    var connectionState: String?
    /// Plain clients with `webpubsub_mode=sendToGroup&group=G`: every frame is published to G.
    var rawSendGroup: String?
}

/// Parsed request target.
struct RequestTarget {
    var path: String
    var segments: [String]  // percent-decoded
    var query: [(String, String)]
    /// Whether the request came over TLS.
    var secure = false
    /// `https` over TLS, else `http`.
    var scheme: String { secure ? "https" : "http" }

    init(_ uri: String) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts.first ?? "")
        segments = path.split(separator: "/", omittingEmptySubsequences: true).map {
            String($0).removingPercentEncoding ?? String($0)
        }
        query = []
        if parts.count > 1 {
            for item in parts[1].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                func decode(_ s: Substring) -> String {
                    String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s)
                }
                query.append((decode(kv[0]), kv.count > 1 ? decode(kv[1]) : ""))
            }
        }
    }

    /// The first value of a query parameter (name compared case-insensitively).
    func first(_ name: String) -> String? {
        query.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    /// Every value of a query parameter.
    func all(_ name: String) -> [String] {
        query.filter { $0.0.lowercased() == name.lowercased() }.map { $0.1 }
    }
}

/// Hub name rule: `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`.
enum HubName {
    static func isValid(_ hub: String) -> Bool {
        let u = Array(hub.utf8)
        guard let f = u.first, u.count <= 128, (f >= 0x41 && f <= 0x5A) || (f >= 0x61 && f <= 0x7A) else { return false }
        return u.allSatisfy {
            ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39)
                || $0 == 0x5F || $0 == 0x60 || $0 == 0x2C || $0 == 0x2E || $0 == 0x5B || $0 == 0x5D
        }
    }
}

extension WebPubSubEmulator {
    /// The hub of a client endpoint request (`/client/hubs/{hub}` or `/client/?hub=`), nil if not a client path.
    static func clientHub(_ t: RequestTarget) -> String?? {
        if t.segments.count == 3, t.segments[0] == "client", t.segments[1] == "hubs" { return .some(t.segments[2]) }
        if t.segments == ["client"] || t.segments == ["client", "hubs"] { return .some(t.first("hub")) }
        return .none
    }

    func shouldUpgrade(_ channel: any Channel, _ head: HTTPRequestHead, _ box: UpgradeBox) -> EventLoopFuture<HTTPHeaders?> {
        box.disarm()  // an upgrade request has no body: it is whole
        let loop = channel.eventLoop
        let logger = configuration.logger
        func reject(_ status: HTTPResponseStatus, _ message: String) -> EventLoopFuture<HTTPHeaders?> {
            logger.warning("client connection refused", metadata: ["status": "\(status.code)", "reason": "\(message)"])
            state.countBadRequest()
            box.decision = .reject(status, message)
            return loop.makeSucceededFuture(nil)
        }
        let target = RequestTarget(head.uri)
        guard case .some(let hubValue) = Self.clientHub(target) else { return reject(.notFound, "Not found.") }
        guard let hub = hubValue, HubName.isValid(hub) else { return reject(.badRequest, "Invalid hub name.") }
        let requested = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map { String($0) }
        let kind = ClientProtocolKind.negotiate(requested)
        var headers = HTTPHeaders()
        if kind != .raw { headers.add(name: "Sec-WebSocket-Protocol", value: kind.rawValue) }

        if let connectionID = target.first("awps_connection_id") {
            box.decision = .recover(connectionID: connectionID, token: target.first("awps_reconnection_token") ?? "",
                                    hub: hub, kind: kind)
            return loop.makeSucceededFuture(headers)
        }

        var token = target.first("access_token")
        if token == nil, let auth = head.headers.first(name: "Authorization"), auth.lowercased().hasPrefix("bearer ") {
            token = String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        guard let token, !token.isEmpty else { return reject(.unauthorized, "Missing access token.") }
        let host = head.headers.first(name: "Host") ?? "localhost"
        let claims: AccessTokenClaims
        do {
            claims = try state.tokens.verify(token) { Audience.matchesClient(aud: $0, host: host, hub: hub) }
        } catch {
            return reject(.unauthorized, "Invalid access token (\(error)).")
        }
        for g in claims.groups where g.isEmpty || g.count > 1024 || g.allSatisfy({ $0.isWhitespace }) {
            return reject(.badRequest, "Invalid group name in token.")
        }
        if Set(claims.groups).count > configuration.maxGroupsPerConnection {
            return reject(.badRequest, "The token names more than \(configuration.maxGroupsPerConnection) groups.")
        }
        if let why = PermissionSet.violation(roles: claims.roles) {
            return reject(.badRequest, "Invalid roles in token: \(why).")
        }
        var plan = OpenPlan(connectionID: Crypto.newConnectionID(), hub: hub, kind: kind, userID: claims.userID,
                            roles: claims.roles, groups: claims.groups, claims: [:], connectionState: nil)
        var claimMap: [String: [String]] = ["aud": [claims.audience], "exp": [String(claims.expires)]]
        if let iat = claims.issuedAt { claimMap["iat"] = [String(iat)] }
        if let sub = claims.userID { claimMap["sub"] = [sub] }
        if !claims.roles.isEmpty { claimMap["role"] = claims.roles }
        if !claims.groups.isEmpty { claimMap["webpubsub.group"] = claims.groups }
        plan.claims = claimMap
        if kind == .raw, target.first("webpubsub_mode")?.lowercased() == "sendtogroup" {
            guard let g = target.first("group"), !g.isEmpty, g.count <= 1024 else {
                return reject(.badRequest, "webpubsub_mode=sendToGroup needs a group.")
            }
            plan.rawSendGroup = g
        }

        guard let upstream = state.upstream, upstream.handler(hub: hub, systemEvent: "connect") != nil else {
            box.decision = .open(plan)
            return loop.makeSucceededFuture(headers)
        }
        var query: [String: [String]] = [:]
        for (k, v) in target.query where k.lowercased() != "access_token" { query[k, default: []].append(v) }
        var hdrs: [String: [String]] = [:]
        for (k, v) in head.headers where k.lowercased() != "authorization" { hdrs[k, default: []].append(v) }
        let basePlan = plan, baseHeaders = headers
        return upstream.connect(hub: hub, connectionID: plan.connectionID, userID: claims.userID, claims: claimMap,
                                query: query, headers: hdrs, subprotocols: requested, on: loop)
            .map { outcome -> HTTPHeaders? in
                var plan = basePlan
                switch outcome {
                case .reject(let status, let body):
                    logger.warning("connect event refused the client", metadata: ["status": "\(status)"])
                    box.decision = .reject(HTTPResponseStatus(statusCode: status), body)
                    return nil
                case .accept(let userID, let roles, let groups, let subprotocol, let connState):
                    if case .some(let u) = userID { plan.userID = u }
                    if let roles { plan.roles = roles }
                    if let groups, !groups.isEmpty { plan.groups = groups }
                    plan.connectionState = connState
                    var h = baseHeaders
                    if let subprotocol {
                        plan.kind = ClientProtocolKind(rawValue: subprotocol) ?? .raw
                        h.replaceOrAdd(name: "Sec-WebSocket-Protocol", value: subprotocol)
                    }
                    box.decision = .open(plan)
                    return h
                }
            }
    }

    func upgraded(_ channel: any Channel, _ head: HTTPRequestHead, _ box: UpgradeBox) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            switch box.decision {
            case .open(let plan):
                let s = Session(id: plan.connectionID, hub: plan.hub, kind: plan.kind, userID: plan.userID,
                                roles: plan.roles, claims: plan.claims, ackCapacity: configuration.ackMemoryCapacity,
                                reliableLimits: configuration.reliableBufferLimits)
                s.connectionState = plan.connectionState
                s.rawSendGroup = plan.rawSendGroup
                try boundOutboundBuffer(channel)
                try channel.pipeline.syncOperations.addHandler(
                    ClientSocketHandler(state: state, session: s, maxMessageSize: configuration.maxMessageSize))
                state.open(s, channel: channel, initialGroups: plan.groups)
            case .recover(let id, let token, let hub, _):
                let s = state.recover(connectionID: id, reconnectionToken: token, hub: hub, channel: channel)
                try boundOutboundBuffer(channel)
                try channel.pipeline.syncOperations.addHandler(
                    ClientSocketHandler(state: state, session: s, maxMessageSize: configuration.maxMessageSize))
            case .none, .reject:
                channel.close(promise: nil)
            }
        }
    }

    /// The channel turns unwritable when more than ``Configuration/outboundBufferLimit`` bytes wait for the
    /// peer; ``ClientSocketHandler`` then closes it as a slow client.
    private func boundOutboundBuffer(_ channel: any Channel) throws {
        let high = max(configuration.outboundBufferLimit, 2)
        try channel.syncOptions?.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: high / 2, high: high))
    }
}
