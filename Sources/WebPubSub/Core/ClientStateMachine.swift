import Foundation
import Logging
import WebSocket

//===----------------------------------------------------------------------===//
// The client's core: a pure state machine. Inputs are events (open requested,
// credential returned, socket opened/closed, a decoded service message, the
// timer fired, an operation submitted or cancelled); outputs are actions for
// the shell (WebPubSubClient.swift) to carry out. No Dispatch, no clock, no
// socket: time is an input, randomness a seeded source. Docs/Client.md,
// "Where each rule lives", maps each rule to its place.
//===----------------------------------------------------------------------===//

/// What the shell must do, in order.
enum ClientAction: Equatable, Sendable {
    /// Call the credential (off the client's queue) and report with ``ClientStateMachine/credentialReturned(attempt:_:now:)``.
    case fetchCredential(attempt: UInt64)
    /// Open socket `id` to `url`; its events come back with that id.
    case openSocket(id: UInt64, url: URL, timeout: TimeInterval)
    /// Write a text frame on the current socket. With a serial, report the outcome with
    /// ``ClientStateMachine/writeFinished(serial:accepted:now:)``.
    case write(String, serial: UInt64?)
    /// Start the close handshake (1000) on the current socket.
    case closeSocket
    /// Drop the current socket now, without a close frame; its later events are ignored.
    case abortSocket
    /// Hand an event to the subscribers.
    case emit(ClientEvent)
    /// Finish a caller's operation.
    case completeOperation(token: UInt64, Result<WebPubSubResult, WebPubSubError>)
    /// Finish a caller's invocation.
    case completeInvocation(token: UInt64, Result<InvokeEventResult, WebPubSubError>)
    /// Finish a caller's `open()`.
    case completeOpen(token: UInt64, Result<Void, WebPubSubError>)
    /// Finish a caller's `close()`.
    case completeClose(token: UInt64)
    /// Log a line.
    case log(Logger.Level, String, Logger.Metadata)
    /// Tell the instrumentation (only when the options have one).
    case record(WebPubSubInstrumentationEvent)

    static func == (lhs: ClientAction, rhs: ClientAction) -> Bool {
        switch (lhs, rhs) {
        case (.fetchCredential(let a), .fetchCredential(let b)): return a == b
        case (.openSocket(let a, let b, let c), .openSocket(let d, let e, let f)): return a == d && b == e && c == f
        case (.write(let a, let b), .write(let c, let d)): return a == c && b == d
        case (.closeSocket, .closeSocket), (.abortSocket, .abortSocket): return true
        case (.emit(let a), .emit(let b)): return a == b
        case (.completeOperation(let a, let b), .completeOperation(let c, let d)): return a == c && b == d
        case (.completeInvocation(let a, let b), .completeInvocation(let c, let d)): return a == c && b == d
        case (.completeOpen(let a, .success), .completeOpen(let c, .success)): return a == c
        case (.completeOpen(let a, .failure(let b)), .completeOpen(let c, .failure(let d))): return a == c && b == d
        case (.completeClose(let a), .completeClose(let b)): return a == b
        case (.log(let a, let b, let c), .log(let d, let e, let f)): return a == d && b == e && c == f
        case (.record(let a), .record(let b)): return a == b
        default: return false
        }
    }
}

/// An event for the subscribers.
enum ClientEvent: Equatable, Sendable {
    case connected(ConnectedEvent)
    case disconnected(DisconnectedEvent)
    case stopped
    case recovering(RecoveringEvent)
    case recovered(RecoveredEvent)
    case groupMessage(GroupMessageEvent)
    case serverMessage(ServerMessageEvent)
    case rejoinGroupFailed(RejoinGroupFailedEvent)
}

/// What a caller asks the service to do (the machine builds and checks the frame).
enum OperationRequest: Equatable, Sendable {
    case joinGroup(String)
    case leaveGroup(String)
    case sendToGroup(String, MessageContent, noEcho: Bool)
    case sendEvent(String, MessageContent)
}

/// The client's state machine; see the file header.
struct ClientStateMachine {
    /// Where the connection is. Each state holds what only it needs.
    enum Lifecycle: Equatable, Sendable {
        case stopped
        /// A new connection: the credential, then the socket, then the `connected` message, by `deadline`.
        case connecting(attempt: UInt64, socket: UInt64?, deadline: Instant)
        case connected(socket: UInt64)
        /// The socket of a reliable session was lost; trying again until `windowEnds`.
        case recovering(windowEnds: Instant, step: RecoveryStep)
        /// Waiting out the reconnect backoff.
        case waitingToReconnect(until: Instant)
        /// `close()`: the close handshake, bounded by `deadline`.
        case stopping(deadline: Instant)
    }

    enum RecoveryStep: Equatable, Sendable {
        case waiting(until: Instant)
        case socket(id: UInt64, deadline: Instant)
    }

    /// The session of the current connection (kept through recoveries).
    struct Session: Equatable, Sendable {
        var connectionID: String
        var userID: String?
        var reconnectionToken: String?
        /// The client access URL it was opened with (recovery URLs derive from it).
        var url: URL
        /// When its current socket became usable (for the backoff reset).
        var upSince: Instant
        /// A `connected` message arrived on the current socket.
        var connectedOnSocket: Bool
        var lastDisconnectedMessage: String?
    }

