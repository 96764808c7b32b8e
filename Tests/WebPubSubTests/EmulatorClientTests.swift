import Dispatch
import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// Parses JSON text into a comparable value.
private func jsonValue(_ content: MessageContent) -> NSObject? {
    guard case .json(let text) = content else { return nil }
    return try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) as? NSObject
}

private func sameContent(_ a: MessageContent, _ b: MessageContent) -> Bool {
    if case .json = a, case .json = b { return jsonValue(a) == jsonValue(b) }
    return a == b
}

/// The client against the in-process emulator (loopback, port 0, one emulator per test).
@Suite("Client against the emulator", .timeLimit(.minutes(1)))
struct EmulatorClientTests {
    @Test(arguments: [WebPubSubProtocol.json, .jsonReliable])
    func groupMessagesOfEveryDataType(_ proto: WebPubSubProtocol) throws {
        let emu = try EmulatorFixture()
        let alice = emu.client(userID: "alice") { $0.protocolType = proto }
        let bob = emu.client(userID: "bob") { $0.protocolType = proto }
        let atBob = Collector<GroupMessageEvent>()
        let atAlice = Collector<GroupMessageEvent>()
        bob.subscribe(.groupMessage) { atBob.append($0) }
        alice.subscribe(.groupMessage) { atAlice.append($0) }
        try alice.open()
        try bob.open()
        defer {
            alice.close()
            bob.close()
        }
        #expect(alice.isConnected && alice.userID == "alice" && alice.connectionID != nil)
        try alice.joinGroup("g")
        try bob.joinGroup("g")
        let contents: [MessageContent] = [
            .text("héllo 🎉"), .json(#"{"n":1,"s":"x","a":[true,null]}"#), .json("42"), .binary(Data([0, 1, 2, 255])),
            .protobuf(Data([8, 150, 1])),
        ]
        for content in contents {
            let r = try alice.sendToGroup("g", content, noEcho: true)
            #expect(r.ackID != nil && !r.isDuplicated)
        }
        let events = atBob.wait(count: contents.count)
        try #require(events.count == contents.count)
        for (event, content) in zip(events, contents) {
            #expect(sameContent(event.content, content), "\(event.content) != \(content)")
            #expect(event.group == "g")
            #expect(event.fromUserID == "alice")
            #expect((event.sequenceID != nil) == proto.isReliable)
        }
        // noEcho: false echoes back to the sender; fire-and-forget arrives too.
        try alice.sendToGroup("g", .text("echoed"))
        #expect(atAlice.wait(count: 1).first?.content == .text("echoed"))
        let ff = try alice.sendToGroup("g", .text("fire and forget"), noEcho: true, fireAndForget: true)
        #expect(ff.ackID == nil)
        #expect(atBob.wait(count: contents.count + 2).last?.content == .text("fire and forget"))
        #expect(atAlice.values.count == 1)
        try bob.leaveGroup("g")
        #expect(bob.joinedGroupNames.isEmpty)
        try alice.sendToGroup("g", .text("after leave"))
        #expect(atAlice.wait(count: 2).last?.content == .text("after leave"))
        #expect(atBob.values.count == contents.count + 2)
    }

    @Test(arguments: [WebPubSubProtocol.json, .jsonReliable])
    func serverMessagesAndEvents(_ proto: WebPubSubProtocol) throws {
        let emu = try EmulatorFixture(upstream: true)
        let client = emu.client(userID: "u") { $0.protocolType = proto }
        let got = Collector<ServerMessageEvent>()
        client.subscribe(.serverMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        let id = try #require(client.connectionID)
        #expect(try emu.rest("POST", "/connections/\(id)/:send", body: "plain text", contentType: "text/plain").status < 300)
        #expect(try emu.rest("POST", "/connections/\(id)/:send", body: #"{"k":[1,2]}"#, contentType: "application/json").status < 300)
        #expect(try emu.rest("POST", "/connections/\(id)/:send", body: "AB", contentType: "application/octet-stream").status < 300)
        let events = got.wait(count: 3)
        try #require(events.count == 3)
        #expect(events[0].content == .text("plain text"))
        #expect(sameContent(events[1].content, .json(#"{"k":[1,2]}"#)))
        #expect(events[2].content == .binary(Data("AB".utf8)))
        #expect((events[0].sequenceID != nil) == proto.isReliable)
        // Events: acked, fire-and-forget, and the upstream's answer comes back as a server message.
        let r = try client.sendEvent("ev", .json(#"{"x":1}"#))
        #expect(r.ackID != nil && !r.isDuplicated)
        #expect(try client.sendEvent("ev", .text("ff"), fireAndForget: true).ackID == nil)
        #expect(try client.sendEvent("echo", .binary(Data([1, 2]))).ackID != nil)
        #expect(try client.sendEvent("echo", .text("round trip")).ackID != nil)
        #expect(try client.sendEvent("echo", .json(#"{"back":true}"#)).ackID != nil)
        let echoed = got.wait(count: 6)
        try #require(echoed.count == 6)
        #expect(echoed[3].content == .binary(Data([1, 2])))
        #expect(echoed[4].content == .text("round trip"))
        #expect(sameContent(echoed[5].content, .json(#"{"back":true}"#)))
    }

    @Test func forbiddenIsNotRetriedAndDuplicateIsSuccess() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "nobody", roles: [])
        try client.open()
        defer { client.close() }
        let before = try emu.stat("messagesIn")
        do {
            try client.joinGroup("g")
            Issue.record("join without permission succeeded")
        } catch {
            #expect(error.code == .serviceError)
            #expect(error.errorName == "Forbidden")
            #expect(error.ackID == 1)
        }
        do {
            try client.sendToGroup("g", .text("x"), ackID: 100)
            Issue.record("send without permission succeeded")
        } catch {
            #expect(error.errorName == "Forbidden")
            #expect(error.ackID == 100)
        }
        // One frame each: Forbidden is not retried.
        #expect(try emu.stat("messagesIn") - before == 2)
        // The same ack id twice: the service reports Duplicate, which is success.
        let allowed = emu.client(userID: "somebody")
        try allowed.open()
        defer { allowed.close() }
        #expect(try allowed.sendToGroup("g", .text("x"), ackID: 7) == WebPubSubResult(ackID: 7, isDuplicated: false))
        #expect(try allowed.sendToGroup("g", .text("x"), ackID: 7) == WebPubSubResult(ackID: 7, isDuplicated: true))
        #expect(try allowed.joinGroup("g", ackID: 8) == WebPubSubResult(ackID: 8, isDuplicated: false))
        #expect(try allowed.joinGroup("g", ackID: 8) == WebPubSubResult(ackID: 8, isDuplicated: true))
        // The generator continues above the caller's ids.
        #expect(try allowed.sendToGroup("g", .text("y")).ackID == 9)
    }

    @Test func ackTimeoutCarriesTheAckID() throws {
        let emu = try EmulatorFixture()
        let client = emu.client {
            $0.ackTimeout = 0.3
            $0.messageRetryPolicy = .none
        }
        try client.open()
        defer { client.close() }
        try emu.hook(try #require(client.connectionID), "drop-acks", query: "count=1")
        let started = Date()
        do {
            try client.joinGroup("g", ackID: 55)
            Issue.record("no ack timeout")
        } catch {
            #expect(error.code == .ackTimeout)
            #expect(error.ackID == 55)
        }
        #expect(Date().timeIntervalSince(started) < 10)  // generous: the default ack timeout is 30 s
    }

    @Test func retriesReuseTheAckIDAndFanOutOnce() throws {
        let emu = try EmulatorFixture()
        let publisher = emu.client(userID: "pub") { $0.ackTimeout = 1 }
        let receiver = emu.client(userID: "sub")
        let got = Collector<GroupMessageEvent>()
        receiver.subscribe(.groupMessage) { got.append($0) }
        try publisher.open()
        try receiver.open()
        defer {
            publisher.close()
            receiver.close()
        }
        try receiver.joinGroup("g")
        let id = try #require(publisher.connectionID)
        // Transient errors from the service, then a lost ack: three retries, one ack id.
        try emu.hook(id, "fail-acks", query: "count=2")
        let before = try emu.stat("groupMessagesPublished")
        let r = try publisher.sendToGroup("g", .text("once"), ackID: 900)
        #expect(r.ackID == 900)
        try emu.hook(id, "drop-acks", query: "count=1")
        let r2 = try publisher.sendToGroup("g", .text("twice?"), ackID: 901)
        #expect(r2.ackID == 901 && r2.isDuplicated)  // the retry found it done
        #expect(got.wait(count: 2).map(\.content) == [.text("once"), .text("twice?")])
        Thread.sleep(forTimeInterval: 0.3)
        #expect(got.values.count == 2)
        #expect(try emu.stat("groupMessagesPublished") - before == 2)
    }

    @Test func recoveryAfterAbruptDropsLosesNothing() throws {
        let emu = try EmulatorFixture()
        let publisher = emu.client(userID: "pub")
        let receiver = emu.client(userID: "sub")
        let got = Collector<Int>()
        let connects = Collector<String>()
        receiver.subscribe(.groupMessage) { got.append(Int($0.content.text ?? "") ?? -1) }
        receiver.subscribe(.connected) { connects.append($0.connectionID) }
        publisher.subscribe(.connected) { connects.append($0.connectionID) }
        try publisher.open()
        try receiver.open()
        defer {
            publisher.close()
            receiver.close()
        }
        try receiver.joinGroup("numbers")
        let receiverID = try #require(receiver.connectionID)
        let publisherID = try #require(publisher.connectionID)
        let count = 300
        let acked = Collector<Result<WebPubSubResult, WebPubSubError>>()
        // A numbered stream, many in flight; the receiver is dropped at 60 and the publisher at 150.
        DispatchQueue.global().async {
            for i in 1...count {
                publisher.sendToGroup("numbers", .text("\(i)")) { acked.append($0) }
                if i % 50 == 0 { Thread.sleep(forTimeInterval: 0.02) }
            }
        }
        got.wait(count: 60)
        try emu.hook(receiverID, "drop")
        got.wait(count: 150)
        try emu.hook(publisherID, "drop")
        let values = got.wait(count: count, timeout: 20)
        let complete = values == Array(1...count)
        #expect(complete, "received \(values.count) of \(count); first difference at \(zip(values, 1...).first { $0 != $1 }?.1 ?? 0)")
        #expect(acked.wait(count: count).allSatisfy { if case .success = $0 { return true } else { return false } })
        Thread.sleep(forTimeInterval: 0.3)
        #expect(got.values.count == count)
        // Recoveries, not reconnects: same connection ids, no new `connected`.
        #expect(receiver.connectionID == receiverID && publisher.connectionID == publisherID)
        #expect(connects.values.count == 2)
        #expect(receiver.socketsOpened == 2 && publisher.socketsOpened == 2)
    }

    @Test func anEventCutOffByADropRunsOnceUpstream() throws {
        let emu = try EmulatorFixture(upstream: true)
        let client = emu.client(userID: "ev") { $0.ackTimeout = 10 }
        try client.open()
        defer { client.close() }
        let id = try #require(client.connectionID)
        let done = Collector<Result<WebPubSubResult, WebPubSubError>>()
        // The upstream takes 1 s; the socket drops while the call runs, the client recovers and sends the
        // event again with the same ack id. The emulator must not call the upstream a second time.
        client.sendEvent("slow1", .text("once")) { done.append($0) }
        Thread.sleep(forTimeInterval: 0.3)
        try emu.hook(id, "drop")
        let results = done.wait(count: 1, timeout: 10)
        #expect(results.count == 1)
        if case .failure(let error) = results.first { Issue.record("the event failed: \(error)") }
        #expect(client.connectionID == id)
        let counts = try client.invokeEvent("calls", .text("")).content?.jsonText ?? ""
        let calls = try JSONSerialization.jsonObject(with: Data(counts.utf8)) as? [String: Int]
        #expect(calls?["slow1"] == 1, "upstream calls: \(counts)")
    }

    @Test func expiredSessionReconnectsWithAFreshURLAndRejoins() throws {
        let emu = try EmulatorFixture()
        let urls = Collector<URL>()
        let client = WebPubSubClient(
            credential: {
                let url = emu.url(userID: "u")
                urls.append(url)
                return url
            }, options: EmulatorFixture.options())
        let connects = Collector<String>()
        let disconnects = Collector<DisconnectedEvent>()
        let got = Collector<GroupMessageEvent>()
        client.subscribe(.connected) { connects.append($0.connectionID) }
        client.subscribe(.disconnected) { disconnects.append($0) }
        client.subscribe(.groupMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("a")
        try client.joinGroup("b")
        let first = try #require(client.connectionID)
        try emu.hook(first, "expire")
        let ids = connects.wait(count: 2)
        try #require(ids.count == 2)
        #expect(ids[1] != first)
        #expect(urls.values.count == 2)
        #expect(disconnects.values.first?.connectionID == first)
        // The groups were rejoined on the new connection.
        let other = emu.client(userID: "other")
        try other.open()
        defer { other.close() }
        #expect(eventually { client.joinedGroupNames == ["a", "b"] })
        #expect(eventually { (try? emu.groups(of: ids[1])) == ["a", "b"] })  // the rejoins landed
        try other.sendToGroup("a", .text("to a"))
        try other.sendToGroup("b", .text("to b"))
        #expect(got.wait(count: 2).map(\.content) == [.text("to a"), .text("to b")])
    }

    @Test func rejoinFailsAfterThePermissionIsRevoked() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "u", roles: [])
        let failures = Collector<RejoinGroupFailedEvent>()
        let connects = Collector<String>()
        client.subscribe(.rejoinGroupFailed) { failures.append($0) }
        client.subscribe(.connected) { connects.append($0.connectionID) }
        try client.open()
        defer { client.close() }
        let id = try #require(client.connectionID)
        #expect(try emu.rest("PUT", "/permissions/joinLeaveGroup/connections/\(id)?targetName=g").status < 300)
        try client.joinGroup("g")
        #expect(try emu.rest("DELETE", "/permissions/joinLeaveGroup/connections/\(id)?targetName=g").status < 300)
        try emu.hook(id, "expire")
        let f = failures.wait(count: 1)
        #expect(f.first?.group == "g")
        #expect(f.first?.error.errorName == "Forbidden")
        #expect(connects.values.count == 2)
        #expect(client.joinedGroupNames.isEmpty)
    }

    @Test func serverKickIsReportedAndReconnects() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "u")
        let disconnects = Collector<DisconnectedEvent>()
        let connects = Collector<String>()
        client.subscribe(.disconnected) { disconnects.append($0) }
        client.subscribe(.connected) { connects.append($0.connectionID) }
        try client.open()
        defer { client.close() }
        let id = try #require(client.connectionID)
        #expect(try emu.rest("DELETE", "/connections/\(id)?reason=kicked%20by%20admin").status < 300)
        let d = disconnects.wait(count: 1)
        #expect(d.first?.connectionID == id)
        #expect(d.first?.message == "kicked by admin")
        #expect(connects.wait(count: 2).count == 2)
        #expect(eventually { client.isConnected })
    }

