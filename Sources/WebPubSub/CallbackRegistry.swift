import Dispatch
import Foundation

/// The handlers registered with ``WebPubSubClient/subscribe(_:_:)``, and their delivery on the
/// serial callback queue.
///
/// Events are queued to `callbackQueue` in the order they happen, so handlers run one at a time in
/// arrival order. A handler runs only if it is still registered when its turn comes, and
/// ``remove(_:)`` waits for a running handler to finish (unless it is called on the callback queue
/// itself), so no handler runs after `unsubscribe` returns.
final class CallbackRegistry: @unchecked Sendable {  // `entries` and `nextID` are guarded by `lock`
    typealias Handler = @Sendable (any Sendable) -> Void

    let callbackQueue: DispatchQueue
    private let lock = NSLock()
    private var entries: [CallbackKind: [(id: UInt64, handler: Handler)]] = [:]
    private var nextID: UInt64 = 1
    /// Marks `callbackQueue` so that `remove` can tell whether it runs on it.
    private let onCallbackQueueKey = DispatchSpecificKey<Bool>()

    init(callbackQueue: DispatchQueue) {
        self.callbackQueue = callbackQueue
        callbackQueue.setSpecific(key: onCallbackQueueKey, value: true)
    }

    deinit {
        callbackQueue.setSpecific(key: onCallbackQueueKey, value: nil)
    }

    var isOnCallbackQueue: Bool {
        if DispatchQueue.getSpecific(key: onCallbackQueueKey) == true { return true }
        // The main queue only runs on the main thread: waiting for it from there would never end.
        return callbackQueue === DispatchQueue.main && Thread.isMainThread
    }

    @discardableResult
    func add<Event>(_ type: CallbackType<Event>, _ handler: @escaping @Sendable (Event) -> Void) -> Subscription {
        let erased: Handler = { value in
            if let event = value as? Event { handler(event) }
        }
        lock.lock()
        defer { lock.unlock() }
        let id = nextID
        nextID += 1
        entries[type.kind, default: []].append((id, erased))
        return Subscription(id: id)
    }

    /// Removes a registration; afterwards its handler does not run again.
    func remove(_ subscription: Subscription) {
        lock.lock()
        for (kind, list) in entries {
            if let index = list.firstIndex(where: { $0.id == subscription.id }) {
                entries[kind]!.remove(at: index)
                break
            }
        }
        lock.unlock()
        // A handler of this registration may be running right now on the callback queue: wait for
        // it, unless we are that handler (then only later deliveries are prevented).
        if !isOnCallbackQueue {
            callbackQueue.sync {}
        }
    }

    private func isRegistered(_ id: UInt64, _ kind: CallbackKind) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return entries[kind]?.contains(where: { $0.id == id }) ?? false
    }

    func count(_ kind: CallbackKind) -> Int {
        lock.lock()
        defer { lock.unlock() }
        return entries[kind]?.count ?? 0
    }

    /// Queues `event` for every handler of `type`, behind everything queued before; `then` runs on
    /// the callback queue after the handlers.
    func emit<Event>(_ type: CallbackType<Event>, _ event: Event, then: (@Sendable () -> Void)? = nil) {
        let kind = type.kind
        callbackQueue.async { [self] in
            lock.lock()
            let snapshot = entries[kind] ?? []
            lock.unlock()
            for entry in snapshot where isRegistered(entry.id, kind) {
                entry.handler(event)
            }
            then?()
        }
    }

    /// Runs `work` on the callback queue, in order with the events (completion handlers).
    func run(_ work: @escaping @Sendable () -> Void) {
        callbackQueue.async(execute: work)
    }
}