    let options: WebPubSubClientOptions
    private(set) var lifecycle: Lifecycle = .stopped
    private(set) var session: Session?
    private(set) var joinedGroups: [String] = []
    private(set) var ledger = OperationLedger()
    private(set) var invocations = InvocationLedger()
    private(set) var sequence = SequenceTracker()
    /// The current socket, once asked for (events of any other socket are ignored).
    private(set) var socket: UInt64?
    private(set) var reconnectFailures = 0
    private(set) var recoveryFailures = 0
    private(set) var socketsOpened = 0
    private var attempts: UInt64 = 0
    private var sockets: UInt64 = 0
    private var pendingURL: URL?
    private var closedByUser = false
    private var openWaiters: [UInt64] = []
    private var closeWaiters: [UInt64] = []
    private var lastClose: (code: UInt16, reason: String)?
    private var lastReceived = Instant(nanoseconds: 0)
    private var nextPing: Instant?
    private var sequenceAckDue: Instant?
    private(set) var readingPaused = false
    private var jitter: JitterSource
    private var actions: [ClientAction] = []

    /// How long the close handshake of `close()` may take before the socket is dropped.
    static let closeGuard: TimeInterval = 7

    /// Whether `.record` actions are wanted.
    private let instrumented: Bool

    init(options: WebPubSubClientOptions, seed: UInt64) {
        self.options = options
        self.jitter = JitterSource(seed: seed)
        self.instrumented = options.instrumentation != nil
    }

    var isReliable: Bool { options.protocolType.isReliable }

    /// The public view of ``lifecycle``.
    var state: WebPubSubClientState {
        switch lifecycle {
        case .stopped: return .stopped
        case .connecting: return .connecting
        case .connected: return .connected
        case .recovering: return .recovering
        case .waitingToReconnect: return .disconnected
        case .stopping: return .stopping
        }
    }

    var isConnected: Bool { if case .connected = lifecycle { return true } else { return false } }

    // MARK: Open and close

    mutating func openRequested(token: UInt64, now: Instant) -> [ClientAction] {
        guard case .stopped = lifecycle else {
            let why = { if case .stopping = lifecycle { return "the client is closing" } else { return "the client is already open" } }()
            actions.append(.completeOpen(token: token, .failure(WebPubSubError(.alreadyOpen, "open() needs a stopped client: \(why)"))))
            return flush()
        }
        closedByUser = false
        reconnectFailures = 0
        recoveryFailures = 0
        openWaiters.append(token)
        log(.info, "opening", ["webpubsub.protocol": "\(options.protocolType.subprotocol)"])
        startNewConnection(now)
        return flush()
    }

    mutating func closeRequested(token: UInt64, now: Instant) -> [ClientAction] {
        switch lifecycle {
        case .stopped:
            closedByUser = true
            actions.append(.completeClose(token: token))
        case .stopping:
            closeWaiters.append(token)
        case .connected:
            closedByUser = true
            closeWaiters.append(token)
            log(.info, "closing", [:])
            lifecycle = .stopping(deadline: now.adding(Self.closeGuard))
            actions.append(.closeSocket)
        default:
            closedByUser = true
            closeWaiters.append(token)
            log(.info, "closing", [:])
            finishStop(now)
        }
        return flush()
    }

    // MARK: Connections

    private mutating func startNewConnection(_ now: Instant) {
        if openWaiters.isEmpty { record(.reconnecting) }
        attempts += 1
        lifecycle = .connecting(attempt: attempts, socket: nil, deadline: now.adding(options.startTimeout))
        actions.append(.fetchCredential(attempt: attempts))
    }

    mutating func credentialReturned(attempt: UInt64, _ result: Result<URL, any Error>, now: Instant) -> [ClientAction] {
        guard case .connecting(let current, nil, _) = lifecycle, current == attempt else { return [] }
        switch result {
        case .success(let url):
            session = nil
            sequence.reset()
            sequenceAckDue = nil
            pendingURL = url
            let id = newSocketID()
            lifecycle = .connecting(attempt: attempt, socket: id, deadline: now.adding(options.startTimeout))
            log(.debug, "connecting", ["webpubsub.url": "\(ProtocolRules.redacted(url))"])
            actions.append(.openSocket(id: id, url: url, timeout: options.startTimeout))
        case .failure(let error):
            log(.warning, "the credential failed", ["webpubsub.error": "\(error)"])
            newConnectionFailed(WebPubSubError(.openFailed, "the credential failed: \(error)", underlyingError: error), now)
        }
        return flush()
    }

    private mutating func newSocketID() -> UInt64 {
        sockets += 1
        socket = sockets
        return sockets
    }

    mutating func socketOpened(id: UInt64, now: Instant) -> [ClientAction] {
        guard id == socket else { return [] }
        socketsOpened += 1
        lastReceived = now
        switch lifecycle {
        case .recovering(_, .socket(id, _)):
            lifecycle = .connected(socket: id)
            session?.upSince = now
            session?.connectedOnSocket = false
            let connectionID = session?.connectionID ?? ""
            log(.info, "recovered the connection", ["webpubsub.connection_id": "\(connectionID)"])
            record(.connectionOpened(recovery: true))
            startConnectionTimers(now)
            if sequence.needsAck { sequenceAckDue = now }
            actions.append(.emit(.recovered(RecoveredEvent(connectionID: connectionID))))
            flushOutbox(now)
        case .connecting:
            log(.debug, "socket open; waiting for the connected message", [:])
        default:
            break
        }
        return flush()
    }

