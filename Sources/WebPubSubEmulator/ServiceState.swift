import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// Counters for `/_emulator/stats` (guarded by `ServiceState.lock`).
struct Stats {
    var messagesIn = 0
    var messagesOut = 0
    var groupMessagesPublished = 0
    var bytesOut = 0
    var acksSent = 0
    var restRequests = 0
    var upstreamRequests = 0
    var connectionsOpened = 0
    var recoveries = 0
    var badRequests = 0
    var slowClients = 0
    var refusedConnections = 0
    var timedOutConnections = 0
}

/// Work collected while the lock is held: socket operations (submitted before unlocking, to keep order) and
/// closures to run after unlocking (upstream calls, anything that may call back into the state).
struct Effects {
    var outbox = Outbox()
    var later: [@Sendable () -> Void] = []
}

/// All hub state of one emulator.
///
/// Threading: every mutable field lives behind the single `lock` (a NIOLock); sockets belong to several event
/// loops, and the state is touched from all of them. Socket writes decided under the lock are enqueued on
/// their loop before the lock is released (see ``Outbox``), which keeps per-connection order.
/// `@unchecked Sendable`: guarded by `lock`, except `timerLoop` and `upstream`, which `start()` writes once before
/// the listener exists and which are only read afterwards.
final class ServiceState: @unchecked Sendable {
    let lock = NIOLock()
    private var hubs: [String: HubState] = [:]
    private var sessions: [String: Session] = [:]
    var stats = Stats()
    let configuration: WebPubSubEmulator.Configuration
    let tokens: AccessTokenCodec
    let logger: Logger
    let allocator = ByteBufferAllocator()
    /// Set once at start (before any connection): the loop group used for timers, and the upstream client.
    var timerLoop: (any EventLoop)?
    var upstream: Upstream?

    init(configuration: WebPubSubEmulator.Configuration) {
        self.configuration = configuration
        self.tokens = AccessTokenCodec(accessKey: configuration.accessKey)
        self.logger = configuration.logger
    }

    /// Runs `body` under the lock, submits its socket operations, unlocks, then runs deferred work.
    @discardableResult
    func mutate<T>(_ body: (inout Effects) -> T) -> T {
        var fx = Effects()
        let result: T = lock.withLock {
            let r = body(&fx)
            fx.outbox.submit()
            return r
        }
        for work in fx.later { work() }
        return result
    }

    // MARK: - Sending to one session

    /// Queues `op` for the session's socket (held while paused; nothing while detached).
    private func send(_ s: Session, _ op: SocketOp, _ fx: inout Effects) {
        if s.paused {
            s.held.append(op)
        } else if let ch = s.channel {
            fx.outbox.add(ch, op)
        }
    }

    private func textFrame(_ bytes: [UInt8]) -> SocketOp {
        .frame(WebSocketFrame(fin: true, opcode: .text, data: allocator.buffer(bytes: bytes)))
    }

    /// A data message, pre-encoded once for every flavour of receiver.
    struct Prepared {
        let body: [UInt8]
        let json: ByteBuffer
        let tail: ByteBuffer  // body without its leading `{`, for splicing in a sequenceId
        let data: MessageData
        var raw: ByteBuffer?
        var rawIsText = true

        init(body: [UInt8], data: MessageData, allocator: ByteBufferAllocator) {
            self.body = body
            self.data = data
            json = allocator.buffer(bytes: body)
            tail = json.getSlice(at: 1, length: body.count - 1)!
        }
    }

