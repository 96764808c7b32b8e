import Dispatch
import Foundation
import Testing

@testable import WebPubSub

/// The client's algorithm against a scripted service (no sockets): acks, retries with one ack id,
/// recovery and reconnect decisions, callbacks and errors.
@Suite("Client state machine (scripted service)")
struct ClientStateMachineTests {
    @Test func openJoinSendClose() throws {
        let service = FakeService()
        let client = service.makeClient()
        let events = Collector<String>()
        client.subscribe(.connected) { events.append("connected \($0.connectionID)") }
        client.subscribe(.disconnected) { events.append("disconnected \($0.connectionID ?? "-")") }
        client.subscribe(.stopped) { _ in events.append("stopped") }
        try client.open()
        #expect(client.isConnected)
        #expect(client.connectionID == "conn1")
        #expect(client.userID == "u")
        let r = try client.joinGroup("g")
        #expect(r == WebPubSubResult(ackID: 1, isDuplicated: false))
        #expect(try client.sendToGroup("g", .text("hi")).ackID == 2)
        #expect(try client.sendToGroup("g", .text("ff"), fireAndForget: true).ackID == nil)
        #expect(service.sockets[0].request.subprotocol == "json.reliable.webpubsub.azure.v1")
        client.close()
        #expect(events.wait(count: 3) == ["connected conn1", "disconnected conn1", "stopped"])
        #expect(client.state == .stopped)
        #expect(throws: WebPubSubError.self) { try client.joinGroup("g") }
        do { try client.joinGroup("g") } catch { #expect(error.code == .clientClosed) }
    }

    @Test func invalidArgumentsSendNothing() throws {
        let service = FakeService()
        let client = service.makeClient()
        do { try client.joinGroup("x"); Issue.record("no error") } catch { #expect(error.code == .notConnected) }
        try client.open()
        defer { client.close() }
        let before = service.frames.count
        do { try client.joinGroup(""); Issue.record("no error") } catch { #expect(error.code == .invalidArgument) }
        do { try client.sendToGroup("g", .json("{not json")); Issue.record("no error") } catch { #expect(error.code == .invalidContent) }
        do { try client.sendEvent("", .text("x")); Issue.record("no error") } catch { #expect(error.code == .invalidArgument) }
        do { try client.sendToGroup("g", .text("x"), fireAndForget: true, ackID: 5); Issue.record("no error") } catch { #expect(error.code == .invalidArgument) }
        #expect(service.frames.count == before)
        do { try client.open(); Issue.record("no error") } catch { #expect(error.code == .alreadyOpen) }
    }

    @Test func transientFailureIsRetriedWithTheSameAckID() throws {
        let service = FakeService()
        let seen = Collector<Int>()
        service.onFrame = { socket, frame in
            guard let id = frame["ackId"] as? Int else { return }
            seen.append(id)
            if seen.values.count < 3 {
                socket.deliver(#"{"type":"ack","ackId":\#(id),"success":false,"error":{"name":"InternalServerError","message":"try again"}}"#)
            } else {
                socket.deliver(#"{"type":"ack","ackId":\#(id),"success":true}"#)
            }
        }
        let client = service.makeClient()
        try client.open()
        defer { client.close() }
        let r = try client.sendToGroup("g", .text("x"), ackID: 42)
        #expect(r.ackID == 42)
        #expect(seen.values == [42, 42, 42])
        // The generator never hands out a caller's id.
        #expect(try client.sendEvent("e", .text("y")).ackID == 43)
    }

    @Test func forbiddenIsNotRetriedAndCarriesAckIDAndName() throws {
        let service = FakeService()
        service.onFrame = { socket, frame in
            guard let id = frame["ackId"] as? Int else { return }
            socket.deliver(#"{"type":"ack","ackId":\#(id),"success":false,"error":{"name":"Forbidden","message":"no permission"}}"#)
        }
        let client = service.makeClient()
        try client.open()
        defer { client.close() }
        do {
            try client.joinGroup("g")
            Issue.record("no error")
        } catch {
            #expect(error.code == .serviceError)
            #expect(error.ackID == 1)
            #expect(error.errorName == "Forbidden")
            #expect(error.errorMessage == "no permission")
        }
        #expect(service.frames(ofType: "joinGroup").count == 1)
        #expect(client.joinedGroupNames.isEmpty)
    }

    @Test func duplicateIsSuccess() throws {
        let service = FakeService()
        service.onFrame = { socket, frame in
            guard let id = frame["ackId"] as? Int else { return }
            socket.deliver(#"{"type":"ack","ackId":\#(id),"success":false,"error":{"name":"Duplicate","message":"done"}}"#)
        }
        let client = service.makeClient()
        try client.open()
        defer { client.close() }
        #expect(try client.sendEvent("e", .json("[1]"), ackID: 9) == WebPubSubResult(ackID: 9, isDuplicated: true))
    }

    @Test func ackTimeoutRetriesThenFailsWithTheAckID() throws {
        let service = FakeService()
        service.onFrame = { _, _ in }  // never acks
        let client = service.makeClient {
            $0.ackTimeout = 0.1
            $0.messageRetryPolicy = RetryPolicy(maxRetries: 2, delay: 0.01, mode: .fixed)
        }
        try client.open()
        defer { client.close() }
        do {
            try client.sendToGroup("g", .text("x"))
            Issue.record("no error")
        } catch {
            #expect(error.code == .ackTimeout)
            #expect(error.ackID == 1)
        }
        #expect(service.frames(ofType: "sendToGroup").map { $0["ackId"] as? Int } == [1, 1, 1])
    }

    @Test func dropRecoversAndResendsWithTheSameAckID() throws {
        let service = FakeService()
        let first = Collector<Bool>()
        service.onFrame = { socket, frame in
            guard let id = frame["ackId"] as? Int else { return }
            if socket.index == 1 {
                first.append(true)
                socket.serverClose(code: 1006)  // lost before the ack
            } else {
                socket.deliver(#"{"type":"ack","ackId":\#(id),"success":true}"#)
            }
        }
        let connected = Collector<String>()
        let client = service.makeClient()
        client.subscribe(.connected) { connected.append($0.connectionID) }
        try client.open()
        defer { client.close() }
        let r = try client.sendToGroup("g", .text("x"), ackID: 7)
        #expect(r.ackID == 7)
        let sockets = service.sockets
        #expect(sockets.count == 2)
        let query = sockets[1].request.url.query ?? ""
        #expect(query.contains("awps_connection_id=conn1") && query.contains("awps_reconnection_token=tok1"))
        #expect(service.frames(ofType: "sendToGroup").map { $0["ackId"] as? Int } == [7, 7])
        // A recovery is not a new connection: no second `connected` callback.
        Thread.sleep(forTimeInterval: 0.1)
        #expect(connected.values == ["conn1"])
    }

    @Test func close1008ReconnectsWithAFreshURLAndRejoins() throws {
        let service = FakeService()
        let urls = Collector<Int>()
        let counter = Collector<Bool>()
        let client = service.makeClient(credential: {
            counter.append(true)
            let n = counter.values.count
            urls.append(n)
            return URL(string: "ws://fake/client/hubs/h?access_token=t\(n)")!
        })
        let connected = Collector<String>()
        let disconnected = Collector<String?>()
        client.subscribe(.connected) { connected.append($0.connectionID) }
        client.subscribe(.disconnected) { disconnected.append($0.message) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("a")
        try client.joinGroup("b")
        service.sockets[0].deliver(#"{"type":"system","event":"disconnected","message":"bye"}"#)
        service.sockets[0].serverClose(code: 1008)
        #expect(connected.wait(count: 2) == ["conn1", "conn2"])
        #expect(disconnected.values == ["bye"])
        #expect(service.sockets[1].request.url.query == "access_token=t2")
        #expect(eventually { service.frames(ofType: "joinGroup").count == 4 })
        let joins = service.frames(ofType: "joinGroup")
        #expect(joins.map { $0["group"] as? String } == ["a", "b", "a", "b"])
        #expect(joins.map { $0["ackId"] as? Int } == [1, 2, 3, 4])
    }

    @Test func rejoinFailureIsReported() throws {
        let service = FakeService()
        service.onFrame = { socket, frame in
            guard let id = frame["ackId"] as? Int else { return }
            if socket.index == 1 {
                socket.deliver(#"{"type":"ack","ackId":\#(id),"success":true}"#)
            } else {
                socket.deliver(#"{"type":"ack","ackId":\#(id),"success":false,"error":{"name":"Forbidden","message":"revoked"}}"#)
            }
        }
        let client = service.makeClient { $0.protocolType = .json }
        let failures = Collector<RejoinGroupFailedEvent>()
        client.subscribe(.rejoinGroupFailed) { failures.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("g")
        service.sockets[0].serverClose(code: 1000)  // json protocol: no recovery, reconnect
        let f = failures.wait(count: 1)
        #expect(f.first?.group == "g")
        #expect(f.first?.error.errorName == "Forbidden")
        #expect(client.joinedGroupNames.isEmpty)
    }

    @Test func sequenceIDsAreTrackedAndDuplicatesDropped() throws {
        let service = FakeService()
        let client = service.makeClient { $0.sequenceAckInterval = 0.05 }
        let got = Collector<String>()
        client.subscribe(.groupMessage) { got.append($0.content.text ?? "?") }
        client.subscribe(.serverMessage) { got.append("server:\($0.content.jsonText ?? "?")") }
        try client.open()
        defer { client.close() }
        let s = service.sockets[0]
        s.deliver(#"{"sequenceId":1,"type":"message","from":"group","group":"g","dataType":"text","data":"m1"}"#)
        s.deliver(#"{"sequenceId":1,"type":"message","from":"group","group":"g","dataType":"text","data":"m1-dup"}"#)
        s.deliver("garbage {")
        s.deliver(#"{"type":"pong"}"#)
        s.deliver(#"{"type":"brandNew"}"#)
        s.deliver(#"{"sequenceId":2,"type":"message","from":"server","dataType":"json","data":{"k":[true]}}"#)
        #expect(got.wait(count: 2) == ["m1", #"server:{"k":[true]}"#])
        #expect(eventually { service.frames(ofType: "sequenceAck").last?["sequenceId"] as? Int == 2 })
        #expect(client.isConnected)
    }

    @Test func reconnectGivesUpAndStops() throws {
        let service = FakeService()
        let client = service.makeClient { $0.protocolType = .json }
        let stopped = Collector<Bool>()
        client.subscribe(.stopped) { _ in stopped.append(true) }
        try client.open()
        service.onConnect = { socket in socket.serverClose(code: 1006) }  // the service is gone
        service.sockets[0].serverClose(code: 1006)
        #expect(stopped.wait(count: 1).count == 1)
        // 1 first + 1 immediate reconnect + 2 retries
        #expect(service.sockets.count == 4)
        #expect(client.state == .stopped)
        do { try client.sendEvent("e", .text("x")); Issue.record("no error") } catch { #expect(error.code == .notConnected) }
    }

    @Test func firstOpenFailureThrows() {
        let service = FakeService()
        service.onConnect = { socket in socket.serverClose(code: 1006) }
        let client = service.makeClient()
        do { try client.open(); Issue.record("no error") } catch { #expect(error.code == .openFailed) }
        #expect(client.state == .stopped)
        let failing = service.makeClient(credential: { throw CocoaError(.fileNoSuchFile) })
        do { try failing.open(); Issue.record("no error") } catch { #expect(error.code == .openFailed) }
    }

    @Test func blockingCallsAndCloseFromInsideACallback() throws {
        let service = FakeService()
        let client = service.makeClient()
        let done = Collector<String>()
        client.subscribe(.groupMessage) { event in
            // A blocking call on the callback queue works (acks are handled on the client's queue).
            let r = try? client.sendToGroup("g", .text("reply to \(event.content.text ?? "")"))
            done.append("sent \(r?.ackID ?? 0)")
            client.close()  // and close() from a callback does not deadlock
            done.append("closed")
        }
        try client.open()
        service.sockets[0].deliver(#"{"sequenceId":1,"type":"message","from":"group","group":"g","dataType":"text","data":"hi"}"#)
        #expect(done.wait(count: 2) == ["sent 1", "closed"])
        #expect(client.state == .stopped)
    }

    @Test func unsubscribeStopsDelivery() throws {
        let service = FakeService()
        let client = service.makeClient()
        let got = Collector<UInt64>()
        let sub = client.subscribe(.groupMessage) { got.append($0.sequenceID ?? 0) }
        let selfRemoving = Collector<UInt64>()
        let holder = SubscriptionHolder()
        holder.value = client.subscribe(.groupMessage) { event in
            selfRemoving.append(event.sequenceID ?? 0)
            client.unsubscribe(holder.value!)  // from inside: no later callback
        }
        try client.open()
        defer { client.close() }
        let s = service.sockets[0]
        s.deliver(#"{"sequenceId":1,"type":"message","from":"group","group":"g","dataType":"text","data":"1"}"#)
        s.deliver(#"{"sequenceId":2,"type":"message","from":"group","group":"g","dataType":"text","data":"2"}"#)
        #expect(got.wait(count: 2) == [1, 2])
        client.unsubscribe(sub)
        s.deliver(#"{"sequenceId":3,"type":"message","from":"group","group":"g","dataType":"text","data":"3"}"#)
        Thread.sleep(forTimeInterval: 0.2)
        #expect(got.values == [1, 2])
        #expect(selfRemoving.values == [1])
    }

    @Test func invokeEventRequestResponse() throws {
        let service = FakeService()
        service.onFrame = { socket, frame in
            if let id = frame["ackId"] as? Int { socket.deliver(#"{"type":"ack","ackId":\#(id),"success":true}"#) }
            guard frame["type"] as? String == "invoke", let id = frame["invocationId"] as? String else { return }
            switch frame["event"] as? String {
            case "echo": socket.deliver(#"{"type":"invokeResponse","invocationId":"\#(id)","success":true,"dataType":"text","data":"pong"}"#)
            case "fail": socket.deliver(#"{"type":"invokeResponse","invocationId":"\#(id)","success":false,"error":{"name":"BadRequest","message":"Invalid payload"}}"#)
            default: break  // never answered
            }
        }
        let client = service.makeClient()
        try client.open()
        defer { client.close() }
        let r = try client.invokeEvent("echo", .text("ping"))
        #expect(r == InvokeEventResult(invocationID: "1", content: .text("pong")))
        do { _ = try client.invokeEvent("fail", .text("x")); Issue.record("no error") } catch {
            #expect(error.code == .invocationFailed)
            #expect(error.errorName == "BadRequest")
            #expect(error.invocationID == "2")
        }
        do { _ = try client.invokeEvent("silent", .text("x"), timeout: 0.1); Issue.record("no error") } catch {
            #expect(error.code == .invocationTimedOut)
        }
        #expect(service.frames(ofType: "cancelInvocation").count == 1)
        let result = Collector<Result<InvokeEventResult, WebPubSubError>>()
        client.invokeEvent("silent", .text("x"), invocationID: "mine") { result.append($0) }
        Thread.sleep(forTimeInterval: 0.05)
        client.cancelInvocation("mine")
        let cancelled = result.wait(count: 1)
        if case .failure(let e)? = cancelled.first { #expect(e.code == .invocationCancelled) } else { Issue.record("not cancelled") }
    }

    @Test func completionHandlersRunOnTheCallbackQueueInOrder() throws {
        let service = FakeService()
        let queue = DispatchQueue(label: "test.callbacks")
        let client = service.makeClient { $0.callbackQueue = queue }
        try client.open()
        defer { client.close() }
        let order = Collector<Int>()
        for i in 1...20 {
            client.sendToGroup("g", .text("\(i)")) { result in
                dispatchPrecondition(condition: .onQueue(queue))
                if case .success = result { order.append(i) }
            }
        }
        #expect(order.wait(count: 20) == Array(1...20))
    }
}

extension ClientStateMachineTests {
    @Test func operationsWaitThroughARecovery() throws {
        let service = FakeService()
        let client = service.makeClient {
            $0.recoveryRetryInterval = 0.2
            $0.recoveryTimeout = 10  // ample: the fourth attempt (about 0.6 s in) must fall inside it
        }
        try client.open()
        defer { client.close() }
        // The service refuses the first recovery attempts (socket never opens), then accepts.
        service.onConnect = { socket in
            if socket.index < 4 {
                socket.serverClose(code: 1006)
            } else {
                socket.open()
                socket.deliver(#"{"type":"system","event":"connected","connectionId":"conn1","userId":"u","reconnectionToken":"tok"}"#)
            }
        }
        service.sockets[0].serverClose(code: 1011)
        #expect(eventually { client.state == .recovering })
        let r = try client.sendToGroup("g", .text("held"))  // sent once the connection is back
        #expect(r.ackID == 1)
        #expect(service.sockets.count == 4)
        #expect(client.connectionID == "conn1")
    }

    @Test func quickSequenceAckPastThreeHundred() throws {
        let service = FakeService()
        let client = service.makeClient { $0.sequenceAckInterval = 60 }  // only the quick ack can fire
        try client.open()
        defer { client.close() }
        let s = service.sockets[0]
        s.deliver(#"{"sequenceId":1,"type":"message","from":"server","dataType":"text","data":"a"}"#)
        s.deliver(#"{"sequenceId":302,"type":"message","from":"server","dataType":"text","data":"b"}"#)
        #expect(eventually { service.frames(ofType: "sequenceAck").map { $0["sequenceId"] as? Int } == [302] })
    }

    @Test func keepaliveDropsASilentConnectionAndRecovers() throws {
        let service = FakeService()
        service.onFrame = { socket, frame in
            // Pings are answered only by the first socket until it goes silent.
            if let id = frame["ackId"] as? Int { socket.deliver(#"{"type":"ack","ackId":\#(id),"success":true}"#) }
        }
        let client = service.makeClient {
            $0.keepAliveInterval = 0.05
            $0.keepAliveTimeout = 0.3
        }
        try client.open()
        defer { client.close() }
        #expect(eventually { service.frames(ofType: "ping").count >= 2 })
        #expect(eventually(timeout: 5) { service.sockets.count == 2 && client.isConnected })
        #expect(service.sockets[1].request.url.query?.contains("awps_reconnection_token") == true)
    }

    @Test func aCredentialThatHangsIsBoundedByTheStartTimeout() throws {
        // The credential hangs until the test lets it go, so open() can only return through the
        // start timeout: no wall-clock bound is needed to tell the two apart.
        let service = FakeService()
        let gate = DispatchSemaphore(value: 0)
        let returned = Collector<Bool>()
        let client = service.makeClient({ $0.startTimeout = 0.3 }, credential: {
            _ = gate.wait(timeout: .now() + 60)
            returned.append(true)
            return URL(string: "ws://fake/client/hubs/h?access_token=t")!
        })
        do { try client.open(); Issue.record("no error") } catch {
            #expect(error.code == .openFailed)
            #expect(error.message.contains("credential"))
        }
        #expect(returned.values.isEmpty, "open() waited for the credential instead of the start timeout")
        #expect(client.state == .stopped)
        gate.signal()
        #expect(returned.wait(count: 1) == [true])
        // Its late answer is ignored: no socket, still stopped.
        Thread.sleep(forTimeInterval: 0.2)
        #expect(service.sockets.isEmpty)
        #expect(client.state == .stopped)
    }

    @Test func closeWhileTheCredentialIsSlow() throws {
        let service = FakeService()
        let entered = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)
        let returned = Collector<Bool>()
        let client = service.makeClient(credential: {
            entered.signal()
            _ = gate.wait(timeout: .now() + 60)
            returned.append(true)
            return URL(string: "ws://fake/client/hubs/h?access_token=t")!
        })
        let opened = Collector<Result<Void, WebPubSubError>>()
        client.open { opened.append($0) }
        #expect(entered.wait(timeout: .now() + 10) == .success)
        client.close()
        let r = opened.wait(count: 1)
        if case .failure(let e)? = r.first { #expect(e.code == .openFailed) } else { Issue.record("open did not fail") }
        gate.signal()
        #expect(returned.wait(count: 1) == [true])
        // The credential's late answer is ignored: no socket, still stopped.
        Thread.sleep(forTimeInterval: 0.2)
        #expect(service.sockets.isEmpty)
        #expect(client.state == .stopped)
    }
}

final class SubscriptionHolder: @unchecked Sendable {  // `_value` guarded by `lock`
    private let lock = NSLock()
    private var _value: Subscription?
    var value: Subscription? {
        get { lock.lock(); defer { lock.unlock() }; return _value }
        set { lock.lock(); _value = newValue; lock.unlock() }
    }
}