    mutating func socketClosed(id: UInt64, _ report: WebSocketCloseReport, now: Instant) -> [ClientAction] {
        guard id == socket else { return [] }
        socketLost(code: report.code.rawValue, reason: report.reason, error: report.error, now)
        return flush()
    }

    /// The current socket is gone (closed by the peer, failed, or dropped by the machine).
    private mutating func socketLost(code: UInt16, reason: String, error: WebSocketError?, _ now: Instant) {
        socket = nil
        lastClose = (code, reason)
        nextPing = nil
        var detail = "close \(code)"
        if !reason.isEmpty { detail += " \"\(reason)\"" }
        if let error { detail += ": \(error)" }
        failAllInvocations(WebPubSubError(.connectionLost, "the connection was lost before the invocation was answered (\(detail))", webSocketError: error), now)
        switch lifecycle {
        case .stopping:
            finishStop(now)
        case .connecting:
            log(.info, "connection attempt failed", ["webpubsub.detail": "\(detail)"])
            let message = error.map { describeOpenFailure($0) } ?? detail
            newConnectionFailed(WebPubSubError(.openFailed, "could not open the connection: \(message)", webSocketError: error), now)
        case .recovering(let windowEnds, _):
            recoveryFailures += 1
            if ProtocolRules.recoveryAttemptEndsRecovery(closeCode: code) {
                log(.info, "the service refused the recovery; opening a new connection", ["webpubsub.detail": "\(detail)"])
                sessionGone(now)
            } else {
                log(.debug, "recovery attempt failed", ["webpubsub.detail": "\(detail)"])
                scheduleRecoveryAttempt(windowEnds: windowEnds, now)
            }
        case .connected:
            requeueSentOperations(now)
            if let session, now.seconds(since: session.upSince) >= options.backoffResetInterval {
                reconnectFailures = 0
                recoveryFailures = 0
            } else {
                reconnectFailures += 1
                recoveryFailures += 1
            }
            let canResume = session?.reconnectionToken != nil
            switch ProtocolRules.afterLoss(reliable: isReliable, canResume: canResume, closeCode: code, autoReconnect: options.autoReconnect) {
            case .recover:
                let connectionID = session?.connectionID ?? ""
                log(.info, "connection lost; recovering", ["webpubsub.detail": "\(detail)", "webpubsub.connection_id": "\(connectionID)"])
                let windowEnds = now.adding(options.recoveryTimeout)
                record(.recovering)
                actions.append(.emit(.recovering(RecoveringEvent(connectionID: connectionID, closeCode: code, closeReason: reason))))
                // The first recovery after a loss is immediate; a connection that keeps dying soon
                // after it came back is recovered once per `recoveryRetryInterval`.
                if recoveryFailures <= 1 {
                    lifecycle = .recovering(windowEnds: windowEnds, step: .waiting(until: now))
                    attemptRecovery(now)
                } else {
                    scheduleRecoveryAttempt(windowEnds: windowEnds, now)
                }
            case .reconnect, .stop:
                log(.info, "connection lost", ["webpubsub.detail": "\(detail)"])
                sessionGone(now)
            }
        case .stopped, .waitingToReconnect:
            break
        }
    }

    private func describeOpenFailure(_ error: WebSocketError) -> String {
        var s = error.description
        if error.code == .upgradeRejected, !error.httpBody.isEmpty {
            s += ": \(error.httpBodyText.prefix(512))"
        }
        return s
    }

    private mutating func newConnectionFailed(_ error: WebPubSubError, _ now: Instant) {
        dropSocket()
        if !openWaiters.isEmpty {
            // The first open is not retried.
            lifecycle = .stopped
            for token in openWaiters { actions.append(.completeOpen(token: token, .failure(error))) }
            openWaiters.removeAll()
            failAllOperations(.notConnected, "the client could not open its connection", now)
            return
        }
        reconnectFailures += 1
        scheduleReconnect(now)
    }

    /// Abandons the current socket, if any: it is aborted and its later events are ignored.
    private mutating func dropSocket() {
        if socket != nil { actions.append(.abortSocket) }
        socket = nil
    }

    private mutating func scheduleReconnect(_ now: Instant) {
        guard reconnectFailures > 0 else {
            startNewConnection(now)
            return
        }
        guard let delay = options.reconnectRetryPolicy.delay(forRetry: reconnectFailures, random: jitter.next()) else {
            log(.warning, "giving up reconnecting", ["webpubsub.attempts": "\(reconnectFailures)"])
            finishStop(now)
            return
        }
        log(.debug, "reconnecting later", ["webpubsub.delay": "\(delay)", "webpubsub.attempt": "\(reconnectFailures)"])
        if delay <= 0 {
            startNewConnection(now)
        } else {
            lifecycle = .waitingToReconnect(until: now.adding(delay))
        }
    }

