import Dispatch
import Foundation
import Logging
import WebSocket

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
/// queue, which also runs its socket and its one timer. Callbacks and completion handlers run one at
/// a time, in the order things happened, on ``WebPubSubClientOptions/callbackQueue``. The blocking
/// calls (`open`, `joinGroup`, `sendToGroup`, …) may be made from any thread, a callback included;
/// `close()` never deadlocks.
///
/// This class is the thin shell around `ClientStateMachine` (Core/), which takes every decision:
/// the shell feeds it events with the time, and carries out the actions it returns.
public final class WebPubSubClient: @unchecked Sendable {
    // Every mutable stored property is confined to `queue` (checked with dispatchPrecondition);
    // `backlog` is a locked box shared with the callback queue.

    /// Returns a fresh client access URL (`wss://…/client/hubs/HUB?access_token=…`). Called on
    /// `open()` and before every reconnect, never for a recovery. It may block; it never runs on the
    /// client's queue.
    public typealias Credential = @Sendable () throws -> URL

    /// The async form of ``Credential``: awaited on `open()` and before every reconnect, never for
    /// a recovery; bounded by ``WebPubSubClientOptions/startTimeout`` (its task is cancelled after it).
    public typealias AsyncCredential = @Sendable () async throws -> URL

    enum CredentialSource: Sendable {
        case blocking(Credential)
        case async(AsyncCredential)
    }

    /// The options the client was made with.
    public let options: WebPubSubClientOptions

    private let credential: CredentialSource
    private let queue: DispatchQueue
    let registry: CallbackRegistry
    private let logger: Logger
    private let makeTransport: TransportFactory
    private let backlog: LockedValue<DeliveryBacklog>

    private var machine: ClientStateMachine
    private var transport: (id: UInt64, socket: any ClientTransport)?
    private var readingPaused = false
    /// Tokens name a caller's request across threads (cancellation); any thread may take one.
    private let tokens = LockedValue<UInt64>(0)
    private var operationCompletions: [UInt64: (Result<WebPubSubResult, WebPubSubError>) -> Void] = [:]
    private var invocationCompletions: [UInt64: (Result<InvokeEventResult, WebPubSubError>) -> Void] = [:]
    private var openCompletions: [UInt64: (Result<Void, WebPubSubError>) -> Void] = [:]
    private var closeCompletions: [UInt64: () -> Void] = [:]
    /// The client's one timer, armed for the machine's earliest deadline.
    private var timer: (any DispatchSourceTimer)?
    private var armed: Instant?
    /// The socket that fire-and-forget sends may use from the caller's thread (see ``sendDirectly(_:)``):
    /// set while the machine is connected, nil otherwise. Written on `queue` after each step.
    private let directSocket = LockedValue<(any ClientTransport)?>(nil)
    /// The transport id `directSocket` holds, or nil; confined to `queue`.
    private var directSocketID: UInt64?

    // MARK: Creating

    /// Creates a client that gets a fresh client access URL from `credential` on `open()` and on
    /// every reconnect (never on a recovery).
    public convenience init(credential: @escaping Credential, options: WebPubSubClientOptions = .init()) {
        self.init(credential: .blocking(credential), options: options, transportFactory: WebSocketTransport.factory)
    }

    /// Creates a client that awaits a fresh client access URL from `credential` on `open()` and on
    /// every reconnect (never on a recovery).
    public convenience init(credential: @escaping AsyncCredential, options: WebPubSubClientOptions = .init()) {
        self.init(credential: .async(credential), options: options, transportFactory: WebSocketTransport.factory)
    }

    /// Creates a client for a fixed client access URL. Once its token expires, reconnects fail; use
    /// `init(credential:options:)` for long-lived clients.
    public convenience init(url: URL, options: WebPubSubClientOptions = .init()) {
        self.init(credential: { url }, options: options)
    }

    init(credential: CredentialSource, options: WebPubSubClientOptions, transportFactory: @escaping TransportFactory) {
        self.credential = credential
        self.options = options
        self.makeTransport = transportFactory
        // The private queue never blocks: a non-overcommitting target, so thousands of idle clients
        // cost memory, not threads. The default callback queue is a plain (overcommitting) serial
        // queue, because a callback may block on this client (a blocking call from a callback).
        self.queue = DispatchQueue(label: "WebPubSubClient", target: .global())
        self.registry = CallbackRegistry(callbackQueue: options.callbackQueue ?? DispatchQueue(label: "WebPubSubClient.callbacks"))
        self.logger = options.logger
        self.backlog = LockedValue(DeliveryBacklog(
            messageLimit: options.maximumPendingCallbackMessages, byteLimit: options.maximumPendingCallbackBytes))
        self.machine = ClientStateMachine(options: options, seed: UInt64.random(in: 1...UInt64.max))
    }

