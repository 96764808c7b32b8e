import Dispatch
import Foundation
import WebSocket

/// The handlers registered with ``WebPubSubClient/subscribe(_:_:)``, and their delivery on the
/// serial callback queue.
///
/// Events and completion work go into one FIFO list in the order they happen; the callback queue
/// drains it, so handlers run one at a time in arrival order. Whatever was added while a drain was
/// pending goes in the same callback-queue hop (all messages of one socket read, typically). The
/// handlers are an immutable snapshot, replaced on every `add` and `remove`; each event reads the
/// current one when its turn comes (one lock per event, none per handler), so a handler runs only if
/// it is still registered then, and ``remove(_:)`` waits for a running handler to finish (unless it
/// is called on the callback queue itself): no handler runs after `unsubscribe` returns.
final class CallbackRegistry: Sendable {
    typealias Handler = @Sendable (any Sendable) -> Void
    typealias Snapshot = [CallbackKind: [(id: UInt64, handler: Handler)]]

    let callbackQueue: DispatchQueue
    private let handlers = LockedValue<(snapshot: Snapshot, nextID: UInt64)>(([:], 1))
    /// Work not yet run on the callback queue, and whether a drain is scheduled.
    private let pending = LockedValue<(work: [@Sendable () -> Void], scheduled: Bool)>(([], false))
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
        return handlers.withLock { h in
            let id = h.nextID
            h.nextID += 1
            h.snapshot[type.kind, default: []].append((id, erased))
            return Subscription(id: id)
        }
    }

    /// Removes a registration; afterwards its handler does not run again.
    func remove(_ subscription: Subscription) {
        handlers.modify { h in
            for (kind, list) in h.snapshot {
                if let index = list.firstIndex(where: { $0.id == subscription.id }) {
                    h.snapshot[kind]!.remove(at: index)
                    break
                }
            }
        }
        // A handler of this registration may be running right now on the callback queue: wait for
        // it, unless we are that handler (then only later deliveries are prevented).
        if !isOnCallbackQueue {
            callbackQueue.sync {}
        }
    }

    func count(_ kind: CallbackKind) -> Int {
        handlers.withLock { $0.snapshot[kind]?.count ?? 0 }
    }

    /// Queues `event` for every handler of `type`, behind everything queued before; `then` runs on
    /// the callback queue after the handlers.
    func emit<Event>(_ type: CallbackType<Event>, _ event: Event, then: (@Sendable () -> Void)? = nil) {
        let kind = type.kind
        let handlers = self.handlers
        run {
            // The handlers registered now: one removed since is not called. With several, the
            // snapshot is read again after each, since a handler may remove another.
            var list = handlers.withLock({ $0.snapshot[kind] }) ?? []
            var index = 0
            while index < list.count {
                list[index].handler(event)
                index += 1
                if index < list.count {
                    let current = handlers.withLock({ $0.snapshot[kind] }) ?? []
                    list = list[index...].filter { e in current.contains(where: { $0.id == e.id }) }
                    index = 0
                }
            }
            then?()
        }
    }

    /// Runs `work` on the callback queue, in order with the events (completion handlers).
    func run(_ work: @escaping @Sendable () -> Void) {
        let schedule = pending.withLock { p in
            p.work.append(work)
            if p.scheduled { return false }
            p.scheduled = true
            return true
        }
        if schedule { callbackQueue.async { [self] in drain() } }
    }

    /// Runs every queued piece of work, in order, until none is left.
    private func drain() {
        while true {
            let batch = pending.withLock { p -> [@Sendable () -> Void] in
                if p.work.isEmpty {
                    p.scheduled = false
                    return []
                }
                let b = p.work
                p.work.removeAll(keepingCapacity: true)
                return b
            }
            if batch.isEmpty { return }
            for work in batch { work() }
        }
    }
}