    private mutating func attemptRecovery(_ now: Instant) {
        guard case .recovering(let windowEnds, _) = lifecycle else { return }
        guard now < windowEnds, let session, let token = session.reconnectionToken,
            let url = ProtocolRules.recoveryURL(from: session.url, connectionID: session.connectionID, reconnectionToken: token)
        else {
            log(.info, "recovery window over", [:])
            sessionGone(now)
            return
        }
        let timeout = min(options.startTimeout, windowEnds.seconds(since: now))
        let id = newSocketID()
        lifecycle = .recovering(windowEnds: windowEnds, step: .socket(id: id, deadline: now.adding(timeout)))
        actions.append(.openSocket(id: id, url: url, timeout: timeout))
    }

    private mutating func scheduleRecoveryAttempt(windowEnds: Instant, _ now: Instant) {
        guard now < windowEnds else {
            lifecycle = .recovering(windowEnds: windowEnds, step: .waiting(until: now))
            log(.info, "recovery window over", [:])
            sessionGone(now)
            return
        }
        let until = min(now.adding(options.recoveryRetryInterval), windowEnds)
        lifecycle = .recovering(windowEnds: windowEnds, step: .waiting(until: until))
    }

    /// The connection is lost for good: report it, then reconnect or stop.
    private mutating func sessionGone(_ now: Instant) {
        dropSocket()
        nextPing = nil
        emitDisconnected()
        if options.autoReconnect && !closedByUser {
            scheduleReconnect(now)
        } else {
            finishStop(now)
        }
    }

    private mutating func emitDisconnected() {
        guard let s = session else { return }
        session = nil
        actions.append(.emit(.disconnected(DisconnectedEvent(
            connectionID: s.connectionID, message: s.lastDisconnectedMessage,
            closeCode: lastClose?.code, closeReason: lastClose?.reason))))
    }

    private mutating func finishStop(_ now: Instant) {
        if case .stopped = lifecycle, openWaiters.isEmpty, closeWaiters.isEmpty { return }
        dropSocket()
        lifecycle = .stopped
        nextPing = nil
        sequenceAckDue = nil
        let openFailure = WebPubSubError(.openFailed, "the client stopped before the connection was ready")
        for token in openWaiters { actions.append(.completeOpen(token: token, .failure(openFailure))) }
        openWaiters.removeAll()
        failAllOperations(.stopped, "the client stopped before the operation was acknowledged", now)
        failAllInvocations(WebPubSubError(.stopped, "the client stopped before the invocation was answered"), now)
        emitDisconnected()
        log(.info, "stopped", [:])
        actions.append(.emit(.stopped))
        for token in closeWaiters { actions.append(.completeClose(token: token)) }
        closeWaiters.removeAll()
    }

    private mutating func newConnectionReady(socket id: UInt64, _ now: Instant) {
        lifecycle = .connected(socket: id)
        let s = session!
        log(.info, "connected", ["webpubsub.connection_id": "\(s.connectionID)", "webpubsub.user_id": "\(s.userID ?? "")"])
        record(.connectionOpened(recovery: false))
        startConnectionTimers(now)
        if options.autoRejoinGroups {
            for group in joinedGroups { rejoin(group, now) }
        }
        flushOutbox(now)
        for token in openWaiters { actions.append(.completeOpen(token: token, .success(()))) }
        openWaiters.removeAll()
        actions.append(.emit(.connected(ConnectedEvent(connectionID: s.connectionID, userID: s.userID))))
    }

    private mutating func startConnectionTimers(_ now: Instant) {
        if let interval = options.keepAliveInterval, interval > 0 {
            nextPing = now.adding(interval)
        } else {
            nextPing = nil
        }
    }

    // MARK: Receiving

    /// A decoded service message arrived on socket `id`.
    mutating func received(_ message: DownstreamMessage, socket id: UInt64, now: Instant) -> [ClientAction] {
        guard id == socket else { return [] }
        lastReceived = now
        switch message {
        case .connected(let connectionID, let userID, let token):
            connectedReceived(connectionID: connectionID, userID: userID, token: token, socket: id, now)
        case .disconnected(let message):
            session?.lastDisconnectedMessage = message
            log(.info, "the service sent disconnected", ["webpubsub.message": "\(message ?? "")"])
        case .ack(let ackID, let success, let error):
            ackReceived(ackID: ackID, success: success, error: error, now)
        case .groupMessage(let group, let fromUserID, let content, let sequenceID):
            if accept(sequenceID, now) {
                record(.messageReceived(.group))
                actions.append(.emit(.groupMessage(GroupMessageEvent(group: group, fromUserID: fromUserID, content: content, sequenceID: sequenceID))))
            }
        case .serverMessage(let content, let sequenceID):
            if accept(sequenceID, now) {
                record(.messageReceived(.server))
                actions.append(.emit(.serverMessage(ServerMessageEvent(content: content, sequenceID: sequenceID))))
            }
        case .pong:
            break
        case .invokeResponse(let invocationID, let success, let content, let error):
            invokeResponseReceived(invocationID, success: success, content: content, error: error, now)
        case .unknown(let type):
            log(.debug, "skipping a message of unknown type", ["webpubsub.type": "\(type)"])
        case .malformed(let reason, let sequenceID):
            log(.warning, "skipping a malformed message", ["webpubsub.reason": "\(reason)"])
            _ = accept(sequenceID, now)
        }
        return flush()
    }

