import Dispatch
import Foundation
import Logging

/// An Azure Web PubSub client for long-running services.
///
/// ```swift
/// let client = WebPubSubClient(credential: { try fetchClientAccessURL() })
/// client.subscribe(.groupMessage) { event in print(event.group, event.content) }
/// try client.open()
/// try client.joinGroup("chat")
/// try client.sendToGroup("chat", .text("hello"))
/// client.close()
/// ```
///
/// Threading: a client is safe to use from any thread. All its state lives on one private serial
/// queue, which also runs its socket and timers. Callbacks and completion handlers run one at a time,
/// in the order things happened, on ``WebPubSubClientOptions/callbackQueue``. The blocking calls
/// (`open`, `joinGroup`, `sendToGroup`, …) may be made from any thread, a callback included;
/// ``close()`` never deadlocks.
public final class WebPubSubClient: @unchecked Sendable {  // every mutable stored property is confined to `queue`
    /// Returns a fresh client access URL (`wss://…/client/hubs/HUB?access_token=…`). Called on
    /// ``open()`` and before every reconnect, never for a recovery. It may block; it never runs on the
    /// client's queue.
    public typealias Credential = @Sendable () throws -> URL

    /// The options the client was made with.
    public let options: WebPubSubClientOptions

    private let credential: Credential
    private let queue: DispatchQueue
    private let registry: CallbackRegistry
    private let logger: Logger
    private let makeTransport: TransportFactory

    // MARK: State (confined to `queue`)

    private enum Phase: Equatable {
        case stopped, connecting, connected, recovering, disconnected, stopping
    }

    private var phase: Phase = .stopped
    /// `close()` was called and the client was not opened again.
    private var closedByUser = false
    private var transport: (any ClientTransport)?
    /// Bumped for every socket and every abandoned attempt: events of older sockets are ignored.
    private var generation: UInt64 = 0
    private var clientAccessURL: URL?
    private var currentConnectionID: String?
    private var currentUserID: String?
    private var reconnectionToken: String?
    private var lastDisconnectedMessage: String?
    /// A `connected` arrived on the current session and `disconnected` was not yet reported.
    private var sessionLive = false
    private var reconnectAttempt = 0
    private var recoveryDeadline: DispatchTime = .now()
    private var sequence = SequenceTracker()
    private var lastReceived: DispatchTime = .now()
    private var lastPingSent: DispatchTime = .now()
    /// Sockets that opened (new connections and recoveries), for tests.
    private var openedSocketCount = 0

    /// Groups this client joined (successfully), in join order.
    private var joinedGroups: [String] = []

    private var nextAckID: UInt64 = 0
    private var nextSerial: UInt64 = 0
    private var operations: [UInt64: Operation] = [:]  // by serial
    private var ackIndex: [UInt64: UInt64] = [:]  // ackID → serial
    private var outbox: [UInt64] = []  // serials waiting for a connection

    private var nextInvocationID: UInt64 = 0
    private var invocations: [String: Invocation] = [:]

    private var openWaiters: [(Result<Void, WebPubSubError>) -> Void] = []
    private var stopWaiters: [() -> Void] = []

    private var connectTimer: (any DispatchSourceTimer)?
    private var retryTimer: (any DispatchSourceTimer)?
    private var sequenceAckTimer: (any DispatchSourceTimer)?
    private var keepAliveTimer: (any DispatchSourceTimer)?
    private var closeTimer: (any DispatchSourceTimer)?

    private enum OperationKind {
        case join(String), leave(String), rejoin(String), send, event
        var name: String {
            switch self {
            case .join: return "joinGroup"
            case .leave: return "leaveGroup"
            case .rejoin: return "rejoinGroup"
            case .send: return "sendToGroup"
            case .event: return "sendEvent"
            }
        }
    }

    private enum OperationState { case queued, sent, retryWait }

    /// One public operation through all its attempts (confined to `queue`).
    private final class Operation {
        let serial: UInt64
        let kind: OperationKind
        let ackID: UInt64?
        let frame: String
        var retries = 0
        var state: OperationState = .queued
        var timer: (any DispatchSourceTimer)?
        var lastError: WebPubSubError?
        let completion: (Result<WebPubSubResult, WebPubSubError>) -> Void

        init(serial: UInt64, kind: OperationKind, ackID: UInt64?, frame: String,
             completion: @escaping (Result<WebPubSubResult, WebPubSubError>) -> Void) {
            self.serial = serial
            self.kind = kind
            self.ackID = ackID
            self.frame = frame
            self.completion = completion
        }
    }

    /// One pending `invoke` (confined to `queue`).
    private final class Invocation {
        var timer: (any DispatchSourceTimer)?
        let completion: (Result<InvokeEventResult, WebPubSubError>) -> Void
        init(completion: @escaping (Result<InvokeEventResult, WebPubSubError>) -> Void) { self.completion = completion }
    }

    // MARK: Creating

    /// Creates a client that gets a fresh client access URL from `credential` on ``open()`` and on
    /// every reconnect (never on a recovery).
    public convenience init(credential: @escaping Credential, options: WebPubSubClientOptions = .init()) {
        self.init(credential: credential, options: options, transportFactory: WebSocketTransport.factory)
    }

    /// Creates a client for a fixed client access URL. Once its token expires, reconnects fail; use
    /// ``init(credential:options:)`` for long-lived clients.
    public convenience init(url: URL, options: WebPubSubClientOptions = .init()) {
        self.init(credential: { url }, options: options)
    }

