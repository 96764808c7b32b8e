import Dispatch
import Foundation
import Testing
import WebSocket

@testable import WebPubSub

final class Flag: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var _value = false
    var value: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _value }
        set { lock.lock(); _value = newValue; lock.unlock() }
    }
}

@Suite("Callback registry")
struct CallbackRegistryTests {
    @Test func deliversInOrderOnTheCallbackQueue() {
        let queue = DispatchQueue(label: "cb")
        let registry = CallbackRegistry(callbackQueue: queue)
        let got = Collector<UInt64>()
        registry.add(.serverMessage) { event in
            dispatchPrecondition(condition: .onQueue(queue))
            got.append(event.sequenceID ?? 0)
        }
        for i in 1...500 { registry.emit(.serverMessage, ServerMessageEvent(content: .text(""), sequenceID: UInt64(i))) }
        #expect(got.wait(count: 500) == (1...500).map(UInt64.init))
    }

    @Test func typedKeysOnlyReachTheirHandlers() {
        let registry = CallbackRegistry(callbackQueue: DispatchQueue(label: "cb"))
        let got = Collector<String>()
        registry.add(.connected) { got.append("connected \($0.connectionID)") }
        registry.add(.stopped) { _ in got.append("stopped") }
        registry.add(.groupMessage) { got.append("group \($0.group)") }
        registry.emit(.groupMessage, GroupMessageEvent(group: "g", fromUserID: nil, content: .text("x"), sequenceID: nil))
        registry.emit(.connected, ConnectedEvent(connectionID: "c", userID: nil))
        registry.emit(.rejoinGroupFailed, RejoinGroupFailedEvent(group: "g", error: WebPubSubError(.stopped, "")))
        registry.emit(.stopped, StoppedEvent())
        #expect(got.wait(count: 3) == ["group g", "connected c", "stopped"])
    }

    /// No handler runs after `remove` returns, even while events are being delivered.
    @Test func noCallbackAfterUnsubscribeReturns() {
        for _ in 0..<20 {
            let registry = CallbackRegistry(callbackQueue: DispatchQueue(label: "cb"))
            let removed = Flag()
            let late = Flag()
            let sub = registry.add(.serverMessage) { _ in
                usleep(50)
                if removed.value { late.value = true }
            }
            for _ in 0..<200 { registry.emit(.serverMessage, ServerMessageEvent(content: .text(""), sequenceID: nil)) }
            usleep(500)
            registry.remove(sub)
            removed.value = true
            registry.callbackQueue.sync {}
            #expect(!late.value)
        }
    }

    /// Events and completion work share one order, batched or not.
    @Test func eventsAndWorkKeepOneOrder() {
        let registry = CallbackRegistry(callbackQueue: DispatchQueue(label: "cb"))
        let got = Collector<UInt64>()
        registry.add(.serverMessage) { got.append($0.sequenceID ?? 0) }
        for i in 1...300 {
            if i % 3 == 0 {
                registry.run { got.append(UInt64(i)) }
            } else {
                registry.emit(.serverMessage, ServerMessageEvent(content: .text(""), sequenceID: UInt64(i)))
            }
        }
        #expect(got.wait(count: 300) == (1...300).map(UInt64.init))
    }

    /// A handler that another handler of the same event removed does not run for it, nor later.
    @Test func aHandlerRemovedByAnotherDoesNotRun() {
        let registry = CallbackRegistry(callbackQueue: DispatchQueue(label: "cb"))
        let got = Collector<String>()
        let second = LockedValue<Subscription?>(nil)
        registry.add(.serverMessage) { _ in
            got.append("first")
            if let s = second.value { registry.remove(s) }
        }
        second.value = registry.add(.serverMessage) { _ in got.append("second") }
        registry.emit(.serverMessage, ServerMessageEvent(content: .text(""), sequenceID: nil))
        registry.emit(.serverMessage, ServerMessageEvent(content: .text(""), sequenceID: nil))
        registry.run { got.append("end") }
        #expect(got.wait(count: 3) == ["first", "first", "end"])
    }
}
