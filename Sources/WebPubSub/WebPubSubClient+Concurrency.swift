import Dispatch
import Foundation
import WebSocket

//===----------------------------------------------------------------------===//
// Swift concurrency: async overloads of every call, with task cancellation and
// deadlines, and the client's events as AsyncSequences (Docs/Client.md,
// "Swift concurrency"). Nothing here blocks a thread of the cooperative pool.
//===----------------------------------------------------------------------===//

extension WebPubSubClient {
    /// Opens the connection and returns once the service's `connected` message arrived.
    ///
    /// Cancelling the task stops the attempt: the client is closed and this throws `CancellationError`.
    /// - Throws: ``WebPubSubError`` `.alreadyOpen`, `.openFailed`; `CancellationError`.
    public func open() async throws {
        let result: Result<Void, WebPubSubError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                enqueue { client in client.startOpen { continuation.resume(returning: $0) } }
            }
        } onCancel: {
            enqueue { client in client.startClose {} }
        }
        if case .failure = result, Task.isCancelled { throw CancellationError() }
        try result.get()
    }

    /// Closes the connection and returns once the client has stopped (see `close()`).
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            enqueue { client in client.startClose { continuation.resume() } }
        }
    }

    /// Joins `group`; returns once the service acked (see `joinGroup(_:ackID:timeout:)`).
    ///
    /// Cancelling the task cancels the operation: if it was not sent yet, nothing is sent; if it was,
    /// the service may still carry it out (retrying with the same ack id is safe). Either way this
    /// throws `CancellationError`.
    /// - Throws: ``WebPubSubError``; `CancellationError`.
    @discardableResult
    public func joinGroup(_ group: String, ackID: UInt64? = nil, timeout: TimeInterval? = nil) async throws -> WebPubSubResult {
        try await operation(.joinGroup(group), ackID: ackID, fireAndForget: false, timeout: timeout)
    }

    /// Leaves `group`; returns once the service acked. Cancellation as for `joinGroup(_:ackID:timeout:)`.
    @discardableResult
    public func leaveGroup(_ group: String, ackID: UInt64? = nil, timeout: TimeInterval? = nil) async throws -> WebPubSubResult {
        try await operation(.leaveGroup(group), ackID: ackID, fireAndForget: false, timeout: timeout)
    }

    /// Publishes `content` to `group`; returns once the service acked (or, `fireAndForget`, once
    /// written). Cancellation as for `joinGroup(_:ackID:timeout:)`.
    @discardableResult
    public func sendToGroup(_ group: String, _ content: MessageContent, noEcho: Bool = false, fireAndForget: Bool = false,
                            ackID: UInt64? = nil, timeout: TimeInterval? = nil) async throws -> WebPubSubResult {
        try await operation(.sendToGroup(group, content, noEcho: noEcho), ackID: ackID, fireAndForget: fireAndForget, timeout: timeout)
    }

    /// Sends event `event` to the upstream; returns once the service acked. Cancellation as for
    /// `joinGroup(_:ackID:timeout:)`.
    @discardableResult
    public func sendEvent(_ event: String, _ content: MessageContent, fireAndForget: Bool = false,
                          ackID: UInt64? = nil, timeout: TimeInterval? = nil) async throws -> WebPubSubResult {
        try await operation(.sendEvent(event, content), ackID: ackID, fireAndForget: fireAndForget, timeout: timeout)
    }

    /// Invokes event `event` on the upstream and returns its response. Cancelling the task sends
    /// `cancelInvocation` and throws `CancellationError`.
    public func invokeEvent(_ event: String, _ content: MessageContent, invocationID: String? = nil,
                            timeout: TimeInterval? = nil) async throws -> InvokeEventResult {
        let token = makeToken()
        return try await awaitResult(token: token) { client, done in
            client.startInvocation(event, content, token: token, invocationID: invocationID, timeout: timeout, done)
        }
    }

    private func operation(_ request: OperationRequest, ackID: UInt64?, fireAndForget: Bool,
                           timeout: TimeInterval?) async throws -> WebPubSubResult {
        let token = makeToken()
        return try await awaitResult(token: token) { client, done in
            client.startOperation(request, token: token, ackID: ackID, fireAndForget: fireAndForget, timeout: timeout, done)
        }
    }

    /// Starts a request on the client's queue and awaits its completion; task cancellation cancels it.
    private func awaitResult<T: Sendable>(
        token: UInt64,
        _ start: @escaping @Sendable (WebPubSubClient, @escaping (Result<T, WebPubSubError>) -> Void) -> Void
    ) async throws -> T {
        // Set by the cancellation handler; read on the client's queue before starting, so a request
        // cancelled before it reached the queue is never sent.
        let cancelled = LockedValue(false)
        let result: Result<T, WebPubSubError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                enqueue { client in
                    if cancelled.value {
                        continuation.resume(returning: .failure(WebPubSubError(.cancelled, "cancelled before it was sent")))
                    } else {
                        start(client) { continuation.resume(returning: $0) }
                    }
                }
            }
        } onCancel: {
            cancelled.value = true
            enqueue { client in client.cancel(token: token) }
        }
        if case .failure(let error) = result, error.code == .cancelled { throw CancellationError() }
        return try result.get()
    }

    // MARK: Events

    /// The events of `type`, in order, as an `AsyncSequence`.
    ///
    /// ```swift
    /// for await message in client.events(.groupMessage) { print(message.content) }
    /// ```
    ///
    /// Each iteration subscribes on its own (``subscribe(_:_:)``), from the moment the iterator is made.
    /// It ends when the client stops (``CallbackType/stopped``: `close()`, or a finite reconnect policy
    /// ran out), when the task is cancelled, or when the loop is left. While it runs it keeps the client alive.
    ///
    /// Buffering: at most `bufferSize` events wait for the consumer. When that many wait, the client's
    /// callback queue waits for the consumer (backpressure, nothing is dropped); behind it, received
    /// messages queue up to ``WebPubSubClientOptions/maximumPendingCallbackMessages``, and then the
    /// client stops reading the socket. So a slow consumer slows delivery down; memory stays bounded.
    /// Other handlers of the same client wait too: give a stream's client its own callback queue if
    /// that matters.
    public func events<Event: Sendable>(_ type: CallbackType<Event>, bufferSize: Int = 256) -> WebPubSubEvents<Event> {
        WebPubSubEvents(client: self, type: type, bufferSize: max(1, bufferSize))
    }
}