    /// A binary frame arrived (the JSON protocols have none): skipped.
    mutating func binaryReceived(bytes: Int, socket id: UInt64, now: Instant) -> [ClientAction] {
        guard id == socket else { return [] }
        lastReceived = now
        log(.warning, "skipping a binary message on a JSON protocol", ["webpubsub.bytes": "\(bytes)"])
        return flush()
    }

    private mutating func connectedReceived(connectionID: String, userID: String?, token: String?, socket id: UInt64, _ now: Instant) {
        if case .connecting(_, id?, _) = lifecycle, let url = pendingURL {
            session = Session(connectionID: connectionID, userID: userID, reconnectionToken: token, url: url,
                              upSince: now, connectedOnSocket: true, lastDisconnectedMessage: nil)
            newConnectionReady(socket: id, now)
            return
        }
        if var s = session, s.connectionID == connectionID, !s.connectedOnSocket {
            // After a recovery the service may confirm the same connection again.
            s.connectedOnSocket = true
            if let token { s.reconnectionToken = token }
            session = s
            return
        }
        log(.warning, "ignoring a second connected message on a live connection", [
            "webpubsub.connection_id": "\(session?.connectionID ?? "")", "webpubsub.received_connection_id": "\(connectionID)",
        ])
    }

    /// Sequence bookkeeping; false for a message that must not be delivered.
    private mutating func accept(_ sequenceID: UInt64?, _ now: Instant) -> Bool {
        guard isReliable, let sequenceID else { return true }
        switch sequence.receive(sequenceID) {
        case .deliver(let ackNow):
            if ackNow { sendSequenceAck() } else if sequenceAckDue == nil { sequenceAckDue = now.adding(options.sequenceAckInterval) }
            return true
        case .duplicate:
            if sequenceAckDue == nil { sequenceAckDue = now.adding(options.sequenceAckInterval) }
            log(.debug, "dropping a duplicate message", ["webpubsub.sequence_id": "\(sequenceID)"])
            return false
        case .violation:
            log(.warning, "a sequence id far beyond the last one; dropping the connection to recover it", [
                "webpubsub.sequence_id": "\(sequenceID)", "webpubsub.last_sequence_id": "\(sequence.lastSequenceID)",
            ])
            actions.append(.abortSocket)
            socketLost(code: 1006, reason: "", error: nil, now)
            return false
        }
    }

    private mutating func sendSequenceAck() {
        sequenceAckDue = nil
        guard isConnected, let id = sequence.takeAck() else { return }
        actions.append(.write(UpstreamMessage.sequenceAck(id).encoded(), serial: nil))
    }

    // MARK: Backpressure

    /// The shell stopped reading the socket (callbacks are behind): the keepalive time-out waits.
    mutating func pauseReadingRequested() { readingPaused = true }

    /// Reading again: silence is counted from now.
    mutating func readingResumed(now: Instant) {
        readingPaused = false
        lastReceived = now
    }

    // MARK: Timers

    /// The earliest time at which ``timerFired(now:)`` has something to do.
    mutating func nextDeadline() -> Instant? {
        var next: Instant?
        func consider(_ d: Instant?) {
            if let d, next.map({ d < $0 }) ?? true { next = d }
        }
        switch lifecycle {
        case .connecting(_, _, let deadline), .stopping(let deadline):
            consider(deadline)
        case .recovering(_, .waiting(let until)):
            consider(until)
        case .recovering(_, .socket(_, let deadline)):
            consider(deadline)
        case .waitingToReconnect(let until):
            consider(until)
        case .connected:
            consider(nextPing)
            consider(sequenceAckDue)
            if nextPing != nil && !readingPaused { consider(lastReceived.adding(options.keepAliveTimeout)) }
        case .stopped:
            break
        }
        consider(ledger.earliestDeadline())
        consider(invocations.earliestDeadline)
        return next
    }

    mutating func timerFired(now: Instant) -> [ClientAction] {
        switch lifecycle {
        case .connecting(_, let socketID, let deadline) where deadline <= now:
            let limit = options.startTimeout
            if socketID == nil {
                log(.warning, "the credential did not return in time", ["webpubsub.timeout": "\(limit)"])
                newConnectionFailed(WebPubSubError(.openFailed, "the credential did not return within \(limit) s"), now)
            } else {
                newConnectionFailed(WebPubSubError(.openFailed, "the connection was not ready within \(limit) s"), now)
            }
        case .recovering(_, .waiting(let until)) where until <= now:
            attemptRecovery(now)
        case .recovering(_, .socket(_, let deadline)) where deadline <= now:
            actions.append(.abortSocket)
            socketLost(code: 1006, reason: "", error: nil, now)
        case .waitingToReconnect(let until) where until <= now:
            startNewConnection(now)
        case .stopping(let deadline) where deadline <= now:
            log(.debug, "close handshake did not finish; dropping the socket", [:])
            finishStop(now)
        case .connected:
            if nextPing != nil, !readingPaused, now.seconds(since: lastReceived) >= options.keepAliveTimeout {
                log(.warning, "nothing received within the keepalive timeout; dropping the connection", ["webpubsub.timeout": "\(options.keepAliveTimeout)"])
                actions.append(.abortSocket)
                socketLost(code: 1006, reason: "", error: nil, now)
                break
            }
            if let due = sequenceAckDue, due <= now { sendSequenceAck() }
            if let ping = nextPing, ping <= now, let interval = options.keepAliveInterval {
                actions.append(.write(UpstreamMessage.ping.encoded(), serial: nil))
                nextPing = now.adding(interval)
            }
        default:
            break
        }
        for serial in ledger.takeDue(now) { operationDeadlinePassed(serial, now) }
        for id in invocations.due(now) {
            if isConnected { actions.append(.write(UpstreamMessage.cancelInvocation(invocationID: id).encoded(), serial: nil)) }
            finishInvocation(id, .failure(WebPubSubError(.invocationTimedOut, "no invocation response in time", invocationID: id)), now)
        }
        return flush()
    }

