import Dispatch
import Foundation

//===----------------------------------------------------------------------===//
// The public calls: blocking and completion-handler forms. Each one hops to the
// client's queue and hands a request to the state machine.
//===----------------------------------------------------------------------===//

extension WebPubSubClient {
    // MARK: Open and close

    /// Opens the connection and waits until the service's `connected` message arrived (so
    /// ``connectionID`` is set), at most ``WebPubSubClientOptions/startTimeout``.
    ///
    /// The first open is not retried: on failure the client is stopped again.
    /// - Throws: ``WebPubSubError`` `.alreadyOpen` unless the client is stopped; `.openFailed` (with
    ///   ``WebPubSubError/webSocketError`` or ``WebPubSubError/underlyingError`` saying why).
    @available(*, noasync, message: "blocks the thread: use the async overload")
    public func open() throws(WebPubSubError) {
        try blocking { client, done in client.startOpen(done) }
    }

    /// Opens the connection without blocking; `completion` runs on the callback queue.
    public func open(completion: @escaping @Sendable (Result<Void, WebPubSubError>) -> Void) {
        enqueue { client in client.startOpen { result in client.registry.run { completion(result) } } }
    }

    /// Closes the connection (close code 1000) and stops the client; `.disconnected` (when a
    /// connection was up) and `.stopped` follow. Pending operations fail with `.stopped`.
    ///
    /// Blocks until the client is stopped (at most a few seconds: the close handshake is bounded);
    /// callable from any thread, a callback included; idempotent. The client can be opened again.
    @available(*, noasync, message: "blocks the thread: use the async overload")
    public func close() {
        blockingClose(timeout: 10)
    }

    /// Closes without blocking; `completion` runs on the callback queue once the client is stopped.
    public func close(completion: @escaping @Sendable () -> Void) {
        enqueue { client in client.startClose { client.registry.run(completion) } }
    }

    // MARK: Operations

    private func perform(_ request: OperationRequest, ackID: UInt64?, fireAndForget: Bool = false,
                         timeout: TimeInterval?) throws(WebPubSubError) -> WebPubSubResult {
        if fireAndForget, ackID == nil, let sent = sendDirectly(request) { return sent }
        let token = makeToken()
        return try blocking { client, done in
            client.startOperation(request, token: token, ackID: ackID, fireAndForget: fireAndForget, timeout: timeout, done)
        }
    }

    private func perform(_ request: OperationRequest, ackID: UInt64?, fireAndForget: Bool = false, timeout: TimeInterval?,
                         completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) -> OperationHandle {
        let token = makeToken()
        enqueue { client in
            client.startOperation(request, token: token, ackID: ackID, fireAndForget: fireAndForget, timeout: timeout) { result in
                client.registry.run { completion(result) }
            }
        }
        return OperationHandle(client: self, token: token)
    }

    /// Joins `group` and waits for the service's ack. The group is rejoined on every new connection
    /// (see ``WebPubSubClientOptions/autoRejoinGroups``).
    ///
    /// Transient failures are retried with the same ack id; `Duplicate` counts as success.
    /// - Parameters:
    ///   - group: the group (1 to 1024 bytes of UTF-8).
    ///   - ackID: the ack id to use; by default a fresh one.
    ///   - timeout: a deadline for the whole operation, retries included, in seconds; past it the call
    ///     fails with `.timedOut`. By default none (each attempt is bounded by the ack time-out).
    /// - Returns: the ack id used and whether the service reported a duplicate.
    /// - Throws: ``WebPubSubError`` (with the ack id and the service's error name).
    @available(*, noasync, message: "blocks the thread: use the async overload")
    @discardableResult
    public func joinGroup(_ group: String, ackID: UInt64? = nil, timeout: TimeInterval? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try perform(.joinGroup(group), ackID: ackID, timeout: timeout)
    }

    /// Joins `group` without blocking; `completion` runs on the callback queue.
    /// - Returns: a handle that cancels the operation.
    @discardableResult
    public func joinGroup(_ group: String, ackID: UInt64? = nil, timeout: TimeInterval? = nil,
                          completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) -> OperationHandle {
        perform(.joinGroup(group), ackID: ackID, timeout: timeout, completion: completion)
    }

    /// Leaves `group` and waits for the service's ack; the group is no longer rejoined.
    /// - Parameters:
    ///   - group: the group.
    ///   - ackID: the ack id to use; by default a fresh one.
    ///   - timeout: a deadline for the whole operation, in seconds (`.timedOut` past it).
    /// - Throws: ``WebPubSubError``.
    @available(*, noasync, message: "blocks the thread: use the async overload")
    @discardableResult
    public func leaveGroup(_ group: String, ackID: UInt64? = nil, timeout: TimeInterval? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try perform(.leaveGroup(group), ackID: ackID, timeout: timeout)
    }

    /// Leaves `group` without blocking; `completion` runs on the callback queue.
    /// - Returns: a handle that cancels the operation.
    @discardableResult
    public func leaveGroup(_ group: String, ackID: UInt64? = nil, timeout: TimeInterval? = nil,
                           completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) -> OperationHandle {
        perform(.leaveGroup(group), ackID: ackID, timeout: timeout, completion: completion)
    }

