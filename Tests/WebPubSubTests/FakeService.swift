import Dispatch
import Foundation
import Logging

@testable import WebPubSub

/// A scripted stand-in for the service, plugged in under the client's transport seam: every socket
/// the client opens is a `FakeSocket`; the test decides what the "service" answers.
final class FakeService: @unchecked Sendable {  // all mutable state guarded by `lock`
    private let lock = NSLock()
    private var _sockets: [FakeSocket] = []
    private var _frames: [String] = []
    /// Runs for every new socket (on the client's queue); default: open and send `connected`.
    var onConnect: @Sendable (FakeSocket) -> Void {
        get { lock.lock(); defer { lock.unlock() }; return _onConnect }
        set { lock.lock(); _onConnect = newValue; lock.unlock() }
    }
    /// Runs for every frame the client writes (on the client's queue); default: ack every ackId with success.
    var onFrame: @Sendable (FakeSocket, [String: Any]) -> Void {
        get { lock.lock(); defer { lock.unlock() }; return _onFrame }
        set { lock.lock(); _onFrame = newValue; lock.unlock() }
    }
    private var _onConnect: @Sendable (FakeSocket) -> Void = { socket in
        socket.open()
        socket.deliver(#"{"type":"system","event":"connected","connectionId":"conn\#(socket.index)","userId":"u","reconnectionToken":"tok\#(socket.index)"}"#)
    }
    private var _onFrame: @Sendable (FakeSocket, [String: Any]) -> Void = { socket, frame in
        if let id = frame["ackId"] as? Int { socket.deliver(#"{"type":"ack","ackId":\#(id),"success":true}"#) }
    }

    var sockets: [FakeSocket] { lock.lock(); defer { lock.unlock() }; return _sockets }
    /// Every frame written, on every socket, in order.
    var frames: [String] { lock.lock(); defer { lock.unlock() }; return _frames }
    func frames(ofType type: String) -> [[String: Any]] {
        frames.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["type"] as? String == type }
    }

    var factory: TransportFactory {
        { [self] request, queue, _ in
            lock.lock()
            let socket = FakeSocket(service: self, request: request, queue: queue, index: _sockets.count + 1)
            _sockets.append(socket)
            lock.unlock()
            return socket
        }
    }

    func record(_ text: String) {
        lock.lock()
        _frames.append(text)
        lock.unlock()
    }

    func makeClient(_ configure: (inout WebPubSubClientOptions) -> Void = { _ in },
                    credential: @escaping WebPubSubClient.Credential = { URL(string: "ws://fake/client/hubs/h?access_token=t")! })
        -> WebPubSubClient
    {
        var options = WebPubSubClientOptions()
        options.ackTimeout = 2
        options.startTimeout = 2
        options.messageRetryPolicy = RetryPolicy(maxRetries: 3, delay: 0.05, mode: .fixed)
        options.reconnectRetryPolicy = RetryPolicy(maxRetries: 2, delay: 0.05, mode: .fixed)
        options.recoveryRetryInterval = 0.05
        options.recoveryTimeout = 1
        options.keepAliveInterval = nil
        options.logger = quietLogger
        configure(&options)
        return WebPubSubClient(credential: credential, options: options, transportFactory: factory)
    }
}

/// One fake socket. Its events go to the client on the client's queue.
final class FakeSocket: ClientTransport, @unchecked Sendable {  // `events`, `closed` guarded by `lock`
    let request: TransportRequest
    let index: Int
    private unowned let service: FakeService
    private let queue: DispatchQueue
    private let lock = NSLock()
    private var events: TransportEvents?
    private var closed = false

    init(service: FakeService, request: TransportRequest, queue: DispatchQueue, index: Int) {
        self.service = service
        self.request = request
        self.queue = queue
        self.index = index
    }

    private var handlers: TransportEvents? { lock.lock(); defer { lock.unlock() }; return closed ? nil : events }

    func start(_ events: TransportEvents) {
        lock.lock()
        self.events = events
        lock.unlock()
        let service = self.service
        queue.async { service.onConnect(self) }
    }

    func send(text: String) -> Bool {
        guard handlers != nil else { return false }
        service.record(text)
        if let frame = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] {
            // Synchronously, inside the client's write: the hardest case for "ack before waiter".
            service.onFrame(self, frame)
        }
        return true
    }

    func close() { serverClose(code: 1000) }
    func abort() { serverClose(code: 1006) }

    // The "service" side.
    func open() { run { $0.onOpen() } }
    func deliver(_ text: String) { run { $0.onText(text) } }
    func serverClose(code: UInt16, reason: String = "") {
        lock.lock()
        let e = closed ? nil : events
        closed = true
        lock.unlock()
        guard let e else { return }
        queue.async { e.onClose(code, reason, nil) }
    }

    private func run(_ body: @escaping @Sendable (TransportEvents) -> Void) {
        guard let e = handlers else { return }
        queue.async { body(e) }
    }
}

/// Collects values from callbacks, for tests (thread-safe).
final class Collector<T: Sendable>: @unchecked Sendable {  // `items` guarded by `condition`
    private let condition = NSCondition()
    private var items: [T] = []

    func append(_ item: T) {
        condition.lock()
        items.append(item)
        condition.broadcast()
        condition.unlock()
    }

    var values: [T] { condition.lock(); defer { condition.unlock() }; return items }

    /// Waits until at least `count` items arrived; returns them (or what came within `timeout`).
    @discardableResult
    func wait(count: Int, timeout: TimeInterval = 10) -> [T] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while items.count < count {
            if !condition.wait(until: deadline) { break }
        }
        return items
    }
}

/// A logger for tests: warnings and worse only (set WPS_TEST_LOG=trace to see everything).
let quietLogger: Logger = {
    var logger = Logger(label: "WebPubSubClient.test")
    let level = ProcessInfo.processInfo.environment["WPS_TEST_LOG"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .critical
    return logger
}()

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: TimeInterval = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}