/// The events of one ``CallbackType`` as an `AsyncSequence`; see ``WebPubSubClient/events(_:bufferSize:)``.
public struct WebPubSubEvents<Event: Sendable>: AsyncSequence, Sendable {
    /// The event type.
    public typealias Element = Event

    let client: WebPubSubClient
    let type: CallbackType<Event>
    let bufferSize: Int

    /// Subscribes and returns the iterator.
    public func makeAsyncIterator() -> Iterator {
        Iterator(EventChannel(client: client, type: type, capacity: bufferSize))
    }

    /// Iterates the events; unsubscribes when it ends or is dropped. `Sendable`: its one stored
    /// property is a `Sendable` class that owns the locked channel.
    public struct Iterator: AsyncIteratorProtocol, Sendable {
        private let lifetime: EventChannel<Event>.Lifetime

        init(_ channel: EventChannel<Event>) { lifetime = EventChannel<Event>.Lifetime(channel) }

        /// The next event, or nil once the stream ended.
        public mutating func next() async -> Event? {
            await lifetime.channel.next()
        }
    }
}

/// A bounded buffer between the callback queue (the producer, which waits when the buffer is full)
/// and one consumer task.
final class EventChannel<Event: Sendable>: @unchecked Sendable {  // every var guarded by `condition`
    private let condition = NSCondition()
    private var buffer: [Event] = []
    private var head = 0
    private var waiter: CheckedContinuation<Event?, Never>?
    private var finished = false
    private let capacity: Int
    /// Kept alive while the stream runs (its handlers hold the channel weakly); released on finish.
    private var client: WebPubSubClient?
    private var subscriptions: [Subscription] = []

    /// Finishes the channel when the iterator goes away (a loop left early).
    final class Lifetime: Sendable {
        let channel: EventChannel
        init(_ channel: EventChannel) { self.channel = channel }
        deinit { channel.finish() }
    }

    init(client: WebPubSubClient, type: CallbackType<Event>, capacity: Int) {
        self.capacity = capacity
        self.client = client
        let events = client.subscribe(type) { [weak self] event in self?.push(event) }
        let stops = client.subscribe(.stopped) { [weak self] _ in self?.finish() }
        condition.lock()
        subscriptions = [events, stops]
        condition.unlock()
    }

    /// On the callback queue: hands `event` over, waiting while the buffer is full.
    private func push(_ event: Event) {
        condition.lock()
        while buffer.count - head >= capacity && !finished { condition.wait() }
        guard !finished else {
            condition.unlock()
            return
        }
        if let w = waiter {
            waiter = nil
            condition.unlock()
            w.resume(returning: event)
            return
        }
        buffer.append(event)
        condition.unlock()
    }

    func next() async -> Event? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Event?, Never>) in
                condition.lock()
                if head < buffer.count {
                    let event = buffer[head]
                    head += 1
                    if head > 64 && head * 2 > buffer.count {
                        buffer.removeFirst(head)
                        head = 0
                    }
                    condition.unlock()
                    condition.signal()
                    continuation.resume(returning: event)
                } else if finished {
                    condition.unlock()
                    continuation.resume(returning: nil)
                } else {
                    waiter = continuation
                    condition.unlock()
                }
            }
        } onCancel: {
            finish(dropBuffered: true)
        }
    }

    /// Ends the stream: the consumer gets nil once the buffer is drained (at once when cancelled);
    /// a waiting producer goes on; the subscriptions are removed.
    func finish(dropBuffered: Bool = false) {
        condition.lock()
        if dropBuffered {
            buffer = []
            head = 0
        }
        guard !finished else {
            condition.unlock()
            return
        }
        finished = true
        let w = waiter
        waiter = nil
        let subs = subscriptions
        subscriptions = []
        let client = self.client
        self.client = nil
        condition.unlock()
        condition.broadcast()
        w?.resume(returning: nil)
        // Not on the caller's thread: unsubscribe waits for a running handler, which may be ours.
        if let client {
            DispatchQueue.global().async { for s in subs { client.unsubscribe(s) } }
        }
    }
}