    @Test func closeDuringRecovery() throws {
        let emu = try EmulatorFixture()
        let client = emu.client { $0.recoveryTimeout = 30 }
        let events = Collector<String>()
        client.subscribe(.disconnected) { _ in events.append("disconnected") }
        client.subscribe(.stopped) { _ in events.append("stopped") }
        try client.open()
        emu.stop()
        #expect(eventually { client.state == .recovering })
        let started = Date()
        client.close()
        #expect(Date().timeIntervalSince(started) < 6)  // generous: recovery would go on for 30 s
        #expect(events.wait(count: 2) == ["disconnected", "stopped"])
        #expect(client.state == .stopped)
    }

    @Test func stopsWhenReconnectAttemptsRunOut() throws {
        let emu = try EmulatorFixture()
        let client = emu.client {
            $0.recoveryTimeout = 0.5
            $0.reconnectRetryPolicy = RetryPolicy(maxRetries: 2, delay: 0.1)
        }
        let events = Collector<String>()
        client.subscribe(.disconnected) { _ in events.append("disconnected") }
        client.subscribe(.stopped) { _ in events.append("stopped") }
        try client.open()
        let pending = Collector<WebPubSubError>()
        emu.stop()
        client.sendToGroup("g", .text("never"), ackID: 31) { if case .failure(let e) = $0 { pending.append(e) } }
        #expect(events.wait(count: 2) == ["disconnected", "stopped"])
        #expect(client.state == .stopped)
        let e = pending.wait(count: 1).first
        #expect(e?.ackID == 31)
        do { try client.sendEvent("e", .text("x")); Issue.record("no error") } catch { #expect(error.code == .notConnected) }
    }

    @Test func keepaliveFindsASilentConnection() throws {
        let emu = try EmulatorFixture()
        let client = emu.client {
            $0.keepAliveInterval = 0.2
            $0.keepAliveTimeout = 2.0
        }
        let got = Collector<GroupMessageEvent>()
        client.subscribe(.groupMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("g")
        let id = try #require(client.connectionID)
        // Idle but alive: pings are answered, nothing is dropped.
        Thread.sleep(forTimeInterval: 2.5)
        #expect(client.socketsOpened == 1)
        // Silent: the keepalive notices and recovers the same session.
        try emu.hook(id, "pause")
        #expect(eventually(timeout: 15) { client.socketsOpened == 2 && client.isConnected })
        #expect(client.connectionID == id)
        let other = emu.client(userID: "other")
        try other.open()
        defer { other.close() }
        try other.sendToGroup("g", .text("still here"))
        #expect(got.wait(count: 1).first?.content == .text("still here"))
    }

    @Test func reopenAfterCloseKeepsSubscriptions() throws {
        let emu = try EmulatorFixture()
        let client = emu.client()
        let connects = Collector<String>()
        let sub = client.subscribe(.connected) { connects.append($0.connectionID) }
        try client.open()
        client.close()
        do { try client.joinGroup("g"); Issue.record("no error") } catch { #expect(error.code == .clientClosed) }
        try client.open()
        #expect(connects.wait(count: 2).count == 2)
        client.unsubscribe(sub)
        client.close()
        try client.open()
        Thread.sleep(forTimeInterval: 0.1)
        #expect(connects.values.count == 2)
        client.close()
    }
}

extension EmulatorClientTests {
    @Test func completionHandlerFormsRunInOrderOnTheCallbackQueue() throws {
        let emu = try EmulatorFixture(upstream: true)
        let queue = DispatchQueue(label: "test.callbacks")
        let client = emu.client(userID: "u") { $0.callbackQueue = queue }
        let steps = Collector<String>()
        @Sendable func record(_ name: String, _ result: Result<WebPubSubResult, WebPubSubError>) {
            dispatchPrecondition(condition: .onQueue(queue))
            switch result {
            case .success(let r): steps.append("\(name) ok \(r.ackID.map(String.init) ?? "-")")
            case .failure(let e): steps.append("\(name) failed \(e.code)")
            }
        }
        client.open { result in
            dispatchPrecondition(condition: .onQueue(queue))
            steps.append(result.isSuccess ? "open ok" : "open failed")
            client.joinGroup("g") { record("join", $0) }
            client.sendToGroup("g", .text("x")) { record("send", $0) }
            client.sendEvent("ev", .text("y")) { record("event", $0) }
            client.leaveGroup("g") { record("leave", $0) }
            client.sendToGroup("", .text("x")) { record("bad", $0) }
        }
        let got = steps.wait(count: 6)
        // Completions come in the order the operations finished: the bad one at once, the rest on their acks.
        #expect(got.prefix(2) == ["open ok", "bad failed invalidArgument"])
        #expect(Set(got.dropFirst(2)) == ["join ok 1", "send ok 2", "event ok 3", "leave ok 4"])
        let closed = Collector<Bool>()
        client.close { closed.append(true) }
        #expect(closed.wait(count: 1) == [true])
        #expect(client.state == .stopped)
    }
}

extension EmulatorClientTests {
    /// P17: more than the service's 1000-message buffer within one ack period. Only the quick
    /// sequence ack (at +300) keeps the receiver's session alive.
    @Test func quickSequenceAcksKeepABusyReceiverAlive() throws {
        let emu = try EmulatorFixture()
        let publisher = emu.client(userID: "pub")
        let receiver = emu.client(userID: "sub") { $0.sequenceAckInterval = 30 }  // the timer never fires here
        let got = Collector<Int>()
        let connects = Collector<String>()
        receiver.subscribe(.groupMessage) { got.append(Int($0.content.text ?? "") ?? -1) }
        receiver.subscribe(.connected) { connects.append($0.connectionID) }
        try publisher.open()
        try receiver.open()
        defer {
            publisher.close()
            receiver.close()
        }
        try receiver.joinGroup("burst")
        let total = 3000
        var next = 1
        while next <= total {
            // Bursts of 200, at most 300 ahead of what the receiver delivered: with acks only every
            // second, far more than 1000 would be unacknowledged within that second.
            let upTo = min(total, next + 199)
            for i in next...upTo { publisher.sendToGroup("burst", .text("\(i)"), fireAndForget: true) { _ in } }
            got.wait(count: upTo - 100, timeout: 2)
            next = upTo + 1
        }
        let values = got.wait(count: total, timeout: 30)
        let complete = values == Array(1...total)
        #expect(complete, "received \(values.count) of \(total); first gap after \(zip(values, 1...).first { $0 != $1 }?.1 ?? 0)")
        #expect(connects.values.count == 1)
        #expect(receiver.socketsOpened == 1)
    }
}

extension EmulatorClientTests {
    @Test func invokeEventThroughTheUpstream() throws {
        let emu = try EmulatorFixture(upstream: true)
        let client = emu.client(userID: "u")
        try client.open()
        defer { client.close() }
        #expect(try client.invokeEvent("echo", .text("ping")) == InvokeEventResult(invocationID: "1", content: .text("ping")))
        let json = try client.invokeEvent("echo", .json(#"{"a":[1,2]}"#), invocationID: "mine")
        #expect(json.invocationID == "mine")
        #expect(json.content.map { sameContent($0, .json(#"{"a":[1,2]}"#)) } == true)
        #expect(try client.invokeEvent("echo", .binary(Data([7, 8]))).content == .binary(Data([7, 8])))
        #expect(try client.invokeEvent("nothing", .text("x")).content == nil)  // 204: success without data
        do {
            _ = try client.invokeEvent("fail", .text("x"))
            Issue.record("no error")
        } catch {
            #expect(error.code == .invocationFailed)
            #expect(error.errorName == "InternalServerError")
            #expect(error.invocationID != nil)
        }
        do {
            _ = try client.invokeEvent("slow", .text("x"), timeout: 0.3)
            Issue.record("no error")
        } catch {
            #expect(error.code == .invocationTimedOut)
        }
        let cancelled = Collector<WebPubSubError>()
        client.invokeEvent("slow", .text("x"), invocationID: "c1") { if case .failure(let e) = $0 { cancelled.append(e) } }
        Thread.sleep(forTimeInterval: 0.1)
        client.cancelInvocation("c1")
        #expect(cancelled.wait(count: 1).first?.code == .invocationCancelled)
        #expect(client.isConnected)
    }

    @Test func malformedUnknownAndReplayedFramesAreSkipped() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "u")
        let got = Collector<GroupMessageEvent>()
        client.subscribe(.groupMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("g")
        let id = try #require(client.connectionID)
        try client.sendToGroup("g", .text("first"))
        #expect(got.wait(count: 1).first?.sequenceID == 1)
        for body in [
            "not json {", "", "[1,2,3]", #"{"type":"brandNew","x":1}"#, #"{"type":"system","event":"later"}"#,
            #"{"type":"ack","ackId":"x"}"#, #"{"type":"ack","ackId":424242,"success":true}"#,
            #"{"sequenceId":1,"type":"message","from":"group","group":"g","dataType":"text","data":"stale duplicate"}"#,
            #"{"type":"message","from":"group","group":"g","dataType":"binary","data":"%%%"}"#,
            #"{"type":"message","from":"group","group":"g","dataType":"weird","data":1}"#,
            #"{"type":"invokeResponse","invocationId":"nobody","success":true}"#, #"{"type":"pong"}"#,
        ] {
            let r = try emu.http("POST", "/_emulator/connections/\(id)/frame", body: Data(body.utf8))
            #expect(r.status == 200, "frame hook: \(r.status) \(r.body)")
        }
        let binary = try emu.http("POST", "/_emulator/connections/\(id)/frame?binary=true", body: Data([0, 1, 2]))
        #expect(binary.status == 200)
        // Everything the service has not had acked, again: duplicates to drop.
        let replay = try emu.http("POST", "/_emulator/connections/\(id)/replay")
        #expect(replay.status == 200)
        try client.sendToGroup("g", .text("second"))
        let events = got.wait(count: 2)
        Thread.sleep(forTimeInterval: 0.2)
        #expect(got.values.map(\.content) == [.text("first"), .text("second")])
        #expect(events.map(\.sequenceID) == [1, 2])
        #expect(client.isConnected && client.socketsOpened == 1 && client.connectionID == id)
    }

    @Test func aServiceCloseWithACommonCodeIsRecovered() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "u")
        let disconnects = Collector<DisconnectedEvent>()
        let got = Collector<GroupMessageEvent>()
        client.subscribe(.disconnected) { disconnects.append($0) }
        client.subscribe(.groupMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("g")
        let id = try #require(client.connectionID)
        let r = try emu.http("POST", "/_emulator/connections/\(id)/close?code=1011&reason=restart&disconnected=true")
        #expect(r.status == 200)
        #expect(eventually { client.socketsOpened == 2 && client.isConnected })
        #expect(client.connectionID == id)
        try client.sendToGroup("g", .text("after"))
        #expect(got.wait(count: 1).first?.content == .text("after"))
        #expect(disconnects.values.isEmpty)
    }
}

extension EmulatorClientTests {
    /// Every public call from many threads at once, open and close included: no deadlock, no crash,
    /// every call returns (and, under `make test-tsan`, no data race).
    @Test func concurrentCallsFromManyThreads() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "u") {
            $0.ackTimeout = 1
            $0.messageRetryPolicy = RetryPolicy(maxRetries: 1, delay: 0.01)
        }
        let received = Collector<Int>()
        client.subscribe(.groupMessage) { _ in received.append(1) }
        try client.open()
        let deadline = Date().addingTimeInterval(2)
        let calls = Collector<Int>()
        DispatchQueue.concurrentPerform(iterations: 6) { worker in
            var n = 0
            while Date() < deadline {
                n += 1
                switch (worker + n) % 12 {
                case 0 where worker == 0: client.close()
                case 1 where worker == 0: try? client.open()
                case 2, 3, 4: _ = try? client.sendToGroup("g", .text("\(worker)-\(n)"))
                case 5: _ = try? client.joinGroup("g")
                case 6: _ = client.isConnected; _ = client.connectionID; _ = client.state; _ = client.joinedGroupNames
                case 7:
                    let s = client.subscribe(.groupMessage) { _ in }
                    client.unsubscribe(s)
                case 8: client.sendToGroup("g", .text("async"), fireAndForget: true) { _ in }
                case 9: _ = try? client.leaveGroup("g")
                case 10: client.cancelInvocation("none")
                default: _ = try? client.sendToGroup("g", .json("[\(n)]"), noEcho: true)
                }
            }
            calls.append(n)
        }
        client.close()
        #expect(client.state == .stopped)
        #expect(calls.values.count == 6)
        try client.open()
        try client.joinGroup("g")
        try client.sendToGroup("g", .text("still works"))
        client.close()
    }
}

final class WeakBox: @unchecked Sendable {  // written once on the test thread, read there
    weak var value: WebPubSubClient?
}

extension EmulatorClientTests {
    /// No retain cycle inside the client: released after close(), and also when released while open
    /// (its socket is then dropped).
    @Test func aReleasedClientIsFreedAndDropsItsSocket() throws {
        let emu = try EmulatorFixture()
        let closed = WeakBox()
        let open = WeakBox()
        try {
            let a = emu.client(userID: "a")
            a.subscribe(.groupMessage) { _ in }
            try a.open()
            try a.joinGroup("g")
            try a.sendToGroup("g", .text("x"))
            a.close()
            closed.value = a
            let b = emu.client(userID: "b")
            try b.open()
            try b.joinGroup("g")
            open.value = b
        }()
        #expect(eventually(timeout: 5) { closed.value == nil && open.value == nil })
        // The released open client's socket goes away; its reliable session waits for a recovery that never comes.
        #expect(eventually(timeout: 5) {
            let list = (try? emu.http("GET", "/_emulator/connections").body) ?? ""
            return !list.contains(#""connected":true"#)
        })
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { return true } else { return false } }
}