    init(credential: @escaping Credential, options: WebPubSubClientOptions, transportFactory: @escaping TransportFactory) {
        self.credential = credential
        self.options = options
        self.makeTransport = transportFactory
        // The private queue never blocks: a non-overcommitting target, so thousands of idle clients
        // cost memory, not threads. The default callback queue is a plain (overcommitting) serial
        // queue, because a callback may block on this client (a blocking call from a callback).
        self.queue = DispatchQueue(label: "WebPubSubClient", target: .global())
        self.registry = CallbackRegistry(callbackQueue: options.callbackQueue ?? DispatchQueue(label: "WebPubSubClient.callbacks"))
        self.logger = options.logger
    }

    deinit {
        // Nothing else references the client now; stop its socket and timers.
        for t in [connectTimer, retryTimer, sequenceAckTimer, keepAliveTimer, closeTimer] { t?.cancel() }
        for op in operations.values { op.timer?.cancel() }
        for inv in invocations.values { inv.timer?.cancel() }
        transport?.abort()
    }

    // MARK: Callbacks

    /// Registers `handler` for the events of `type`; it runs on the callback queue, in event order.
    ///
    /// Registrations survive reconnects and `close()`/`open()`.
    ///
    /// ```swift
    /// client.subscribe(.groupMessage) { event in print(event.group, event.content) }
    /// ```
    @discardableResult
    public func subscribe<Event>(_ type: CallbackType<Event>, _ handler: @escaping @Sendable (Event) -> Void) -> Subscription {
        registry.add(type, handler)
    }

    /// Removes a registration. When this returns, its handler is not running and will not run again
    /// (called from a callback, the handler that is running finishes, and no later one starts).
    public func unsubscribe(_ subscription: Subscription) {
        registry.remove(subscription)
    }

    // MARK: Properties

    /// Whether the client is connected now (operations are sent at once).
    public var isConnected: Bool { onQueue { self.phase == .connected } }

    /// The id of the current connection, once the service's `connected` message has arrived.
    public var connectionID: String? { onQueue { self.currentConnectionID } }

    /// The user id of the current connection, if its token had one.
    public var userID: String? { onQueue { self.currentUserID } }

    /// Where the client is in its life.
    public var state: WebPubSubClientState {
        onQueue {
            switch self.phase {
            case .stopped: return .stopped
            case .connecting: return .connecting
            case .connected: return .connected
            case .recovering: return .recovering
            case .disconnected: return .disconnected
            case .stopping: return .stopping
            }
        }
    }

    /// The groups this client joined (and would rejoin on a new connection).
    public var joinedGroupNames: [String] { onQueue { self.joinedGroups } }

    /// How many sockets opened so far (new connections and recoveries); for tests.
    var socketsOpened: Int { onQueue { self.openedSocketCount } }

    private func onQueue<T>(_ body: () -> T) -> T {
        dispatchPrecondition(condition: .notOnQueue(queue))
        return queue.sync(execute: body)
    }

    // MARK: Open and close

    /// Opens the connection and waits until the service's `connected` message arrived (so
    /// ``connectionID`` is set), at most ``WebPubSubClientOptions/startTimeout``.
    ///
    /// The first open is not retried: on failure the client is stopped again.
    /// - Throws: ``WebPubSubError`` `.alreadyOpen` unless the client is stopped; `.openFailed`.
    public func open() throws(WebPubSubError) {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let waiter = Waiter<Result<Void, WebPubSubError>>()
        queue.async { self.startOpen { waiter.fulfill($0) } }
        try waiter.wait().get()
    }

    /// Opens the connection without blocking; `completion` runs on the callback queue.
    public func open(completion: @escaping @Sendable (Result<Void, WebPubSubError>) -> Void) {
        queue.async {
            self.startOpen { result in self.registry.run { completion(result) } }
        }
    }

    /// Closes the connection (close code 1000) and stops the client; `.disconnected` (when a
    /// connection was up) and `.stopped` follow. Pending operations fail with `.stopped`.
    ///
    /// Blocks until the client is stopped (at most a few seconds: the close handshake is bounded);
    /// callable from any thread, a callback included; idempotent. The client can be opened again.
    public func close() {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let waiter = Waiter<Bool>()
        queue.async { self.startClose { waiter.fulfill(true) } }
        _ = waiter.wait(timeout: 10)
    }

    /// Closes without blocking; `completion` runs on the callback queue once the client is stopped.
    public func close(completion: @escaping @Sendable () -> Void) {
        queue.async { self.startClose { self.registry.run(completion) } }
    }

    private func startOpen(_ completion: @escaping (Result<Void, WebPubSubError>) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .stopped else {
            let why = phase == .stopping ? "the client is closing" : "the client is already open"
            completion(.failure(WebPubSubError(.alreadyOpen, "open() needs a stopped client: \(why)")))
            return
        }
        closedByUser = false
        reconnectAttempt = 0
        openWaiters.append(completion)
        logger.info("opening", metadata: ["protocol": "\(options.protocolType.subprotocol)"])
        startNewConnection()
    }

    private func startClose(_ done: @escaping () -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch phase {
        case .stopped:
            closedByUser = true
            done()
        case .stopping:
            stopWaiters.append(done)
        default:
            closedByUser = true
            stopWaiters.append(done)
            logger.info("closing")
            let wasConnected = phase == .connected
            phase = .stopping
            cancelTimer(&connectTimer)
            cancelTimer(&retryTimer)
            stopConnectionTimers()
            if wasConnected, let transport {
                transport.close()
                // The transport bounds its close handshake; this is a second guard.
                closeTimer = makeTimer(after: 7) { [weak self] in
                    guard let self else { return }
                    self.logger.debug("close handshake did not finish; dropping the socket")
                    self.dropTransport()
                    self.finishStop()
                }
            } else {
                dropTransport()
                finishStop()
            }
        }
    }

    /// Abandons the current socket: its later events are ignored.
    private func dropTransport() {
        dispatchPrecondition(condition: .onQueue(queue))
        generation &+= 1
        transport?.abort()
        transport = nil
    }