    /// Publishes `content` to `group` and waits for the service's ack.
    ///
    /// - Parameters:
    ///   - group: the group.
    ///   - content: what to send.
    ///   - noEcho: do not deliver the message back to this connection.
    ///   - fireAndForget: send without an ack id and return once the socket took it (no ack; Docs/Client.md,
    ///     "Join groups and send", says what is guaranteed).
    ///   - ackID: the ack id to use (e.g. the one from an earlier failed call, so the service
    ///     de-duplicates); by default a fresh one.
    ///   - timeout: a deadline for the whole operation, in seconds (`.timedOut` past it).
    /// - Throws: ``WebPubSubError``; `.invalidContent` when `.json` content is not valid JSON;
    ///   `.messageTooLarge` past ``WebPubSubClientOptions/maximumOutgoingMessageSize``.
    @available(*, noasync, message: "blocks the thread: use the async overload")
    @discardableResult
    public func sendToGroup(_ group: String, _ content: MessageContent, noEcho: Bool = false, fireAndForget: Bool = false,
                            ackID: UInt64? = nil, timeout: TimeInterval? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try perform(.sendToGroup(group, content, noEcho: noEcho), ackID: ackID, fireAndForget: fireAndForget, timeout: timeout)
    }

    /// Publishes without blocking; `completion` runs on the callback queue.
    /// - Returns: a handle that cancels the operation.
    @discardableResult
    public func sendToGroup(_ group: String, _ content: MessageContent, noEcho: Bool = false, fireAndForget: Bool = false,
                            ackID: UInt64? = nil, timeout: TimeInterval? = nil,
                            completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) -> OperationHandle {
        perform(.sendToGroup(group, content, noEcho: noEcho), ackID: ackID, fireAndForget: fireAndForget, timeout: timeout,
                completion: completion)
    }

    /// Sends event `event` to the service's upstream handler and waits for the ack.
    /// - Parameters:
    ///   - event: the event name.
    ///   - content: what to send.
    ///   - fireAndForget: send without an ack id and return once the socket took it.
    ///   - ackID: the ack id to use; by default a fresh one.
    ///   - timeout: a deadline for the whole operation, in seconds (`.timedOut` past it).
    /// - Throws: ``WebPubSubError``.
    @available(*, noasync, message: "blocks the thread: use the async overload")
    @discardableResult
    public func sendEvent(_ event: String, _ content: MessageContent, fireAndForget: Bool = false,
                          ackID: UInt64? = nil, timeout: TimeInterval? = nil) throws(WebPubSubError) -> WebPubSubResult {
        try perform(.sendEvent(event, content), ackID: ackID, fireAndForget: fireAndForget, timeout: timeout)
    }

    /// Sends an event without blocking; `completion` runs on the callback queue.
    /// - Returns: a handle that cancels the operation.
    @discardableResult
    public func sendEvent(_ event: String, _ content: MessageContent, fireAndForget: Bool = false, ackID: UInt64? = nil,
                          timeout: TimeInterval? = nil,
                          completion: @escaping @Sendable (Result<WebPubSubResult, WebPubSubError>) -> Void) -> OperationHandle {
        perform(.sendEvent(event, content), ackID: ackID, fireAndForget: fireAndForget, timeout: timeout, completion: completion)
    }

    /// Invokes event `event` on the service's upstream and waits for its response (request and
    /// response, as in the JavaScript client). Not retried; fails when the connection drops.
    /// - Parameters:
    ///   - event: the upstream event name.
    ///   - content: the request body.
    ///   - invocationID: the id to use; by default "1", "2", …
    ///   - timeout: how long to wait, in seconds; by default the ack timeout. On time-out a
    ///     `cancelInvocation` is sent.
    /// - Throws: ``WebPubSubError`` `.invocationFailed` (with the upstream's error name),
    ///   `.invocationTimedOut`, `.invocationCancelled`, `.connectionLost`, `.notConnected`.
    @available(*, noasync, message: "blocks the thread: use the async overload")
    public func invokeEvent(_ event: String, _ content: MessageContent, invocationID: String? = nil,
                            timeout: TimeInterval? = nil) throws(WebPubSubError) -> InvokeEventResult {
        let token = makeToken()
        return try blocking { client, done in
            client.startInvocation(event, content, token: token, invocationID: invocationID, timeout: timeout, done)
        }
    }

    /// Invokes without blocking; `completion` runs on the callback queue.
    /// - Returns: a handle that cancels the invocation (as ``cancelInvocation(_:)`` does, with `.cancelled`).
    @discardableResult
    public func invokeEvent(_ event: String, _ content: MessageContent, invocationID: String? = nil, timeout: TimeInterval? = nil,
                            completion: @escaping @Sendable (Result<InvokeEventResult, WebPubSubError>) -> Void) -> OperationHandle {
        let token = makeToken()
        enqueue { client in
            client.startInvocation(event, content, token: token, invocationID: invocationID, timeout: timeout) { result in
                client.registry.run { completion(result) }
            }
        }
        return OperationHandle(client: self, token: token)
    }

    /// Cancels a pending invocation: sends `cancelInvocation` and fails the waiting call with
    /// `.invocationCancelled`. Does nothing when no such invocation is pending.
    public func cancelInvocation(_ invocationID: String) {
        enqueue { client in client.startCancelInvocation(invocationID) }
    }
}

/// Cancels an operation started with a completion-handler form (`sendToGroup(_:_:noEcho:fireAndForget:ackID:timeout:completion:)` and the others).
///
/// Cancelling an operation that was not sent yet sends nothing; one that was sent is forgotten (the
/// service may still carry it out: retrying with the same ack id is safe). Either way its completion
/// runs once, with `.cancelled`. Cancelling a finished operation does nothing.
public struct OperationHandle: Sendable {
    private let client: WebPubSubClient
    let token: UInt64

    init(client: WebPubSubClient, token: UInt64) {
        self.client = client
        self.token = token
    }

    /// Cancels the operation (any thread; idempotent).
    public func cancel() {
        client.enqueue { $0.cancel(token: token) }
    }
}