    deinit {
        // Nothing else references the client now; stop its socket and timer.
        timer?.cancel()
        transport?.socket.abort()
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
    public var isConnected: Bool { onQueue { self.machine.isConnected } }

    /// The id of the current connection, once the service's `connected` message has arrived.
    public var connectionID: String? { onQueue { self.machine.session?.connectionID } }

    /// The user id of the current connection, if its token had one.
    public var userID: String? { onQueue { self.machine.session?.userID } }

    /// Where the client is in its life.
    public var state: WebPubSubClientState { onQueue { self.machine.state } }

    /// The groups this client joined (and would rejoin on a new connection).
    public var joinedGroupNames: [String] { onQueue { self.machine.joinedGroups } }

    /// How many sockets opened so far (new connections and recoveries); for tests.
    var socketsOpened: Int { onQueue { self.machine.socketsOpened } }

    /// Operations and invocations not finished yet; for tests.
    var pendingOperations: Int { onQueue { self.machine.ledger.count + self.machine.invocations.entries.count } }

    /// The most received messages that waited for their callbacks at once; for tests.
    var pendingCallbackHighWaterMark: Int { backlog.value.highWaterMark }

    private func onQueue<T>(_ body: () -> T) -> T {
        dispatchPrecondition(condition: .notOnQueue(queue))
        return queue.sync(execute: body)
    }

    // MARK: Driving the machine (on `queue`)

    private static func now() -> Instant { Instant(nanoseconds: DispatchTime.now().uptimeNanoseconds) }

    /// Runs one input through the machine, carries out its actions, and re-arms the timer.
    private func step(_ input: (inout ClientStateMachine, Instant) -> [ClientAction]) {
        dispatchPrecondition(condition: .onQueue(queue))
        execute(input(&machine, Self.now()))
        rearm()
        updateDirectSocket()
    }

    /// Publishes the socket to callers' threads while connected (fire-and-forget's direct path). Off with
    /// instrumentation or payload logging, which the machine's path records.
    private func updateDirectSocket() {
        let id = machine.isConnected && options.instrumentation == nil && !options.logsMessagePayloads ? transport?.id : nil
        guard id != directSocketID else { return }
        directSocketID = id
        let socket = id == nil ? nil : transport?.socket
        directSocket.modify { $0 = socket }
    }

    /// A fire-and-forget send without the client's queue: when the client is connected and the request
    /// is valid, the frame is encoded on the caller's thread and handed to the socket, which reserves
    /// its bytes at once (refusing beyond its buffer limit) and writes it on the client's queue behind
    /// everything queued there before, acked sends included. Returns nil whenever the machine must
    /// decide instead (not connected, a refused write, an invalid request): the caller then goes
    /// through the queue and gets exactly the machine's answer.
    func sendDirectly(_ request: OperationRequest) -> WebPubSubResult? {
        guard let socket = directSocket.value else { return nil }
        let frame: String
        switch request {
        case .sendToGroup(let group, let content, let noEcho):
            guard ProtocolRules.check(group: group) == nil, content.validate() == nil else { return nil }
            frame = UpstreamMessage.sendToGroup(group: group, content: content, ackID: nil, noEcho: noEcho).encoded()
        case .sendEvent(let name, let content):
            guard ProtocolRules.check(event: name) == nil, content.validate() == nil else { return nil }
            frame = UpstreamMessage.event(name: name, content: content, ackID: nil).encoded()
        case .joinGroup, .leaveGroup:
            return nil
        }
        guard ProtocolRules.check(frameBytes: frame.utf8.count, limit: options.maximumOutgoingMessageSize) == nil,
            socket.sendFromAnyThread(text: frame) == true
        else { return nil }
        return WebPubSubResult(ackID: nil, isDuplicated: false)
    }

    /// A fresh token for a caller's request; callable on any thread.
    func makeToken() -> UInt64 {
        tokens.withLock {
            $0 += 1
            return $0
        }
    }

    private func execute(_ actions: [ClientAction]) {
        for action in actions {
            switch action {
            case .fetchCredential(let attempt):
                fetchCredential(attempt)
            case .openSocket(let id, let url, let timeout):
                openSocket(id, url: url, timeout: timeout)
            case .write(let frame, let serial):
                if options.logsMessagePayloads { logger.trace("send", metadata: ["webpubsub.payload": "\(frame)"]) }
                let accepted = transport?.socket.send(text: frame) ?? false
                if let serial { execute(machine.writeFinished(serial: serial, accepted: accepted, now: Self.now())) }
            case .closeSocket:
                transport?.socket.close()
            case .abortSocket:
                transport?.socket.abort()
                transport = nil
            case .emit(let event):
                emit(event)
            case .completeOperation(let token, let result):
                operationCompletions.removeValue(forKey: token)?(result)
            case .completeInvocation(let token, let result):
                invocationCompletions.removeValue(forKey: token)?(result)
            case .completeOpen(let token, let result):
                openCompletions.removeValue(forKey: token)?(result)
            case .completeClose(let token):
                closeCompletions.removeValue(forKey: token)?()
            case .log(let level, let message, let metadata):
                logger.log(level: level, "\(message)", metadata: metadata)
            case .record(let event):
                options.instrumentation?.record(event)
            }
        }
    }

    private func rearm() {
        // A timer armed for an earlier deadline stays: it fires, the machine finds nothing due, and
        // the timer is armed again for the real one.
        guard let next = machine.nextDeadline() else { return }
        if let armed, armed <= next { return }
        armed = next
        let t: any DispatchSourceTimer
        if let timer {
            t = timer
        } else {
            t = DispatchSource.makeTimerSource(queue: queue)
            t.setEventHandler { [weak self] in
                guard let self else { return }
                self.armed = nil
                self.step { $0.timerFired(now: $1) }
            }
            t.activate()
            timer = t
        }
        t.schedule(deadline: DispatchTime(uptimeNanoseconds: next.nanoseconds), leeway: .milliseconds(5))
    }

    private func fetchCredential(_ attempt: UInt64) {
        let report: @Sendable (Result<URL, any Error>) -> Void = { [weak self] result in
            guard let self else { return }
            self.queue.async { self.step { $0.credentialReturned(attempt: attempt, result, now: $1) } }
        }
        switch credential {
        case .blocking(let credential):
            DispatchQueue.global().async { report(Result { try credential() }) }
        case .async(let credential):
            let limit = options.startTimeout
            Task {
                // The machine bounds the attempt; the task is cancelled once that bound has passed.
                let task = Task { try await credential() }
                let watchdog = Task {
                    try await Task.sleep(nanoseconds: UInt64(min(max(0, limit), 1e6) * 1e9))
                    task.cancel()
                }
                let result = await task.result
                watchdog.cancel()
                report(result)
            }
        }
    }

    private func openSocket(_ id: UInt64, url: URL, timeout: TimeInterval) {
        var agent = "swift-webpubsub-client/1.0 (Linux)"
        if let prefix = options.userAgent, !prefix.isEmpty { agent = prefix + " " + agent }
        let request = TransportRequest(
            url: url, subprotocol: options.protocolType.subprotocol, userAgent: agent,
            maximumMessageSize: options.maximumMessageSize, connectTimeout: timeout, tls: options.tls)
        let socket = makeTransport(request, queue, logger)
        transport?.socket.abort()
        transport = (id, socket)
        if readingPaused { socket.pauseReading() }
        socket.start(TransportEvents(
            onOpen: { [weak self] in self?.step { $0.socketOpened(id: id, now: $1) } },
            onText: { [weak self] text in self?.received(text, socket: id) },
            onBinary: { [weak self] count in self?.step { $0.binaryReceived(bytes: count, socket: id, now: $1) } },
            onClose: { [weak self] report in
                guard let self else { return }
                if self.transport?.id == id { self.transport = nil }
                self.step { $0.socketClosed(id: id, report, now: $1) }
            }))
    }

    private func received(_ text: String, socket id: UInt64) {
        if options.logsMessagePayloads { logger.trace("receive", metadata: ["webpubsub.payload": "\(text)"]) }
        let message = DownstreamMessage.decode(text)
        step { $0.received(message, socket: id, now: $1) }
    }

    // MARK: Events and backpressure

    private func emit(_ event: ClientEvent) {
        switch event {
        case .connected(let e): registry.emit(.connected, e)
        case .disconnected(let e): registry.emit(.disconnected, e)
        case .stopped: registry.emit(.stopped, StoppedEvent())
        case .recovering(let e): registry.emit(.recovering, e)
        case .recovered(let e): registry.emit(.recovered, e)
        case .rejoinGroupFailed(let e): registry.emit(.rejoinGroupFailed, e)
        case .groupMessage(let e): deliver(.groupMessage, e, bytes: e.content.byteCount)
        case .serverMessage(let e): deliver(.serverMessage, e, bytes: e.content.byteCount)
        }
    }

    /// Queues a received message for its callbacks; stops reading when too many wait.
    private func deliver<Event>(_ type: CallbackType<Event>, _ event: Event, bytes: Int) {
        if backlog.withLock({ $0.added(bytes: bytes) }) {
            readingPaused = true
            transport?.socket.pauseReading()
            machine.pauseReadingRequested()
            logger.debug("callbacks are behind; reading paused", metadata: ["webpubsub.pending": "\(backlog.value.messages)"])
        }
        let backlog = self.backlog
        registry.emit(type, event) { [weak self] in
            guard backlog.withLock({ $0.finished(bytes: bytes) }), let self else { return }
            self.queue.async { self.resumeReading() }
        }
    }

    private func resumeReading() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard readingPaused else { return }
        readingPaused = false
        transport?.socket.resumeReading()
        logger.debug("callbacks caught up; reading resumed")
        step { machine, now in
            machine.readingResumed(now: now)
            return []
        }
    }