    // MARK: Operations

    /// A caller's operation. `timeout`: the caller's deadline for the whole operation.
    mutating func submit(_ request: OperationRequest, token: UInt64, ackID requested: UInt64?, fireAndForget: Bool,
                         timeout: TimeInterval? = nil, now: Instant) -> [ClientAction] {
        func fail(_ e: WebPubSubError) -> [ClientAction] {
            actions.append(.completeOperation(token: token, .failure(e.withAckID(requested))))
            return flush()
        }
        switch lifecycle {
        case .stopped:
            return fail(closedByUser ? WebPubSubError(.clientClosed, "the client was closed") : WebPubSubError(.notConnected, "the client is not open"))
        case .stopping:
            return fail(WebPubSubError(.clientClosed, "the client is closing"))
        default:
            break
        }
        let kind: OperationKind
        switch request {
        case .joinGroup(let g):
            if let e = ProtocolRules.check(group: g) { return fail(e) }
            kind = .join(g)
        case .leaveGroup(let g):
            if let e = ProtocolRules.check(group: g) { return fail(e) }
            kind = .leave(g)
        case .sendToGroup(let g, let content, _):
            if let e = ProtocolRules.check(group: g) ?? content.validate() { return fail(e) }
            kind = .send
        case .sendEvent(let name, let content):
            if let e = ProtocolRules.check(event: name) ?? content.validate() { return fail(e) }
            kind = .event
        }
        var ackID: UInt64?
        if fireAndForget {
            guard requested == nil else { return fail(WebPubSubError(.invalidArgument, "a fire-and-forget send has no ack id")) }
            guard kind == .send || kind == .event else { return fail(WebPubSubError(.invalidArgument, "only sends can be fire-and-forget")) }
        } else if let requested {
            guard !ledger.isPending(ackID: requested) else { return fail(WebPubSubError(.ackIDInUse, "another pending operation uses this ack id")) }
            ledger.reserve(ackID: requested)
            ackID = requested
        } else {
            ackID = ledger.allocateAckID()
        }
        let frame: String
        switch request {
        case .joinGroup(let g): frame = UpstreamMessage.joinGroup(group: g, ackID: ackID).encoded()
        case .leaveGroup(let g): frame = UpstreamMessage.leaveGroup(group: g, ackID: ackID).encoded()
        case .sendToGroup(let g, let content, let noEcho): frame = UpstreamMessage.sendToGroup(group: g, content: content, ackID: ackID, noEcho: noEcho).encoded()
        case .sendEvent(let name, let content): frame = UpstreamMessage.event(name: name, content: content, ackID: ackID).encoded()
        }
        if let e = ProtocolRules.check(frameBytes: frame.utf8.count, limit: options.maximumOutgoingMessageSize) {
            actions.append(.completeOperation(token: token, .failure(e.withAckID(ackID))))
            return flush()
        }
        let serial = ledger.add(origin: .caller(token), kind: kind, ackID: ackID, frame: frame,
                                overallDeadline: timeout.map { now.adding($0) }, now: now)
        dispatch(serial, now)
        return flush()
    }

    /// The outcome of a `.write` that carried a serial.
    mutating func writeFinished(serial: UInt64, accepted: Bool, now: Instant) -> [ClientAction] {
        guard let e = ledger[serial] else { return [] }
        if !accepted {
            retryOrFail(serial, WebPubSubError(.connectionLost, "the socket did not take the message (its output buffer is full)", ackID: e.ackID), now)
        } else if e.isFireAndForget {
            complete(serial, .success(WebPubSubResult(ackID: nil, isDuplicated: false)), now)
        }
        return flush()
    }

    /// A caller gave up on an operation (task cancelled, handle cancelled): it fails with
    /// `.cancelled` now, and is not sent if it was not yet.
    mutating func cancelOperation(token: UInt64, now: Instant) -> [ClientAction] {
        if let serial = ledger.serial(forToken: token), let e = ledger[serial] {
            let sent = e.phase == .sent || e.retries > 0
            complete(serial, .failure(WebPubSubError(
                .cancelled, sent ? "cancelled after it was sent; the service may still carry it out" : "cancelled before it was sent",
                ackID: e.ackID)), now)
        } else if let id = invocations.id(forToken: token) {
            if isConnected { actions.append(.write(UpstreamMessage.cancelInvocation(invocationID: id).encoded(), serial: nil)) }
            finishInvocation(id, .failure(WebPubSubError(.cancelled, "the invocation was cancelled", invocationID: id)), now)
        }
        return flush()
    }