    /// Delivers a data message to one session in its protocol's shape; a reliable session whose buffer overflows
    /// is closed with 1008 instead.
    private func deliver(_ s: Session, _ p: inout Prepared, _ fx: inout Effects) {
        switch s.kind {
        case .json:
            send(s, .frame(WebSocketFrame(fin: true, opcode: .text, data: p.json)), &fx)
        case .reliable:
            let tail = p.tail
            let alloc = allocator
            guard let (_, buffer) = s.reliable!.append(size: tail.readableBytes + 24, { sequenceID in
                // `{"sequenceId":N,` + the shared body minus its `{`: no re-encoding per receiver.
                var b = alloc.buffer(capacity: tail.readableBytes + 24)
                b.writeStaticString(#"{"sequenceId":"#)
                b.writeString(String(sequenceID))
                b.writeInteger(UInt8(ascii: ","))
                b.writeImmutableBuffer(tail)
                return b
            }) else {
                logger.warning("reliable buffer full; closing connection", metadata: ["connectionId": "\(s.id)"])
                close(s, code: .policyViolation, reason: "The reliable message buffer is full.", &fx)
                return
            }
            send(s, .frame(WebSocketFrame(fin: true, opcode: .text, data: buffer)), &fx)
        case .raw:
            if p.raw == nil {
                let r = p.data.rawFrame
                p.raw = allocator.buffer(bytes: r.bytes)
                p.rawIsText = r.isText
            }
            send(s, .frame(WebSocketFrame(fin: true, opcode: p.rawIsText ? .text : .binary, data: p.raw!)), &fx)
        }
        stats.messagesOut += 1
        stats.bytesOut += p.body.count
    }

    func sendAck(_ s: Session, _ ackID: UInt64, error: (name: String, message: String)?, _ fx: inout Effects) {
        if s.dropAcks > 0 {
            s.dropAcks -= 1
            logger.debug("test hook: ack swallowed", metadata: ["connectionId": "\(s.id)", "ackId": "\(ackID)"])
            return
        }
        let op = textFrame(Downstream.ack(ackID, error: error))
        stats.acksSent += 1
        if s.ackDelayMilliseconds > 0, let loop = timerLoop {
            let delay = s.ackDelayMilliseconds
            fx.later.append {
                loop.scheduleTask(in: .milliseconds(Int64(delay))) {
                    self.mutate { fx in if !s.ended { self.send(s, op, &fx) } }
                }
            }
        } else {
            send(s, op, &fx)
        }
    }

    // MARK: - Opening, recovering, detaching, closing

    /// Registers a new session on `channel` and sends `connected`.
    func open(_ s: Session, channel: any Channel, initialGroups: [String]) {
        mutate { fx in
            s.channel = channel
            sessions[s.id] = s
            hubs[s.hubKey, default: HubState()].connections[s.id] = s
            if let u = s.userID { hubs[s.hubKey]!.users[u, default: [:]][s.id] = s }
            for g in initialGroups { join(s, g) }
            stats.connectionsOpened += 1
            if s.kind != .raw {
                send(s, textFrame(Downstream.connected(
                    connectionID: s.id, userID: s.userID,
                    reconnectionToken: s.kind == .reliable ? reconnectionToken(for: s.id) : nil)), &fx)
            }
            if let keepAlive = configuration.keepAliveInterval, keepAlive > 0 {
                scheduleKeepAlive(channel, every: keepAlive)
            }
        }
        logger.info("connected", metadata: ["connectionId": "\(s.id)", "hub": "\(s.hub)", "protocol": "\(s.kind.rawValue)"])
        upstream?.systemEvent("connected", session: s, body: Array("{}".utf8))
    }

    private func scheduleKeepAlive(_ channel: any Channel, every seconds: TimeInterval) {
        let interval = TimeAmount.clamped(seconds: seconds)
        let alloc = allocator
        let task = channel.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            guard channel.isActive else { task.cancel(); return }
            // Paused sockets do not read, and the ping would be a write: skip it (the peer sees silence).
            if self.lock.withLock({ self.isPaused(channel) }) { return }
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .ping, data: alloc.buffer(capacity: 0)), promise: nil)
        }
        // Cancelled with the socket, not at its next tick: a closed channel is not kept for up to one interval.
        channel.closeFuture.whenComplete { _ in task.cancel() }
    }

    private var pausedChannels: Set<ObjectIdentifier> = []
    private func isPaused(_ channel: any Channel) -> Bool { pausedChannels.contains(ObjectIdentifier(channel)) }

    /// The reconnection token of a reliable connection: an HS256 JWT whose audience is the connection id.
    func reconnectionToken(for connectionID: String) -> String {
        let now = Int(Date().timeIntervalSince1970)
        return tokens.sign(object: ["aud": connectionID, "iss": "https://webpubsub.azure.com", "iat": now,
                                    "exp": now + 7 * 24 * 3600])
    }

    /// Recovers a reliable session onto `channel`; returns nil (and closes the socket with 1008) when it cannot.
    func recover(connectionID: String, reconnectionToken: String, hub: String, channel: any Channel) -> Session? {
        let tokenOK = (try? tokens.verify(reconnectionToken, audienceMatches: { $0 == connectionID })) != nil
        let recovered: Session? = mutate { fx in
            guard tokenOK, let s = sessions[connectionID], !s.ended, s.kind == .reliable, s.hubKey == hub.lowercased()
            else {
                stats.badRequests += 1
                fx.outbox.add(channel, .close(code: .policyViolation, reason: "The connection could not be recovered."))
                return nil
            }
            if let old = s.channel, old !== channel {
                fx.outbox.add(old, .abort)
                pausedChannels.remove(ObjectIdentifier(old))
            }
            s.expiry?.cancel()
            s.expiry = nil
            s.channel = channel
            s.paused = false
            s.held.removeAll()
            stats.recoveries += 1
            fx.outbox.add(channel, textFrame(Downstream.connected(
                connectionID: s.id, userID: s.userID, reconnectionToken: self.reconnectionToken(for: s.id))))
            for entry in s.reliable!.pending {
                fx.outbox.add(channel, .frame(WebSocketFrame(fin: true, opcode: .text, data: entry.payload)))
                stats.messagesOut += 1
            }
            if let keepAlive = configuration.keepAliveInterval, keepAlive > 0 {
                scheduleKeepAlive(channel, every: keepAlive)
            }
            return s
        }
        logger.info(recovered != nil ? "connection recovered" : "recovery refused (1008)",
                    metadata: ["connectionId": "\(connectionID)"])
        return recovered
    }

    /// The socket of `s` went away. `clientClosed` is the code of the client's close frame, if it sent one.
    func detached(_ s: Session, channel: any Channel, clientClosed: UInt16?) {
        mutate { fx in
            pausedChannels.remove(ObjectIdentifier(channel))
            guard s.channel === channel else { return }
            s.channel = nil
            s.paused = false
            s.held.removeAll()
            guard !s.ended else { return }
            if s.kind == .reliable && clientClosed != 1000 {
                let window = configuration.recoveryWindow
                if let loop = timerLoop {
                    s.expiry = loop.scheduleTask(in: .clamped(seconds: window)) {
                        self.mutate { fx in
                            guard !s.ended, s.channel == nil else { return }
                            self.logger.info("recovery window over", metadata: ["connectionId": "\(s.id)"])
                            self.end(s, reason: "Connection recovery timed out.", &fx)
                        }
                    }
                }
                logger.info("connection dropped; waiting for recovery", metadata: ["connectionId": "\(s.id)"])
            } else {
                end(s, reason: clientClosed != nil ? "Closed by client." : "Connection lost.", &fx)
            }
        }
    }

    /// Service-initiated close: `disconnected` (JSON protocols), close frame, and the session is gone.
    func close(_ s: Session, code: WebSocketErrorCode, reason: String, _ fx: inout Effects) {
        guard !s.ended else { return }
        if let ch = s.channel {
            if s.kind != .raw { fx.outbox.add(ch, textFrame(Downstream.disconnected(reason))) }
            fx.outbox.add(ch, .close(code: code, reason: reason))
        }
        end(s, reason: reason, &fx)
    }

    /// Ends the logical connection: groups, user index, buffer, upstream `disconnected`.
    func end(_ s: Session, reason: String, _ fx: inout Effects) {
        guard !s.ended else { return }
        s.ended = true
        s.expiry?.cancel()
        s.expiry = nil
        for g in s.groups { removeFromGroupIndex(s, g) }
        s.groups.removeAll()
        if let u = s.userID {
            hubs[s.hubKey]?.users[u]?[s.id] = nil
            if hubs[s.hubKey]?.users[u]?.isEmpty == true { hubs[s.hubKey]?.users[u] = nil }
        }
        hubs[s.hubKey]?.connections[s.id] = nil
        sessions[s.id] = nil
        s.reliable = nil
        s.held.removeAll()
        if let upstream {
            let body = Array("{\"reason\":\(JSONScanner.quoted(reason))}".utf8)
            fx.later.append { upstream.systemEvent("disconnected", session: s, body: body) }
        }
        logger.info("connection ended", metadata: ["connectionId": "\(s.id)", "reason": "\(reason)"])
    }

    // MARK: - Groups

    /// Adds `s` to `group`. False (and nothing changes) when `s` is already in
    /// ``WebPubSubEmulator/Configuration/maxGroupsPerConnection`` other groups.
    @discardableResult
    private func join(_ s: Session, _ group: String) -> Bool {
        guard !s.ended, !s.groups.contains(group) else { return true }
        guard s.groups.count < configuration.maxGroupsPerConnection else {
            logger.warning("group limit reached; join refused", metadata: [
                "connectionId": "\(s.id)", "limit": "\(configuration.maxGroupsPerConnection)"])
            return false
        }
        s.groups.insert(group)
        hubs[s.hubKey, default: HubState()].groups[group, default: [:]][s.id] = s
        return true
    }

    private func leave(_ s: Session, _ group: String) {
        guard s.groups.remove(group) != nil else { return }
        removeFromGroupIndex(s, group)
    }

    private func removeFromGroupIndex(_ s: Session, _ group: String) {
        hubs[s.hubKey]?.groups[group]?[s.id] = nil
        if hubs[s.hubKey]?.groups[group]?.isEmpty == true { hubs[s.hubKey]?.groups[group] = nil }
    }

    // MARK: - Client requests

    /// Handles one parsed request from `s` (called on the socket's loop).
    func handle(_ s: Session, _ message: ClientMessage) {
        mutate { fx in
            guard !s.ended else { return }
            stats.messagesIn += 1
            switch message {
            case .sequenceAck(let n):
                s.reliable?.acknowledge(n)
                return
            case .ping:
                send(s, textFrame(Downstream.pong), &fx)
                return
            case .cancelInvocation:
                return
            case .invoke(let id, let name, let data):
                guard let upstream, upstream.handler(hub: s.hub, userEvent: name) != nil else {
                    send(s, textFrame(Downstream.invokeResponse(id, data: nil, error: ("InternalServerError", "Internal server error"))), &fx)
                    return
                }
                let payload = data ?? MessageData.binary([])
                fx.later.append { upstream.userEvent(name, session: s, data: payload, ackID: nil, invocationID: id) }
                return
            default: break
            }
            if let ackID = message.ackID {
                if s.failAcks > 0 {
                    s.failAcks -= 1
                    sendAck(s, ackID, error: ("InternalServerError", "Internal server error"), &fx)
                    return
                }
                if s.acks.contains(ackID) {
                    sendAck(s, ackID, error: ("Duplicate", "Message with ack-id: \(ackID) has been processed"), &fx)
                    return
                }
            }
            func fail(_ name: String, _ text: String) {
                logger.info("request refused", metadata: ["connectionId": "\(s.id)", "error": "\(name)", "detail": "\(text)"])
                if let ackID = message.ackID { sendAck(s, ackID, error: (name, text), &fx) }
            }
            func succeed() {
                if let ackID = message.ackID {
                    s.acks.record(ackID)
                    sendAck(s, ackID, error: nil, &fx)
                }
            }
            switch message {
            case .joinGroup(let g, _):
                guard s.permissions.allows(.joinLeaveGroup, group: g) else {
                    return fail("Forbidden", "The client does not have permission to join group '\(g)'.")
                }
                guard join(s, g) else {
                    return fail("BadRequest", "The connection has joined the maximum of \(configuration.maxGroupsPerConnection) groups.")
                }
                succeed()
            case .leaveGroup(let g, _):
                guard s.permissions.allows(.joinLeaveGroup, group: g) else {
                    return fail("Forbidden", "The client does not have permission to leave group '\(g)'.")
                }
                leave(s, g)
                succeed()
            case .sendToGroup(let g, _, let noEcho, let data):
                guard s.permissions.allows(.sendToGroup, group: g) else {
                    return fail("Forbidden", "The client does not have permission to send to group '\(g)'.")
                }
                publish(hubKey: s.hubKey, group: g, data: data, fromUserID: s.userID,
                        skip: noEcho ? s.id : nil, excluded: [], filter: nil, &fx)
                succeed()
            case .event(let name, let ackID, let data):
                guard let upstream, upstream.handler(hub: s.hub, userEvent: name) != nil else {
                    return fail("InternalServerError", "Internal server error")
                }
                if let ackID {
                    // A retry of an event whose upstream call is still running (e.g. resent after a recovery)
                    // must not run it twice: the running call's ack answers both.
                    guard s.eventsInFlight.insert(ackID).inserted else {
                        logger.debug("event already in flight; its ack answers the retry",
                                     metadata: ["connectionId": "\(s.id)", "ackId": "\(ackID)"])
                        return
                    }
                }
                fx.later.append { upstream.userEvent(name, session: s, data: data, ackID: ackID) }
            case .sequenceAck, .ping, .invoke, .cancelInvocation: break
            }
        }
    }

    /// A raw client's frame: a `message` user event.
    func handleRaw(_ s: Session, text: Bool, bytes: [UInt8]) {
        mutate { fx in
            guard !s.ended else { return }
            stats.messagesIn += 1
            if let g = s.rawSendGroup {
                guard s.permissions.allows(.sendToGroup, group: g) else {
                    logger.warning("raw sendToGroup without permission; closing 1008", metadata: ["connectionId": "\(s.id)"])
                    close(s, code: .policyViolation, reason: "The client does not have permission to send to group '\(g)'.", &fx)
                    return
                }
                let data = text ? MessageData.text(String(decoding: bytes, as: UTF8.self)) : MessageData.binary(bytes)
                publish(hubKey: s.hubKey, group: g, data: data, fromUserID: s.userID, skip: nil, excluded: [], filter: nil, &fx)
                return
            }
            guard let upstream, upstream.handler(hub: s.hub, userEvent: "message") != nil else {
                logger.warning("raw client message with no event handler; closing 1011", metadata: ["connectionId": "\(s.id)"])
                close(s, code: .unexpectedServerError, reason: "Internal server error", &fx)
                return
            }
            let data = text ? MessageData.text(String(decoding: bytes, as: UTF8.self)) : MessageData.binary(bytes)
            fx.later.append { upstream.userEvent("message", session: s, data: data, ackID: nil) }
        }
    }

    /// The upstream answered a user event: deliver the body (if any) as a server message, then ack.
    func eventCompleted(_ s: Session, ackID: UInt64?, response: MessageData?, state: String?, failed: Bool,
                        invocationID: String? = nil) {
        mutate { fx in
            if let ackID { s.eventsInFlight.remove(ackID) }
            guard !s.ended else { return }
            if let invocationID {
                if !failed, let state { s.connectionState = state }
                send(s, textFrame(Downstream.invokeResponse(
                    invocationID, data: failed ? nil : response,
                    error: failed ? ("InternalServerError", "Internal server error") : nil)), &fx)
                return
            }
            if failed {
                if s.kind == .raw {
                    close(s, code: .unexpectedServerError, reason: "Internal server error", &fx)
                } else if let ackID {
                    sendAck(s, ackID, error: ("InternalServerError", "Internal server error"), &fx)
                }
                return
            }
            if let state { s.connectionState = state }
            if let response {
                var p = Prepared(body: Downstream.serverMessage(data: response), data: response, allocator: allocator)
                deliver(s, &p, &fx)
            }
            if let ackID {
                s.acks.record(ackID)
                sendAck(s, ackID, error: nil, &fx)
            }
        }
    }

    /// Fans a group message out. Encodes once; the reliable flavour only splices its sequenceId in.
    private func publish(hubKey: String, group: String, data: MessageData, fromUserID: String?, skip: String?,
                         excluded: Set<String>, filter: ODataFilter?, _ fx: inout Effects) {
        stats.groupMessagesPublished += 1
        guard let members = hubs[hubKey]?.groups[group], !members.isEmpty else { return }
        var p = Prepared(body: Downstream.groupMessage(group: group, data: data, fromUserID: fromUserID),
                         data: data, allocator: allocator)
        for (id, r) in members where id != skip && !excluded.contains(id) {
            if let filter, !filter.matches(subject(r)) { continue }
            deliver(r, &p, &fx)
        }
    }

    private func subject(_ s: Session) -> ODataFilter.Subject {
        .init(connectionID: s.id, userID: s.userID, groups: s.groups)
    }

    // MARK: - REST operations (hub names are matched case-insensitively)

    private func targets(_ hub: String, excluded: Set<String>, filter: ODataFilter?) -> [Session] {
        (hubs[hub.lowercased()]?.connections.values).map { Array($0) }?.filter {
            !excluded.contains($0.id) && (filter?.matches(subject($0)) ?? true)
        } ?? []
    }

    func restSendToAll(hub: String, data: MessageData, excluded: Set<String>, filter: ODataFilter?) {
        mutate { fx in
            var p = Prepared(body: Downstream.serverMessage(data: data), data: data, allocator: allocator)
            for s in targets(hub, excluded: excluded, filter: filter) { deliver(s, &p, &fx) }
        }
    }

    func restSendToGroup(hub: String, group: String, data: MessageData, excluded: Set<String>, filter: ODataFilter?) {
        mutate { fx in
            publish(hubKey: hub.lowercased(), group: group, data: data, fromUserID: nil, skip: nil,
                    excluded: excluded, filter: filter, &fx)
        }
    }

    func restSendToUser(hub: String, user: String, data: MessageData, filter: ODataFilter?) {
        mutate { fx in
            guard let conns = hubs[hub.lowercased()]?.users[user] else { return }
            var p = Prepared(body: Downstream.serverMessage(data: data), data: data, allocator: allocator)
            for s in conns.values where filter?.matches(subject(s)) ?? true { deliver(s, &p, &fx) }
        }
    }

    /// Returns false when the connection does not exist.
    func restSendToConnection(hub: String, connectionID: String, data: MessageData) -> Bool {
        mutate { fx in
            guard let s = hubs[hub.lowercased()]?.connections[connectionID] else { return false }
            var p = Prepared(body: Downstream.serverMessage(data: data), data: data, allocator: allocator)
            deliver(s, &p, &fx)
            return true
        }
    }

    func connectionExists(hub: String, connectionID: String) -> Bool {
        lock.withLock { hubs[hub.lowercased()]?.connections[connectionID] != nil }
    }

    func groupExists(hub: String, group: String) -> Bool {
        lock.withLock { !(hubs[hub.lowercased()]?.groups[group]?.isEmpty ?? true) }
    }

    func userExists(hub: String, user: String) -> Bool {
        lock.withLock { !(hubs[hub.lowercased()]?.users[user]?.isEmpty ?? true) }
    }

    func closeConnection(hub: String, connectionID: String, reason: String) {
        mutate { fx in
            guard let s = hubs[hub.lowercased()]?.connections[connectionID] else { return }
            close(s, code: .normalClosure, reason: reason, &fx)
        }
    }

    func closeAll(hub: String, group: String?, user: String?, excluded: Set<String>, reason: String) {
        mutate { fx in
            let h = hubs[hub.lowercased()]
            let pool: [Session]
            if let group { pool = Array(h?.groups[group]?.values ?? [:].values) }
            else if let user { pool = Array(h?.users[user]?.values ?? [:].values) }
            else { pool = Array(h?.connections.values ?? [:].values) }
            for s in pool where !excluded.contains(s.id) { close(s, code: .normalClosure, reason: reason, &fx) }
        }
    }

    /// (connectionId, userId) of the group's members, sorted by connection id.
    func groupMembers(hub: String, group: String) -> [(String, String?)] {
        lock.withLock {
            (hubs[hub.lowercased()]?.groups[group] ?? [:]).values.map { ($0.id, $0.userID) }.sorted { $0.0 < $1.0 }
        }
    }

    /// nil when the connection does not exist, false when it is at its group limit.
    func addConnection(hub: String, connectionID: String, toGroup group: String) -> Bool? {
        lock.withLock {
            guard let s = hubs[hub.lowercased()]?.connections[connectionID] else { return nil }
            return join(s, group)
        }
    }

    func removeConnection(hub: String, connectionID: String, fromGroup group: String?) {
        lock.withLock {
            guard let s = hubs[hub.lowercased()]?.connections[connectionID] else { return }
            if let group { leave(s, group) } else { for g in s.groups { leave(s, g) } }
        }
    }

    /// Returns false when the user has no connection.
    func addUser(hub: String, user: String, toGroup group: String) -> Bool {
        lock.withLock {
            guard let conns = hubs[hub.lowercased()]?.users[user], !conns.isEmpty else { return false }
            for s in conns.values { join(s, group) }
            return true
        }
    }

    func removeUser(hub: String, user: String, fromGroup group: String?) {
        lock.withLock {
            for s in (hubs[hub.lowercased()]?.users[user] ?? [:]).values {
                if let group { leave(s, group) } else { for g in s.groups { leave(s, g) } }
            }
        }
    }

    func addToGroups(hub: String, groups: [String], filter: ODataFilter?, add: Bool) {
        lock.withLock {
            for s in targets(hub, excluded: [], filter: filter) {
                for g in groups { if add { join(s, g) } else { leave(s, g) } }
            }
        }
    }

    /// Grant (true), revoke (false) or check (nil) a permission. Returns nil when the connection does not exist,
    /// else whether the permission is held (after the change).
    func permission(hub: String, connectionID: String, permission: GroupPermission, group: String?, grant: Bool?) -> Bool? {
        lock.withLock {
            guard let s = hubs[hub.lowercased()]?.connections[connectionID] else { return nil }
            switch grant {
            case true?: s.permissions.grant(permission, group: group)
            case false?: s.permissions.revoke(permission, group: group)
            case nil: break
            }
            return group.map { s.permissions.allows(permission, group: $0) } ?? s.permissions.allowsAll(permission)
        }
    }

    // MARK: - Test hooks

    enum Hook: String { case drop, expire, pause, resume }

    /// Applies a hook; false when the connection is unknown.
    func hook(_ hook: Hook, connectionID: String) -> Bool {
        mutate { fx in
            guard let s = sessions[connectionID] else { return false }
            switch hook {
            case .drop:
                if let ch = s.channel { fx.outbox.add(ch, .abort) }
            case .expire:
                if let ch = s.channel { fx.outbox.add(ch, .abort) }
                s.channel = nil
                end(s, reason: "Connection recovery timed out.", &fx)
            case .pause:
                guard !s.paused, let ch = s.channel else { return true }
                s.paused = true
                pausedChannels.insert(ObjectIdentifier(ch))
                fx.outbox.add(ch, .setReading(false))
            case .resume:
                guard s.paused, let ch = s.channel else { return true }
                s.paused = false
                pausedChannels.remove(ObjectIdentifier(ch))
                for op in s.held { fx.outbox.add(ch, op) }
                s.held.removeAll()
                fx.outbox.add(ch, .setReading(true))
            }
            logger.info("test hook", metadata: ["hook": "\(hook.rawValue)", "connectionId": "\(connectionID)"])
            return true
        }
    }

    /// Ack hooks: fail or swallow the next `count` acks, or delay acks by `delayMilliseconds`.
    func ackHook(connectionID: String, fail: Int?, drop: Int?, delayMilliseconds: Int?) -> Bool {
        lock.withLock {
            guard let s = sessions[connectionID] else { return false }
            if let fail { s.failAcks = fail }
            if let drop { s.dropAcks = drop }
            if let delayMilliseconds { s.ackDelayMilliseconds = delayMilliseconds }
            return true
        }
    }

    /// Close hook: a close frame with any code. Without `disconnected`; a reliable session survives (like a
    /// transport failure) unless the code is 1008. `disconnected` sends the system message first.
    func closeHook(connectionID: String, code: UInt16, reason: String, disconnected: Bool) -> Bool {
        mutate { fx in
            guard let s = sessions[connectionID] else { return false }
            if let ch = s.channel {
                if disconnected && s.kind != .raw { fx.outbox.add(ch, textFrame(Downstream.disconnected(reason))) }
                fx.outbox.add(ch, .close(code: WebSocketErrorCode(codeNumber: Int(code)), reason: reason))
            }
            if code == 1008 || s.kind != .reliable { end(s, reason: reason, &fx) }
            logger.info("test hook", metadata: ["hook": "close", "code": "\(code)", "connectionId": "\(connectionID)"])
            return true
        }
    }

    /// Frame hook: writes `bytes` to the socket as one text (or binary) frame, verbatim, outside all bookkeeping
    /// (for client tests of unknown, malformed or out-of-order service messages).
    func frameHook(connectionID: String, bytes: [UInt8], binary: Bool) -> Bool {
        mutate { fx in
            guard let s = sessions[connectionID] else { return false }
            send(s, .frame(WebSocketFrame(fin: true, opcode: binary ? .binary : .text, data: allocator.buffer(bytes: bytes))), &fx)
            return true
        }
    }

    /// Replay hook: sends every unacknowledged message again (duplicates for the client to drop).
    func replayHook(connectionID: String) -> Int? {
        mutate { fx in
            guard let s = sessions[connectionID] else { return nil }
            guard let pending = s.reliable?.pending else { return 0 }
            for entry in pending { send(s, .frame(WebSocketFrame(fin: true, opcode: .text, data: entry.payload)), &fx) }
            return pending.count
        }
    }

    func isPaused(session id: String) -> Bool { lock.withLock { sessions[id]?.paused ?? false } }

    /// Shutdown: every socket gets a close frame; the sessions are gone.
    func closeEverything() {
        mutate { fx in
            for s in Array(sessions.values) { close(s, code: .goingAway, reason: "Service is shutting down.", &fx) }
        }
    }

    func statsJSON() -> String {
        lock.withLock {
            let live = sessions.values.filter { $0.channel != nil }.count
            return """
            {"connections":\(live),"sessions":\(sessions.count),"messagesIn":\(stats.messagesIn),\
            "messagesOut":\(stats.messagesOut),"groupMessagesPublished":\(stats.groupMessagesPublished),\
            "bytesOut":\(stats.bytesOut),"acksSent":\(stats.acksSent),"restRequests":\(stats.restRequests),\
            "upstreamRequests":\(stats.upstreamRequests),"connectionsOpened":\(stats.connectionsOpened),\
            "recoveries":\(stats.recoveries),"badRequests":\(stats.badRequests),"slowClients":\(stats.slowClients),\
            "refusedConnections":\(stats.refusedConnections),"timedOutConnections":\(stats.timedOutConnections)}
            """
        }
    }

    func connectionsJSON() -> String {
        lock.withLock {
            let items = sessions.values.sorted { $0.connectedAt < $1.connectedAt }.map { s -> String in
                let groups = s.groups.sorted().map(JSONScanner.quoted).joined(separator: ",")
                return "{\"connectionId\":\(JSONScanner.quoted(s.id)),\"hub\":\(JSONScanner.quoted(s.hub)),"
                    + "\"userId\":\(s.userID.map(JSONScanner.quoted) ?? "null"),\"groups\":[\(groups)],"
                    + "\"protocol\":\(JSONScanner.quoted(s.kind.rawValue)),\"connected\":\(s.channel != nil),"
                    + "\"paused\":\(s.paused),\"unackedMessages\":\(s.reliable?.count ?? 0)}"
            }
            return "[" + items.joined(separator: ",") + "]"
        }
    }

    func countBadRequest() { lock.withLock { stats.badRequests += 1 } }
    func countSlowClient() { lock.withLock { stats.slowClients += 1 } }
    func countRefusedConnection() { lock.withLock { stats.refusedConnections += 1 } }
    func countTimedOutConnection() { lock.withLock { stats.timedOutConnections += 1 } }
    func countREST() { lock.withLock { stats.restRequests += 1 } }
}