    // MARK: Entry points for the public API (on `queue`)

    func startOpen(_ completion: @escaping (Result<Void, WebPubSubError>) -> Void) {
        let token = makeToken()
        openCompletions[token] = completion
        step { $0.openRequested(token: token, now: $1) }
    }

    func startClose(_ completion: @escaping () -> Void) {
        let token = makeToken()
        closeCompletions[token] = completion
        step { $0.closeRequested(token: token, now: $1) }
    }

    /// Starts an operation under `token` (see ``cancel(token:)``).
    func startOperation(_ request: OperationRequest, token: UInt64, ackID: UInt64?, fireAndForget: Bool, timeout: TimeInterval?,
                        _ completion: @escaping (Result<WebPubSubResult, WebPubSubError>) -> Void) {
        operationCompletions[token] = completion
        step { $0.submit(request, token: token, ackID: ackID, fireAndForget: fireAndForget, timeout: timeout, now: $1) }
    }

    func startInvocation(_ event: String, _ content: MessageContent, token: UInt64, invocationID: String?, timeout: TimeInterval?,
                         _ completion: @escaping (Result<InvokeEventResult, WebPubSubError>) -> Void) {
        invocationCompletions[token] = completion
        step { $0.invoke(event: event, content: content, invocationID: invocationID, timeout: timeout, token: token, now: $1) }
    }