    /// One attempt: write now when connected, else wait in the outbox; bounded by the ack time-out.
    private mutating func dispatch(_ serial: UInt64, _ now: Instant) {
        guard let e = ledger[serial] else { return }
        guard isConnected else {
            ledger.set(serial, phase: .queued, until: now.adding(options.ackTimeout))
            return
        }
        if e.isFireAndForget {
            ledger.update(serial) { $0.phase = .sent }
        } else {
            ledger.set(serial, phase: .sent, until: now.adding(options.ackTimeout))
        }
        record(.messageSent(e.kind.instrumentationKind))
        actions.append(.write(e.frame, serial: e.isFireAndForget ? serial : nil))
    }

    private mutating func flushOutbox(_ now: Instant) {
        for serial in ledger.takeOutbox() {
            if let e = ledger[serial], e.retries > 0 || e.ackID != nil {
                log(.debug, "sending a pending operation", ["webpubsub.op": "\(e.kind.name)", "webpubsub.ack_id": "\(e.ackID.map(String.init) ?? "-")"])
            }
            dispatch(serial, now)
        }
    }

    /// The connection dropped: what was written and not acked is written again (same ack id) on the
    /// recovered or new connection; each resend counts against the retry policy.
    private mutating func requeueSentOperations(_ now: Instant) {
        for serial in ledger.sentSerials {
            guard let e = ledger[serial] else { continue }
            let error = WebPubSubError(.connectionLost, "the connection was lost before the ack arrived", ackID: e.ackID)
            let retries = e.retries + 1
            guard options.messageRetryPolicy.delay(forRetry: retries) != nil else {
                complete(serial, .failure(error), now)
                continue
            }
            ledger.update(serial) {
                $0.retries = retries
                $0.lastError = error
            }
            record(.retried(e.kind.instrumentationKind))
            ledger.set(serial, phase: .queued, until: now.adding(options.ackTimeout))
        }
    }

    private mutating func operationDeadlinePassed(_ serial: UInt64, _ now: Instant) {
        guard let e = ledger[serial] else { return }
        if let overall = e.overallDeadline, overall <= now {
            complete(serial, .failure(WebPubSubError(.timedOut, "the operation did not finish before its deadline", ackID: e.ackID)), now)
            return
        }
        guard e.deadline <= now else { return }
        switch e.phase {
        case .sent:
            retryOrFail(serial, WebPubSubError(.ackTimeout, "no ack within \(options.ackTimeout) s", ackID: e.ackID), now)
        case .queued:
            retryOrFail(serial, WebPubSubError(.connectionLost, "not connected within \(options.ackTimeout) s", ackID: e.ackID), now)
        case .retryWait:
            dispatch(serial, now)
        }
    }

    private mutating func retryOrFail(_ serial: UInt64, _ error: WebPubSubError, _ now: Instant) {
        guard let e = ledger[serial] else { return }
        guard error.isTransient else {
            complete(serial, .failure(error), now)
            return
        }
        let retries = e.retries + 1
        guard let delay = options.messageRetryPolicy.delay(forRetry: retries, random: jitter.next()) else {
            complete(serial, .failure(error), now)
            return
        }
        log(.debug, "retrying", ["webpubsub.op": "\(e.kind.name)", "webpubsub.ack_id": "\(e.ackID.map(String.init) ?? "-")",
                                 "webpubsub.delay": "\(delay)", "webpubsub.error": "\(error.code)"])
        ledger.update(serial) {
            $0.retries = retries
            $0.lastError = error
        }
        record(.retried(e.kind.instrumentationKind))
        ledger.set(serial, phase: .retryWait, until: now.adding(delay))
    }

    private mutating func ackReceived(ackID: UInt64, success: Bool, error: ServiceErrorDetail?, _ now: Instant) {
        guard let serial = ledger.serial(forAckID: ackID), let e = ledger[serial] else {
            log(.debug, "ack for no pending operation", ["webpubsub.ack_id": "\(ackID)"])
            return
        }
        // An ack for this id answers the operation whatever attempt it came from: the id is the same.
        if success {
            complete(serial, .success(WebPubSubResult(ackID: ackID, isDuplicated: false)), now)
        } else if error?.name == ProtocolRules.duplicateErrorName {
            complete(serial, .success(WebPubSubResult(ackID: ackID, isDuplicated: true)), now)
        } else {
            let name = error?.name ?? ""
            retryOrFail(serial, WebPubSubError(
                .serviceError, "the service refused \(e.kind.name): \(name.isEmpty ? "no error name" : name)",
                ackID: ackID, errorName: error?.name, errorMessage: error?.message), now)
        }
    }

    private mutating func complete(_ serial: UInt64, _ result: Result<WebPubSubResult, WebPubSubError>, _ now: Instant) {
        guard let e = ledger.remove(serial) else { return }
        if instrumented {
            let failure: WebPubSubError.Code? = if case .failure(let error) = result { error.code } else { nil }
            record(.finished(e.kind.instrumentationKind, latency: now.seconds(since: e.submittedAt), failure: failure))
        }
        if case .success = result {
            switch e.kind {
            case .join(let group), .rejoin(let group):
                if !joinedGroups.contains(group) { joinedGroups.append(group) }
            case .leave(let group):
                joinedGroups.removeAll { $0 == group }
            case .send, .event:
                break
            }
        }
        switch e.origin {
        case .caller(let token):
            actions.append(.completeOperation(token: token, result))
        case .rejoin:
            guard case .failure(let error) = result, case .rejoin(let group) = e.kind else { return }
            log(.warning, "rejoining a group failed", ["webpubsub.group": "\(group)", "webpubsub.error": "\(error)"])
            if error.code != .stopped {
                joinedGroups.removeAll { $0 == group }
                actions.append(.emit(.rejoinGroupFailed(RejoinGroupFailedEvent(group: group, error: error))))
            }
        }
    }