@Suite("Interop with the Python SDK", .timeLimit(.minutes(1)))
struct PythonInteropTests {
    @Test(arguments: [WebPubSubProtocol.jsonReliable, .json])
    func swiftAndPythonClientsTalkBothWays(_ proto: WebPubSubProtocol) throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "swift") { $0.protocolType = proto }
        let got = Collector<GroupMessageEvent>()
        client.subscribe(.groupMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("chat")
        let py = try PeerProcess.python(
            "py_client_peer.py",
            [emu.url(userID: "py").absoluteString, "chat", "py", "--protocol", proto == .json ? "json" : "json-reliable"])
        defer { py.stop() }
        try py.waitForLine(containing: "READY", timeout: 30)
        try py.waitForLine(containing: "SENT", timeout: 10)
        // Python → Swift: text and JSON.
        #expect(eventually { got.values.count >= 2 })
        let fromPython = got.values.filter { $0.fromUserID == "py" }
        #expect(fromPython.count == 2, "\(got.values)")
        #expect(fromPython.contains { $0.content == .text("hello from py") })
        #expect(fromPython.contains { sameContent($0.content, .json(#"{"from":"py","n":1}"#)) })
        // Swift → Python, and Python's answer back.
        try client.sendToGroup("chat", .text("hi from swift"), noEcho: true)
        try py.waitForLine(containing: "RECEIVED text hi from swift", timeout: 10)
        #expect(eventually { got.values.contains { $0.content == .text("py echo: hi from swift") } })
        try client.sendToGroup("chat", .json(#"{"from":"swift","ok":true}"#), noEcho: true)
        try py.waitForLine(containing: #"RECEIVED json {"from": "swift", "ok": true}"#, timeout: 10)
        try client.sendToGroup("chat", .binary(Data([1, 2, 254])), noEcho: true)
        try py.waitForLine(containing: "RECEIVED binary 0102fe", timeout: 10)
    }
}