    func startCancelInvocation(_ invocationID: String) {
        step { $0.cancelInvocation(invocationID, now: $1) }
    }

    /// Cancels an operation or invocation by token (no effect once it finished).
    func cancel(token: UInt64) {
        step { $0.cancelOperation(token: token, now: $1) }
    }

    /// Runs `body` on the client's queue.
    func enqueue(_ body: @escaping @Sendable (WebPubSubClient) -> Void) {
        queue.async { body(self) }
    }

    /// Runs `start` on the client's queue and blocks the calling thread until it completes.
    func blocking<T: Sendable>(
        _ start: @escaping @Sendable (WebPubSubClient, @escaping (Result<T, WebPubSubError>) -> Void) -> Void
    ) throws(WebPubSubError) -> T {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let parker = Parker.take()
        var result: Result<T, WebPubSubError>?
        withUnsafeMutablePointer(to: &result) { pointer in
            let slot = ResultSlot(pointer: pointer, parker: parker)
            // (`queue.sync` here, to start the call on the caller's thread, measured worse: 6.4 context
            // switches per acked round trip against 5.3, Docs/Performance.md.)
            queue.async { start(self) { slot.fulfill($0) } }
            parker.semaphore.wait()
        }
        Parker.give(parker)
        return try result!.get()
    }

    /// Blocks until the client stopped, at most `timeout` seconds.
    func blockingClose(timeout: TimeInterval) {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let waiter = Waiter<Bool>()
        queue.async { self.startClose { waiter.fulfill(true) } }
        _ = waiter.wait(timeout: timeout)
    }
}

extension MessageContent {
    /// The content's size in bytes, for the backpressure counts.
    var byteCount: Int {
        switch self {
        case .text(let s), .json(let s): return s.utf8.count
        case .binary(let d), .protobuf(let d): return d.count
        }
    }
}