    private mutating func rejoin(_ group: String, _ now: Instant) {
        let id = ledger.allocateAckID()
        let serial = ledger.add(origin: .rejoin, kind: .rejoin(group), ackID: id,
                                frame: UpstreamMessage.joinGroup(group: group, ackID: id).encoded(), overallDeadline: nil, now: now)
        dispatch(serial, now)
    }

    private mutating func failAllOperations(_ code: WebPubSubError.Code, _ message: String, _ now: Instant) {
        for serial in ledger.allSerials {
            guard let e = ledger[serial] else { continue }
            var error = WebPubSubError(code, message, ackID: e.ackID)
            if let last = e.lastError {
                error = WebPubSubError(code, "\(message) (last attempt: \(last.message))", ackID: e.ackID,
                                       errorName: last.errorName, errorMessage: last.errorMessage, webSocketError: last.webSocketError)
            }
            complete(serial, .failure(error), now)
        }
    }

    // MARK: Invocations

    mutating func invoke(event: String, content: MessageContent, invocationID requested: String?, timeout: TimeInterval?,
                         token: UInt64, now: Instant) -> [ClientAction] {
        func fail(_ e: WebPubSubError) -> [ClientAction] {
            actions.append(.completeInvocation(token: token, .failure(requested.map { e.withInvocationID($0) } ?? e)))
            return flush()
        }
        if let e = ProtocolRules.check(event: event) ?? content.validate() { return fail(e) }
        guard isConnected else {
            let stoppedByUser = closedByUser && lifecycle == .stopped
            return fail(WebPubSubError(stoppedByUser ? .clientClosed : .notConnected, "invokeEvent needs a connected client"))
        }
        let id: String
        if let requested {
            guard !invocations.isPending(requested) else { return fail(WebPubSubError(.invalidArgument, "another pending invocation uses this id")) }
            id = requested
        } else {
            id = invocations.allocateID()
        }
        let frame = UpstreamMessage.invoke(invocationID: id, event: event, content: content).encoded()
        if let e = ProtocolRules.check(frameBytes: frame.utf8.count, limit: options.maximumOutgoingMessageSize) {
            return fail(e.withInvocationID(id))
        }
        invocations.add(id, token: token, deadline: now.adding(timeout ?? options.ackTimeout), now: now)
        record(.messageSent(.invokeEvent))
        actions.append(.write(frame, serial: nil))
        return flush()
    }

    mutating func cancelInvocation(_ id: String, now: Instant) -> [ClientAction] {
        guard invocations.isPending(id) else { return [] }
        if isConnected { actions.append(.write(UpstreamMessage.cancelInvocation(invocationID: id).encoded(), serial: nil)) }
        finishInvocation(id, .failure(WebPubSubError(.invocationCancelled, "the invocation was cancelled", invocationID: id)), now)
        return flush()
    }

    private mutating func invokeResponseReceived(_ id: String, success: Bool?, content: MessageContent?, error: ServiceErrorDetail?, _ now: Instant) {
        guard invocations.isPending(id) else {
            log(.debug, "invokeResponse for no pending invocation", ["webpubsub.invocation_id": "\(id)"])
            return
        }
        switch success {
        case true?:
            finishInvocation(id, .success(InvokeEventResult(invocationID: id, content: content)), now)
        case false?:
            finishInvocation(id, .failure(WebPubSubError(
                .invocationFailed, "the invocation failed: \(error?.name ?? "")", invocationID: id,
                errorName: error?.name, errorMessage: error?.message)), now)
        case nil:
            finishInvocation(id, .failure(WebPubSubError(.invocationFailed, "unsupported invokeResponse (no success field)", invocationID: id)), now)
        }
    }

    private mutating func finishInvocation(_ id: String, _ result: Result<InvokeEventResult, WebPubSubError>, _ now: Instant) {
        guard let entry = invocations.remove(id) else { return }
        if instrumented {
            let failure: WebPubSubError.Code? = if case .failure(let error) = result { error.code } else { nil }
            record(.finished(.invokeEvent, latency: now.seconds(since: entry.submittedAt), failure: failure))
        }
        actions.append(.completeInvocation(token: entry.token, result))
    }

    private mutating func failAllInvocations(_ error: WebPubSubError, _ now: Instant) {
        for id in invocations.allIDs { finishInvocation(id, .failure(error.withInvocationID(id)), now) }
    }

    // MARK: Output

    private mutating func record(_ event: WebPubSubInstrumentationEvent) {
        if instrumented { actions.append(.record(event)) }
    }

    private mutating func log(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) {
        actions.append(.log(level, message, metadata))
    }

    private mutating func flush() -> [ClientAction] {
        let out = actions
        actions = []
        return out
    }
}