    private func finishStop() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase != .stopped else { return }
        phase = .stopped
        for t in [connectTimer, retryTimer, closeTimer] { t?.cancel() }
        connectTimer = nil
        retryTimer = nil
        closeTimer = nil
        stopConnectionTimers()
        dropTransport()
        let openFailure = WebPubSubError(.openFailed, "the client stopped before the connection was ready")
        failOpenWaiters(openFailure)
        failAllOperations(code: .stopped, "the client stopped before the operation was acknowledged")
        failAllInvocations(WebPubSubError(.stopped, "the client stopped before the invocation was answered"))
        if sessionLive {
            sessionLive = false
            registry.emit(.disconnected, DisconnectedEvent(connectionID: currentConnectionID, message: lastDisconnectedMessage))
        }
        logger.info("stopped")
        registry.emit(.stopped, StoppedEvent())
        let waiters = stopWaiters
        stopWaiters.removeAll()
        for w in waiters { w() }
    }

    private func failOpenWaiters(_ error: WebPubSubError) {
        let waiters = openWaiters
        openWaiters.removeAll()
        for w in waiters { w(.failure(error)) }
    }

    // MARK: Connections

    /// A new connection (open or reconnect): fresh URL from the credential, fresh session state.
    private func startNewConnection() {
        dispatchPrecondition(condition: .onQueue(queue))
        phase = .connecting
        generation &+= 1
        let attemptGeneration = generation
        let credential = self.credential
        let queue = self.queue
        // A credential that never returns must not hang open() or a reconnect.
        cancelTimer(&connectTimer)
        let limit = options.startTimeout
        connectTimer = makeTimer(after: limit) { [weak self] in
            guard let self, self.phase == .connecting, self.generation == attemptGeneration else { return }
            self.logger.warning("the credential did not return within \(limit) s")
            self.generation &+= 1  // its late answer is ignored
            self.newConnectionFailed("the credential did not return within \(limit) s")
        }
        DispatchQueue.global().async { [weak self] in
            let result = Result { try credential() }
            guard let self else { return }
            queue.async { self.credentialReturned(result, generation: attemptGeneration) }
        }
    }

    private func credentialReturned(_ result: Result<URL, any Error>, generation attemptGeneration: UInt64) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .connecting, attemptGeneration == generation else { return }
        switch result {
        case .success(let url):
            clientAccessURL = url
            sequence.reset()
            currentConnectionID = nil
            reconnectionToken = nil
            lastDisconnectedMessage = nil
            connect(to: url, timeout: options.startTimeout)
        case .failure(let error):
            logger.warning("the credential failed", metadata: ["error": "\(error)"])
            newConnectionFailed("the credential failed: \(error)")
        }
    }

    private func connect(to url: URL, timeout: TimeInterval) {
        dispatchPrecondition(condition: .onQueue(queue))
        generation &+= 1
        let socketGeneration = generation
        logger.debug("connecting", metadata: ["url": "\(redacted(url))"])
        var agent = "swift-webpubsub-client/1.0 (Linux)"
        if let prefix = options.userAgent, !prefix.isEmpty { agent = prefix + " " + agent }
        let request = TransportRequest(
            url: url, subprotocol: options.protocolType.subprotocol, userAgent: agent,
            maximumMessageSize: options.maximumMessageSize, connectTimeout: timeout, tls: options.tls)
        let socket = makeTransport(request, queue, logger)
        transport = socket
        cancelTimer(&connectTimer)
        connectTimer = makeTimer(after: timeout) { [weak self] in
            guard let self, self.generation == socketGeneration else { return }
            self.logger.debug("connection attempt timed out")
            self.dropTransport()
            self.socketClosed(code: 1006, reason: "", error: "timed out after \(timeout) s")
        }
        socket.start(TransportEvents(
            onOpen: { [weak self] in
                guard let self, self.generation == socketGeneration else { return }
                self.socketOpened()
            },
            onText: { [weak self] text in
                guard let self, self.generation == socketGeneration else { return }
                self.received(text)
            },
            onBinary: { [weak self] count in
                guard let self, self.generation == socketGeneration else { return }
                self.lastReceived = .now()
                self.logger.warning("skipping a binary message on a JSON protocol", metadata: ["bytes": "\(count)"])
            },
            onClose: { [weak self] code, reason, error in
                guard let self, self.generation == socketGeneration else { return }
                self.transport = nil
                self.socketClosed(code: code, reason: reason, error: error)
            }))
    }

    private func socketOpened() {
        dispatchPrecondition(condition: .onQueue(queue))
        lastReceived = .now()
        openedSocketCount += 1
        switch phase {
        case .recovering:
            cancelTimer(&connectTimer)
            cancelTimer(&retryTimer)
            phase = .connected
            logger.info("recovered the connection", metadata: ["connectionId": "\(currentConnectionID ?? "")"])
            startConnectionTimers()
            flushOutbox()
        case .connecting:
            // Wait for the `connected` message (bounded by the connect timer).
            logger.debug("socket open; waiting for the connected message")
        default:
            break
        }
    }

    private func socketClosed(code: UInt16, reason: String, error: String?) {
        dispatchPrecondition(condition: .onQueue(queue))
        cancelTimer(&connectTimer)
        stopConnectionTimers()
        let detail = "close \(code)\(reason.isEmpty ? "" : " \"\(reason)\"")\(error.map { ": \($0)" } ?? "")"
        failAllInvocations(WebPubSubError(.connectionLost, "the connection was lost before the invocation was answered (\(detail))"))
        switch phase {
        case .stopping:
            finishStop()
        case .connecting:
            logger.info("connection attempt failed", metadata: ["detail": "\(detail)"])
            newConnectionFailed(detail)
        case .recovering:
            logger.debug("recovery attempt failed", metadata: ["detail": "\(detail)"])
            scheduleRecoveryAttempt()
        case .connected:
            requeueSentOperations()
            let canRecover = code != 1008 && options.protocolType.isReliable
                && currentConnectionID != nil && reconnectionToken != nil
            if canRecover {
                logger.info("connection lost; recovering", metadata: ["detail": "\(detail)"])
                phase = .recovering
                recoveryDeadline = .now() + options.recoveryTimeout
                attemptRecovery()
            } else {
                logger.info("connection lost", metadata: ["detail": "\(detail)"])
                connectionGone()
            }
        case .stopped, .disconnected:
            break
        }
    }

    private func newConnectionFailed(_ detail: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        dropTransport()
        if !openWaiters.isEmpty {
            // The first open is not retried.
            phase = .stopped
            failOpenWaiters(WebPubSubError(.openFailed, "could not open the connection: \(detail)"))
            failAllOperations(code: .notConnected, "the client could not open its connection")
            return
        }
        reconnectAttempt += 1
        guard let delay = options.reconnectRetryPolicy.delay(forRetry: reconnectAttempt) else {
            logger.warning("giving up reconnecting", metadata: ["attempts": "\(reconnectAttempt)"])
            finishStop()
            return
        }
        phase = .disconnected
        logger.debug("reconnecting later", metadata: ["delay": "\(delay)", "attempt": "\(reconnectAttempt)"])
        retryTimer = makeTimer(after: delay) { [weak self] in
            guard let self, self.phase == .disconnected else { return }
            self.startNewConnection()
        }
    }

    private func attemptRecovery() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .recovering else { return }
        let remaining = Double(Int64(recoveryDeadline.uptimeNanoseconds) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1e9
        guard remaining > 0, let base = clientAccessURL, let id = currentConnectionID, let token = reconnectionToken,
            let url = recoveryURL(from: base, connectionID: id, reconnectionToken: token)
        else {
            logger.info("recovery window over")
            connectionGone()
            return
        }
        connect(to: url, timeout: min(options.startTimeout, remaining))
    }

    private func scheduleRecoveryAttempt() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard DispatchTime.now() < recoveryDeadline else {
            logger.info("recovery window over")
            connectionGone()
            return
        }
        cancelTimer(&retryTimer)
        retryTimer = makeTimer(after: options.recoveryRetryInterval) { [weak self] in
            self?.attemptRecovery()
        }
    }

    /// The connection is lost for good: report it, then reconnect or stop.
    private func connectionGone() {
        dispatchPrecondition(condition: .onQueue(queue))
        dropTransport()
        cancelTimer(&retryTimer)
        phase = .disconnected
        if sessionLive {
            sessionLive = false
            registry.emit(.disconnected, DisconnectedEvent(connectionID: currentConnectionID, message: lastDisconnectedMessage))
        }
        if options.autoReconnect {
            reconnectAttempt = 0
            startNewConnection()
        } else {
            finishStop()
        }
    }

    // MARK: Timers

    private func makeTimer(after seconds: TimeInterval, repeating: TimeInterval? = nil,
                           _ handler: @escaping @Sendable () -> Void) -> any DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        if let repeating {
            timer.schedule(deadline: .now() + seconds, repeating: repeating, leeway: .milliseconds(10))
        } else {
            timer.schedule(deadline: .now() + seconds, leeway: .milliseconds(5))
        }
        timer.setEventHandler(handler: handler)
        timer.resume()
        return timer
    }

    private func cancelTimer(_ timer: inout (any DispatchSourceTimer)?) {
        timer?.cancel()
        timer = nil
    }

    private func startConnectionTimers() {
        dispatchPrecondition(condition: .onQueue(queue))
        stopConnectionTimers()
        if options.protocolType.isReliable {
            let interval = options.sequenceAckInterval
            sequenceAckTimer = makeTimer(after: interval, repeating: interval) { [weak self] in
                self?.sendSequenceAckIfNeeded()
            }
        }
        if let interval = options.keepAliveInterval, interval > 0 {
            let tick = max(0.01, min(interval, options.keepAliveTimeout / 4))
            lastPingSent = .now()
            keepAliveTimer = makeTimer(after: tick, repeating: tick) { [weak self] in
                self?.keepAliveTick()
            }
        }
    }

    private func stopConnectionTimers() {
        cancelTimer(&sequenceAckTimer)
        cancelTimer(&keepAliveTimer)
    }

    private func seconds(since t: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds &- t.uptimeNanoseconds) / 1e9
    }

    private func keepAliveTick() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .connected, let interval = options.keepAliveInterval else { return }
        if seconds(since: lastReceived) > options.keepAliveTimeout {
            logger.warning("nothing received for \(options.keepAliveTimeout) s; dropping the connection")
            dropTransport()
            socketClosed(code: 1006, reason: "", error: "keepalive timeout")
            return
        }
        if seconds(since: lastPingSent) >= interval * 0.999 {
            lastPingSent = .now()
            write(UpstreamMessage.ping.encoded())
        }
    }

    private func sendSequenceAckIfNeeded() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .connected, let id = sequence.takeAck() else { return }
        logger.trace("sequenceAck", metadata: ["sequenceId": "\(id)"])
        if !write(UpstreamMessage.sequenceAck(id).encoded()) { sequence.ackFailed() }
    }

    // MARK: Receiving

    @discardableResult
    private func write(_ text: String) -> Bool {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let transport else { return false }
        if options.logsMessagePayloads { logger.trace("send", metadata: ["payload": "\(text)"]) }
        return transport.send(text: text)
    }

    private func received(_ text: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        lastReceived = .now()
        if options.logsMessagePayloads { logger.trace("receive", metadata: ["payload": "\(text)"]) }
        switch DownstreamMessage.decode(text) {
        case .connected(let connectionID, let userID, let token):
            currentConnectionID = connectionID
            currentUserID = userID
            reconnectionToken = token
            if phase == .connecting {
                newConnectionReady()
            }
        case .disconnected(let message):
            lastDisconnectedMessage = message
            logger.info("the service sent disconnected", metadata: ["message": "\(message ?? "")"])
        case .ack(let ackID, let success, let error):
            handleAck(ackID: ackID, success: success, error: error)
        case .groupMessage(let group, let fromUserID, let content, let sequenceID):
            guard accept(sequenceID) else { return }
            registry.emit(.groupMessage, GroupMessageEvent(group: group, fromUserID: fromUserID, content: content, sequenceID: sequenceID))
        case .serverMessage(let content, let sequenceID):
            guard accept(sequenceID) else { return }
            registry.emit(.serverMessage, ServerMessageEvent(content: content, sequenceID: sequenceID))
        case .pong:
            break
        case .invokeResponse(let id, let success, let content, let error):
            handleInvokeResponse(id: id, success: success, content: content, error: error)
        case .unknown(let type):
            logger.debug("skipping a message of unknown type", metadata: ["type": "\(type)"])
        case .malformed(let reason, let sequenceID):
            logger.warning("skipping a malformed message", metadata: ["reason": "\(reason)"])
            _ = accept(sequenceID)
        }
    }

    /// Sequence bookkeeping; false for a duplicate that must not be delivered.
    private func accept(_ sequenceID: UInt64?) -> Bool {
        dispatchPrecondition(condition: .onQueue(queue))
        guard options.protocolType.isReliable, let sequenceID else { return true }
        let verdict = sequence.receive(sequenceID)
        if verdict.ackNow { sendSequenceAckIfNeeded() }
        if !verdict.deliver { logger.debug("dropping a duplicate message", metadata: ["sequenceId": "\(sequenceID)"]) }
        return verdict.deliver
    }

    private func newConnectionReady() {
        dispatchPrecondition(condition: .onQueue(queue))
        cancelTimer(&connectTimer)
        phase = .connected
        sessionLive = true
        reconnectAttempt = 0
        logger.info("connected", metadata: ["connectionId": "\(currentConnectionID ?? "")", "userId": "\(currentUserID ?? "")"])
        startConnectionTimers()
        if options.autoRejoinGroups {
            for group in joinedGroups { rejoin(group) }
        }
        flushOutbox()
        let waiters = openWaiters
        openWaiters.removeAll()
        for w in waiters { w(.success(())) }
        registry.emit(.connected, ConnectedEvent(connectionID: currentConnectionID ?? "", userID: currentUserID))
    }

    private func rejoin(_ group: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        let id = allocateAckID()
        let op = Operation(
            serial: makeSerial(), kind: .rejoin(group), ackID: id,
            frame: UpstreamMessage.joinGroup(group: group, ackID: id).encoded()
        ) { [weak self] result in
            guard let self, case .failure(let error) = result else { return }
            self.logger.warning("rejoining a group failed", metadata: ["group": "\(group)", "error": "\(error)"])
            if error.code != .stopped {
                self.joinedGroups.removeAll { $0 == group }
                self.registry.emit(.rejoinGroupFailed, RejoinGroupFailedEvent(group: group, error: error))
            }
        }
        register(op)
        dispatch(op)
    }

    // MARK: Operations

    private func makeSerial() -> UInt64 {
        nextSerial += 1
        return nextSerial
    }

    /// A fresh ack id: above every id used so far, the caller's included, and not pending.
    private func allocateAckID() -> UInt64 {
        repeat { nextAckID &+= 1 } while nextAckID == 0 || ackIndex[nextAckID] != nil
        return nextAckID
    }

    private func register(_ op: Operation) {
        dispatchPrecondition(condition: .onQueue(queue))
        operations[op.serial] = op
        if let id = op.ackID { ackIndex[id] = op.serial }
    }

    /// Starts an operation on the queue. `completion` runs on the queue.
    private func submit(
        kind: OperationKind, ackID requested: UInt64?, fireAndForget: Bool,
        message: (UInt64?) -> UpstreamMessage,
        completion: @escaping (Result<WebPubSubResult, WebPubSubError>) -> Void
    ) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch phase {
        case .stopped:
            completion(.failure(closedByUser
                ? WebPubSubError(.clientClosed, "the client was closed", ackID: requested)
                : WebPubSubError(.notConnected, "the client is not open", ackID: requested)))
            return
        case .stopping:
            completion(.failure(WebPubSubError(.clientClosed, "the client is closing", ackID: requested)))
            return
        default:
            break
        }
        var ackID: UInt64?
        if !fireAndForget {
            if let requested {
                guard ackIndex[requested] == nil else {
                    completion(.failure(WebPubSubError(.ackIDInUse, "another pending operation uses this ack id", ackID: requested)))
                    return
                }
                nextAckID = max(nextAckID, requested)  // the generator never hands out a caller's id
                ackID = requested
            } else {
                ackID = allocateAckID()
            }
        }
        let op = Operation(serial: makeSerial(), kind: kind, ackID: ackID, frame: message(ackID).encoded(), completion: completion)
        register(op)
        dispatch(op)
    }

    /// One attempt: write now when connected, else wait in the outbox. Either way the attempt is
    /// bounded by the ack timeout.
    private func dispatch(_ op: Operation) {
        dispatchPrecondition(condition: .onQueue(queue))
        op.timer?.cancel()
        op.timer = nil
        if op.ackID == nil, phase == .connected, transport != nil {
            send(op)  // fire-and-forget: done once written, no timer needed
            return
        }
        let serial = op.serial
        op.timer = makeTimer(after: options.ackTimeout) { [weak self] in self?.attemptTimedOut(serial) }
        if phase == .connected, transport != nil {
            send(op)
        } else {
            op.state = .queued
            outbox.append(op.serial)
        }
    }

    private func send(_ op: Operation) {
        dispatchPrecondition(condition: .onQueue(queue))
        // The ack waiter (ackIndex) exists before the frame is written.
        op.state = .sent
        guard write(op.frame) else {
            // The socket refused it (closing, or its output buffer is full): a transient failure.
            retryOrFail(op, WebPubSubError(.connectionLost, "the socket did not take the message", ackID: op.ackID))
            return
        }
        if op.ackID == nil {
            complete(op, .success(WebPubSubResult(ackID: nil, isDuplicated: false)))
        }
    }

    /// Writes what waited for a connection, in submission order.
    private func flushOutbox() {
        dispatchPrecondition(condition: .onQueue(queue))
        let serials = outbox.sorted()
        outbox.removeAll()
        for serial in serials {
            guard phase == .connected, transport != nil else {
                outbox.append(serial)
                continue
            }
            if let op = operations[serial], op.state == .queued {
                if op.retries > 0 || op.ackID != nil {
                    logger.debug("sending a pending operation", metadata: ["op": "\(op.kind.name)", "ackId": "\(op.ackID.map(String.init) ?? "-")"])
                }
                send(op)
            }
        }
    }

    /// The connection dropped: what was written and not acked is written again (same ack id) on the
    /// recovered or new connection.
    private func requeueSentOperations() {
        dispatchPrecondition(condition: .onQueue(queue))
        for op in operations.values where op.state == .sent {
            op.state = .queued
            outbox.append(op.serial)
        }
    }

    private func attemptTimedOut(_ serial: UInt64) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let op = operations[serial] else { return }
        let error: WebPubSubError
        switch op.state {
        case .sent:
            error = WebPubSubError(.ackTimeout, "no ack within \(options.ackTimeout) s", ackID: op.ackID)
        case .queued:
            outbox.removeAll { $0 == serial }
            error = WebPubSubError(.connectionLost, "not connected within \(options.ackTimeout) s", ackID: op.ackID)
        case .retryWait:
            return
        }
        retryOrFail(op, error)
    }

    private func retryOrFail(_ op: Operation, _ error: WebPubSubError) {
        dispatchPrecondition(condition: .onQueue(queue))
        op.timer?.cancel()
        op.timer = nil
        op.lastError = error
        guard error.isTransient else {
            complete(op, .failure(error))
            return
        }
        op.retries += 1
        guard let delay = options.messageRetryPolicy.delay(forRetry: op.retries) else {
            complete(op, .failure(error))
            return
        }
        logger.debug("retrying", metadata: ["op": "\(op.kind.name)", "ackId": "\(op.ackID.map(String.init) ?? "-")", "delay": "\(delay)", "error": "\(error.code)"])
        op.state = .retryWait
        let serial = op.serial
        op.timer = makeTimer(after: delay) { [weak self] in
            guard let self, let op = self.operations[serial] else { return }
            self.dispatch(op)
        }
    }

    private func handleAck(ackID: UInt64, success: Bool, error: ServiceErrorDetail?) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let serial = ackIndex[ackID], let op = operations[serial] else {
            logger.debug("ack for no pending operation", metadata: ["ackId": "\(ackID)"])
            return
        }
        // An ack for this id answers the operation whatever attempt it came from: the id is the same.
        if op.state == .queued { outbox.removeAll { $0 == serial } }
        if success {
            complete(op, .success(WebPubSubResult(ackID: ackID, isDuplicated: false)))
        } else if error?.name == "Duplicate" {
            complete(op, .success(WebPubSubResult(ackID: ackID, isDuplicated: true)))
        } else {
            let name = error?.name ?? ""
            let failure = WebPubSubError(
                .serviceError, "the service refused \(op.kind.name): \(name.isEmpty ? "no error name" : name)",
                ackID: ackID, errorName: error?.name, errorMessage: error?.message)
            retryOrFail(op, failure)
        }
    }

    private func complete(_ op: Operation, _ result: Result<WebPubSubResult, WebPubSubError>) {
        dispatchPrecondition(condition: .onQueue(queue))
        op.timer?.cancel()
        op.timer = nil
        operations[op.serial] = nil
        if let id = op.ackID, ackIndex[id] == op.serial { ackIndex[id] = nil }
        if case .success = result {
            switch op.kind {
            case .join(let group), .rejoin(let group):
                if !joinedGroups.contains(group) { joinedGroups.append(group) }
            case .leave(let group):
                joinedGroups.removeAll { $0 == group }
            case .send, .event:
                break
            }
        }
        op.completion(result)
    }

    private func failAllOperations(code: WebPubSubError.Code, _ message: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        let pending = operations.values.sorted { $0.serial < $1.serial }
        outbox.removeAll()
        for op in pending {
            var error = WebPubSubError(code, message, ackID: op.ackID)
            if let last = op.lastError { error = WebPubSubError(code, "\(message) (last attempt: \(last.message))", ackID: op.ackID, errorName: last.errorName, errorMessage: last.errorMessage) }
            complete(op, .failure(error))
        }
    }

    // MARK: Invocations

    private func startInvocation(
        event: String, content: MessageContent, invocationID requested: String?, timeout: TimeInterval?,
        completion: @escaping (Result<InvokeEventResult, WebPubSubError>) -> Void
    ) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .connected, transport != nil else {
            let code: WebPubSubError.Code = closedByUser && phase == .stopped ? .clientClosed : .notConnected
            completion(.failure(WebPubSubError(code, "invokeEvent needs a connected client", invocationID: requested)))
            return
        }
        let id: String
        if let requested {
            guard invocations[requested] == nil else {
                completion(.failure(WebPubSubError(.invalidArgument, "another pending invocation uses this id", invocationID: requested)))
                return
            }
            id = requested
        } else {
            repeat { nextInvocationID += 1 } while invocations["\(nextInvocationID)"] != nil
            id = "\(nextInvocationID)"
        }
        let invocation = Invocation(completion: completion)
        invocations[id] = invocation
        let seconds = timeout ?? options.ackTimeout
        invocation.timer = makeTimer(after: seconds) { [weak self] in
            guard let self, self.invocations[id] != nil else { return }
            self.write(UpstreamMessage.cancelInvocation(invocationID: id).encoded())
            self.finishInvocation(id, .failure(WebPubSubError(.invocationTimedOut, "no invocation response within \(seconds) s", invocationID: id)))
        }
        write(UpstreamMessage.invoke(invocationID: id, event: event, content: content).encoded())
    }

    private func finishInvocation(_ id: String, _ result: Result<InvokeEventResult, WebPubSubError>) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let invocation = invocations.removeValue(forKey: id) else { return }
        invocation.timer?.cancel()
        invocation.completion(result)
    }

    private func failAllInvocations(_ error: WebPubSubError) {
        for id in invocations.keys.sorted() {
            finishInvocation(id, .failure(WebPubSubError(error.code, error.message, invocationID: id)))
        }
    }

    private func handleInvokeResponse(id: String, success: Bool?, content: MessageContent?, error: ServiceErrorDetail?) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard invocations[id] != nil else {
            logger.debug("invokeResponse for no pending invocation", metadata: ["invocationId": "\(id)"])
            return
        }
        switch success {
        case true?:
            finishInvocation(id, .success(InvokeEventResult(invocationID: id, content: content)))
        case false?:
            finishInvocation(id, .failure(WebPubSubError(
                .invocationFailed, "the invocation failed: \(error?.name ?? "")", invocationID: id,
                errorName: error?.name, errorMessage: error?.message)))
        case nil:
            finishInvocation(id, .failure(WebPubSubError(.invocationFailed, "unsupported invokeResponse (no success field)", invocationID: id)))
        }
    }

    // MARK: Public operations

    /// Validates arguments on the caller's thread (nothing is sent when they are bad).
    private static func check(group: String) -> WebPubSubError? {
        if group.isEmpty { return WebPubSubError(.invalidArgument, "the group name is empty") }
        if group.utf8.count > 1024 { return WebPubSubError(.invalidArgument, "the group name is longer than 1024 bytes") }
        return nil
    }

    private func run<T: Sendable>(
        _ start: @escaping @Sendable (@escaping (Result<T, WebPubSubError>) -> Void) -> Void
    ) throws(WebPubSubError) -> T {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let waiter = Waiter<Result<T, WebPubSubError>>()
        queue.async { start { waiter.fulfill($0) } }
        return try waiter.wait().get()
    }

    private func runAsync<T: Sendable>(
        _ completion: @escaping @Sendable (Result<T, WebPubSubError>) -> Void,
        _ start: @escaping @Sendable (@escaping (Result<T, WebPubSubError>) -> Void) -> Void
    ) {
        queue.async { start { result in self.registry.run { completion(result) } } }
    }

    private func joinGroupStarter(_ group: String, ackID: UInt64?) -> @Sendable (@escaping (Result<WebPubSubResult, WebPubSubError>) -> Void) -> Void {
        { [self] done in
            if let e = Self.check(group: group) { return done(.failure(e.withAckID(ackID))) }
            submit(kind: .join(group), ackID: ackID, fireAndForget: false,
                   message: { .joinGroup(group: group, ackID: $0) }, completion: done)
        }
    }

    private func leaveGroupStarter(_ group: String, ackID: UInt64?) -> @Sendable (@escaping (Result<WebPubSubResult, WebPubSubError>) -> Void) -> Void {
        { [self] done in
            if let e = Self.check(group: group) { return done(.failure(e.withAckID(ackID))) }
            submit(kind: .leave(group), ackID: ackID, fireAndForget: false,
                   message: { .leaveGroup(group: group, ackID: $0) }, completion: done)
        }
    }

    private func sendToGroupStarter(
        _ group: String, _ content: MessageContent, noEcho: Bool, fireAndForget: Bool, ackID: UInt64?
    ) -> @Sendable (@escaping (Result<WebPubSubResult, WebPubSubError>) -> Void) -> Void {
        { [self] done in
            if let e = Self.check(group: group) ?? content.validate() { return done(.failure(e.withAckID(ackID))) }
            if fireAndForget, ackID != nil {
                return done(.failure(WebPubSubError(.invalidArgument, "a fire-and-forget send has no ack id", ackID: ackID)))
            }
            submit(kind: .send, ackID: ackID, fireAndForget: fireAndForget,
                   message: { .sendToGroup(group: group, content: content, ackID: $0, noEcho: noEcho) }, completion: done)
        }
    }

    private func sendEventStarter(
        _ event: String, _ content: MessageContent, fireAndForget: Bool, ackID: UInt64?
    ) -> @Sendable (@escaping (Result<WebPubSubResult, WebPubSubError>) -> Void) -> Void {
        { [self] done in
            if event.isEmpty { return done(.failure(WebPubSubError(.invalidArgument, "the event name is empty", ackID: ackID))) }
            if let e = content.validate() { return done(.failure(e.withAckID(ackID))) }
            if fireAndForget, ackID != nil {
                return done(.failure(WebPubSubError(.invalidArgument, "a fire-and-forget send has no ack id", ackID: ackID)))
            }
            submit(kind: .event, ackID: ackID, fireAndForget: fireAndForget,
                   message: { .event(name: event, content: content, ackID: $0) }, completion: done)
        }
    }

    private func invokeStarter(
        _ event: String, _ content: MessageContent, invocationID: String?, timeout: TimeInterval?
    ) -> @Sendable (@escaping (Result<InvokeEventResult, WebPubSubError>) -> Void) -> Void {
        { [self] done in
            if event.isEmpty { return done(.failure(WebPubSubError(.invalidArgument, "the event name is empty", invocationID: invocationID))) }
            if let e = content.validate() { return done(.failure(e)) }
            startInvocation(event: event, content: content, invocationID: invocationID, timeout: timeout, completion: done)
        }
    }

    /// Joins `group` and waits for the service's ack. The group is rejoined on every new connection
    /// (see ``WebPubSubClientOptions/autoRejoinGroups``).
    ///
    /// Transient failures are retried with the same ack id; `Duplicate` counts as success.
    /// - Parameter ackID: the ack id to use; by default a fresh one.
    /// - Returns: the ack id used and whether the service reported a duplicate.
    /// - Throws: ``WebPubSubError`` (with the ack id and the service's error name).
    @discardableResult
    public func joinGroup(_ group: String, ackID: UInt64? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try run(joinGroupStarter(group, ackID: ackID))
    }

    /// Joins `group` without blocking; `completion` runs on the callback queue.
    public func joinGroup(_ group: String, ackID: UInt64? = nil,
                          completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) {
        runAsync(completion, joinGroupStarter(group, ackID: ackID))
    }

    /// Leaves `group` and waits for the service's ack; the group is no longer rejoined.
    /// - Throws: ``WebPubSubError``.
    @discardableResult
    public func leaveGroup(_ group: String, ackID: UInt64? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try run(leaveGroupStarter(group, ackID: ackID))
    }

    /// Leaves `group` without blocking; `completion` runs on the callback queue.
    public func leaveGroup(_ group: String, ackID: UInt64? = nil,
                           completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) {
        runAsync(completion, leaveGroupStarter(group, ackID: ackID))
    }

    /// Publishes `content` to `group` and waits for the service's ack.
    ///
    /// - Parameters:
    ///   - noEcho: do not deliver the message back to this connection.
    ///   - fireAndForget: send without an ack id and return once written (no retry, no ack).
    ///   - ackID: the ack id to use (e.g. the one from an earlier failed call, so the service
    ///     de-duplicates); by default a fresh one.
    /// - Throws: ``WebPubSubError``; `.invalidContent` when `.json` content is not valid JSON.
    @discardableResult
    public func sendToGroup(_ group: String, _ content: MessageContent, noEcho: Bool = false,
                            fireAndForget: Bool = false, ackID: UInt64? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try run(sendToGroupStarter(group, content, noEcho: noEcho, fireAndForget: fireAndForget, ackID: ackID))
    }

    /// Publishes without blocking; `completion` runs on the callback queue.
    public func sendToGroup(_ group: String, _ content: MessageContent, noEcho: Bool = false,
                            fireAndForget: Bool = false, ackID: UInt64? = nil,
                            completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) {
        runAsync(completion, sendToGroupStarter(group, content, noEcho: noEcho, fireAndForget: fireAndForget, ackID: ackID))
    }

    /// Sends event `event` to the service's upstream handler and waits for the ack.
    /// - Throws: ``WebPubSubError``.
    @discardableResult
    public func sendEvent(_ event: String, _ content: MessageContent, fireAndForget: Bool = false,
                          ackID: UInt64? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try run(sendEventStarter(event, content, fireAndForget: fireAndForget, ackID: ackID))
    }

    /// Sends an event without blocking; `completion` runs on the callback queue.
    public func sendEvent(_ event: String, _ content: MessageContent, fireAndForget: Bool = false, ackID: UInt64? = nil,
                          completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) {
        runAsync(completion, sendEventStarter(event, content, fireAndForget: fireAndForget, ackID: ackID))
    }

    /// Invokes event `event` on the service's upstream and waits for its response (request and
    /// response, as in the JavaScript client). Not retried; fails when the connection drops.
    /// - Parameters:
    ///   - invocationID: the id to use; by default "1", "2", …
    ///   - timeout: how long to wait, in seconds; by default the ack timeout. On time-out a
    ///     `cancelInvocation` is sent.
    /// - Throws: ``WebPubSubError`` `.invocationFailed` (with the upstream's error name),
    ///   `.invocationTimedOut`, `.invocationCancelled`, `.connectionLost`, `.notConnected`.
    public func invokeEvent(_ event: String, _ content: MessageContent, invocationID: String? = nil,
                            timeout: TimeInterval? = nil) throws(WebPubSubError) -> InvokeEventResult {
        try run(invokeStarter(event, content, invocationID: invocationID, timeout: timeout))
    }

    /// Invokes without blocking; `completion` runs on the callback queue.
    public func invokeEvent(_ event: String, _ content: MessageContent, invocationID: String? = nil, timeout: TimeInterval? = nil,
                            completion: @escaping @Sendable (Result<InvokeEventResult, WebPubSubError>) -> Void) {
        runAsync(completion, invokeStarter(event, content, invocationID: invocationID, timeout: timeout))
    }

    /// Cancels a pending invocation: sends `cancelInvocation` and fails the waiting call with
    /// `.invocationCancelled`. Does nothing when no such invocation is pending.
    public func cancelInvocation(_ invocationID: String) {
        queue.async {
            guard self.invocations[invocationID] != nil else { return }
            self.write(UpstreamMessage.cancelInvocation(invocationID: invocationID).encoded())
            self.finishInvocation(invocationID, .failure(WebPubSubError(.invocationCancelled, "the invocation was cancelled", invocationID: invocationID)))
        }
    }
}
