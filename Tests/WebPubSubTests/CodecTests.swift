import Foundation
import Testing

@testable import WebPubSub

@Suite("Message codec")
struct CodecTests {
    @Test func encodesUpstreamShapes() {
        #expect(UpstreamMessage.joinGroup(group: "g1", ackID: 1).encoded() == #"{"type":"joinGroup","group":"g1","ackId":1}"#)
        #expect(UpstreamMessage.leaveGroup(group: "g1", ackID: nil).encoded() == #"{"type":"leaveGroup","group":"g1"}"#)
        #expect(UpstreamMessage.sendToGroup(group: "g1", content: .text("hello"), ackID: 3, noEcho: false).encoded()
            == #"{"type":"sendToGroup","group":"g1","ackId":3,"dataType":"text","data":"hello","noEcho":false}"#)
        #expect(UpstreamMessage.sendToGroup(group: "g1", content: .json(#"{"a":1}"#), ackID: nil, noEcho: true).encoded()
            == #"{"type":"sendToGroup","group":"g1","dataType":"json","data":{"a":1},"noEcho":true}"#)
        #expect(UpstreamMessage.sendToGroup(group: "g1", content: .binary(Data([0, 1])), ackID: 4, noEcho: false).encoded()
            == #"{"type":"sendToGroup","group":"g1","ackId":4,"dataType":"binary","data":"AAE=","noEcho":false}"#)
        #expect(UpstreamMessage.event(name: "ev", content: .json(#"{"x":1}"#), ackID: 5).encoded()
            == #"{"type":"event","event":"ev","ackId":5,"dataType":"json","data":{"x":1}}"#)
        #expect(UpstreamMessage.event(name: "ev", content: .protobuf(Data([1, 2, 3])), ackID: nil).encoded()
            == #"{"type":"event","event":"ev","dataType":"protobuf","data":"AQID"}"#)
        #expect(UpstreamMessage.sequenceAck(4).encoded() == #"{"type":"sequenceAck","sequenceId":4}"#)
        #expect(UpstreamMessage.ping.encoded() == #"{"type":"ping"}"#)
        #expect(UpstreamMessage.invoke(invocationID: "1", event: "echo", content: .text("hi")).encoded()
            == #"{"type":"invoke","invocationId":"1","target":"event","event":"echo","dataType":"text","data":"hi"}"#)
        #expect(UpstreamMessage.cancelInvocation(invocationID: "1").encoded() == #"{"type":"cancelInvocation","invocationId":"1"}"#)
    }

    @Test func escapesStrings() throws {
        let nasty = "q\"b\\s/n\nt\tc\u{01}é🎉"
        let text = UpstreamMessage.sendToGroup(group: nasty, content: .text(nasty), ackID: 1, noEcho: false).encoded()
        // Foundation must read back exactly what we wrote.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["group"] as? String == nasty)
        #expect(object["data"] as? String == nasty)
    }

    @Test func decodesDownstreamShapes() {
        #expect(DownstreamMessage.decode(#"{"type":"system","event":"connected","connectionId":"c1","userId":"u1","reconnectionToken":"t"}"#)
            == .connected(connectionID: "c1", userID: "u1", reconnectionToken: "t"))
        #expect(DownstreamMessage.decode(#"{"type":"system","event":"connected","connectionId":"c1","userId":null}"#)
            == .connected(connectionID: "c1", userID: nil, reconnectionToken: nil))
        #expect(DownstreamMessage.decode(#"{"type":"system","event":"disconnected","message":"kicked"}"#) == .disconnected(message: "kicked"))
        #expect(DownstreamMessage.decode(#"{"type":"ack","ackId":1,"success":true}"#) == .ack(ackID: 1, success: true, error: nil))
        #expect(DownstreamMessage.decode(#"{"type":"ack","ackId":2,"success":false,"error":{"name":"Forbidden","message":"no"}}"#)
            == .ack(ackID: 2, success: false, error: ServiceErrorDetail(name: "Forbidden", message: "no")))
        #expect(DownstreamMessage.decode(#"{"sequenceId":1,"type":"message","from":"group","group":"g1","dataType":"text","data":"hello","fromUserId":"user2"}"#)
            == .groupMessage(group: "g1", fromUserID: "user2", content: .text("hello"), sequenceID: 1))
        #expect(DownstreamMessage.decode(#"{"sequenceId":2,"type":"message","from":"server","dataType":"json","data":{"hello": [1, "x", null]}}"#)
            == .serverMessage(content: .json(#"{"hello": [1, "x", null]}"#), sequenceID: 2))
        #expect(DownstreamMessage.decode(#"{"type":"message","from":"server","dataType":"binary","data":"AAE="}"#)
            == .serverMessage(content: .binary(Data([0, 1])), sequenceID: nil))
        #expect(DownstreamMessage.decode(#"{"type":"message","from":"group","group":"g","dataType":"protobuf","data":"AQID"}"#)
            == .groupMessage(group: "g", fromUserID: nil, content: .protobuf(Data([1, 2, 3])), sequenceID: nil))
        // A missing dataType means json.
        #expect(DownstreamMessage.decode(#"{"type":"message","from":"server","data":"s"}"#) == .serverMessage(content: .json(#""s""#), sequenceID: nil))
        #expect(DownstreamMessage.decode(#"{"type":"pong"}"#) == .pong)
        #expect(DownstreamMessage.decode(#"{"type":"invokeResponse","invocationId":"1","success":true,"dataType":"text","data":"pong"}"#)
            == .invokeResponse(invocationID: "1", success: true, content: .text("pong"), error: nil))
        #expect(DownstreamMessage.decode(#"{"type":"invokeResponse","invocationId":"1","success":false,"error":{"name":"BadRequest","message":"Invalid"}}"#)
            == .invokeResponse(invocationID: "1", success: false, content: nil, error: ServiceErrorDetail(name: "BadRequest", message: "Invalid")))
        #expect(DownstreamMessage.decode(#"{"type":"groupStateSnapshot","group":"g","items":[]}"#) == .unknown(type: "groupStateSnapshot"))
        #expect(DownstreamMessage.decode(#"{"type":"system","event":"somethingNew"}"#) == .unknown(type: "system/somethingNew"))
    }

    @Test func decodesEscapesAndUnicode() {
        #expect(DownstreamMessage.decode(#"{"type":"message","from":"group","group":"g\u00e9\ud83c\udf89","dataType":"text","data":"a\"b\\c\/d\n"}"#)
            == .groupMessage(group: "gé🎉", fromUserID: nil, content: .text("a\"b\\c/d\n"), sequenceID: nil))
    }

    @Test(arguments: [
        "", " ", "null", "[]", "\"x\"", "{", "}", "{\"type\"", "{\"type\":}", "{\"type\":\"ack\"",
        "{\"type\":\"ack\",\"ackId\":-1,\"success\":true}", "{\"type\":\"ack\",\"ackId\":1.5,\"success\":true}",
        "{\"type\":\"ack\",\"success\":true}", "{\"type\":\"ack\",\"ackId\":18446744073709551616,\"success\":true}",
        "{\"type\":\"message\",\"from\":\"group\",\"dataType\":\"text\",\"data\":\"x\"}",
        "{\"type\":\"message\",\"from\":\"server\",\"dataType\":\"text\",\"data\":1}",
        "{\"type\":\"message\",\"from\":\"server\",\"dataType\":\"binary\",\"data\":\"***\"}",
        "{\"type\":\"message\",\"from\":\"server\",\"dataType\":\"weird\",\"data\":\"x\"}",
        "{\"type\":\"message\",\"from\":\"nowhere\",\"dataType\":\"text\",\"data\":\"x\"}",
        "{\"type\":\"message\",\"from\":\"server\",\"dataType\":\"text\"}",
        "{\"type\":\"message\",\"sequenceId\":\"7\",\"from\":\"server\",\"dataType\":\"text\",\"data\":\"x\"}",
        "{\"type\":\"system\",\"event\":\"connected\"}",
        "{\"type\":1}", "{\"type\":\"x\"} trailing", "{\"a\":tru}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\q\"}",
        "{\"a\":01}", "{\"a\":1.}", "{\"a\":1e}", "{\"a\":\"tab\there\"}", "{'type':'ack'}",
    ])
    func garbageIsMalformedNeverACrash(_ text: String) {
        switch DownstreamMessage.decode(text) {
        case .malformed, .unknown: break
        case let other: Issue.record("decoded garbage as \(other)")
        }
    }

    @Test func deepNestingIsRejectedWithoutRecursingForever() {
        for text in [String(repeating: "[", count: 100_000), "{\"a\":" + String(repeating: "[", count: 100_000) + "}",
                     "{\"a\":" + String(repeating: "{\"b\":", count: 50_000) + "1" + String(repeating: "}", count: 50_000) + "}"] {
            guard case .malformed = DownstreamMessage.decode(text) else { Issue.record("accepted deep nesting"); continue }
        }
    }

    @Test func malformedMessageKeepsItsSequenceID() {
        #expect(DownstreamMessage.decode(#"{"sequenceId":9,"type":"message","from":"server","dataType":"binary","data":"%%"}"#)
            == .malformed(reason: "binary data is not base64", sequenceID: 9))
    }

    @Test func randomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,\ tfnu0123456789.eE-+"abcdefghtype"#)
        for _ in 0..<2000 {
            let n = Int.random(in: 0..<64, using: &rng)
            let s = String((0..<n).map { _ in alphabet.randomElement(using: &rng)! })
            _ = DownstreamMessage.decode(s)
        }
    }

    @Test func validatesJSONContent() {
        for good in ["{}", "[]", "1", "-0.5e10", "\"s\"", "true", "null", " {\"a\":[1,{\"b\":null}]} "] {
            #expect(JSONScanner.isValidJSON(good), "\(good)")
            #expect(MessageContent.json(good).validate() == nil)
        }
        for bad in ["", "{", "{a:1}", "[1,]", "'x'", "1 2", "nul", "{\"a\":1}}"] {
            #expect(!JSONScanner.isValidJSON(bad), "\(bad)")
            #expect(MessageContent.json(bad).validate()?.code == .invalidContent)
        }
    }

    @Test func jsonContentHelpers() throws {
        struct Point: Codable, Equatable { var x: Int; var y: Int }
        let content = try MessageContent.json(encoding: Point(x: 1, y: 2))
        #expect(content.dataType == .json)
        #expect(try content.decodeJSON(Point.self) == Point(x: 1, y: 2))
        #expect(MessageContent.text("a").text == "a")
        #expect(MessageContent.binary(Data([1])).bytes == Data([1]))
    }
}

@Suite("Sequence tracker")
struct SequenceTrackerTests {
    @Test func dropsDuplicatesAndAcksWhenChanged() {
        var t = SequenceTracker()
        #expect(t.takeAck() == nil)
        #expect(t.receive(1) == .deliver(ackNow: false))
        #expect(t.receive(2) == .deliver(ackNow: false))
        #expect(t.receive(2) == .duplicate)
        #expect(t.receive(1) == .duplicate)
        #expect(t.takeAck() == 2)
        #expect(t.takeAck() == nil)
        // A duplicate alone still asks for an ack (so the service stops resending).
        #expect(t.receive(2) == .duplicate)
        #expect(t.takeAck() == 2)
    }

    @Test func quickAckPastThreeHundred() {
        var t = SequenceTracker()
        for i in 1...300 { #expect(t.receive(UInt64(i)) == .deliver(ackNow: false)) }
        #expect(t.receive(301) == .deliver(ackNow: true))
        #expect(t.takeAck() == 301)
        #expect(t.receive(601) == .deliver(ackNow: false))
        #expect(t.receive(602) == .deliver(ackNow: true))
    }

    @Test func anIDFarAheadIsAViolationAndChangesNothing() {
        var t = SequenceTracker()
        #expect(t.receive(1) == .deliver(ackNow: false))
        _ = t.takeAck()
        #expect(t.receive(UInt64.max) == .violation)
        #expect(t.receive(1 + SequenceTracker.maximumGap + 1) == .violation)
        #expect(t.takeAck() == nil)  // a violation is never acked
        #expect(t.receive(2) == .deliver(ackNow: false))  // later messages still arrive
        #expect(t.receive(2 + SequenceTracker.maximumGap) == .deliver(ackNow: true))
        t.reset()
        #expect(t.lastSequenceID == 0)
    }
}

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test func pythonDefaults() {
        let p = RetryPolicy()
        #expect(p.maxRetries == 3)
        #expect(p.delay(forRetry: 1) == 0.8)
        #expect(p.delay(forRetry: 2) == 1.6)
        #expect(p.delay(forRetry: 3) == 3.2)
        #expect(p.delay(forRetry: 4) == nil)
        #expect(p.delay(forRetry: 0) == nil)
    }

    @Test func capAndFixedAndUnlimited() {
        let p = RetryPolicy(maxRetries: .max)
        #expect(p.delay(forRetry: 8) == 102.4)
        #expect(p.delay(forRetry: 9) == 120)
        #expect(p.delay(forRetry: 1000) == 120)
        #expect(p.delay(forRetry: .max) == 120)
        let f = RetryPolicy(maxRetries: 2, delay: 0.5, mode: .fixed)
        #expect(f.delay(forRetry: 1) == 0.5)
        #expect(f.delay(forRetry: 2) == 0.5)
        #expect(f.delay(forRetry: 3) == nil)
        // A zero delay is a delay, not "stop" (Python bug P9).
        #expect(RetryPolicy(delay: 0).delay(forRetry: 1) == 0)
        #expect(RetryPolicy.none.delay(forRetry: 1) == nil)
    }

    @Test(arguments: [0.0, 0.25, 0.5, 0.999])
    func jitterStaysWithinItsShare(random: Double) throws {
        let p = RetryPolicy.reconnectDefault
        for attempt in 1...12 {
            let nominal = try #require(p.delay(forRetry: attempt))
            let d = try #require(p.delay(forRetry: attempt, random: random))
            #expect(d <= nominal && d >= nominal * (1 - p.jitter))
        }
        #expect(p.delay(forRetry: 100, random: random)! <= 30)
    }

    @Test func jitterSourceIsDeterministicAndInRange() {
        var a = JitterSource(seed: 42), b = JitterSource(seed: 42)
        for _ in 0..<1000 {
            let x = a.next()
            #expect(x == b.next() && x >= 0 && x < 1)
        }
    }
}

@Suite("Options and errors")
struct OptionsAndErrorsTests {
    @Test func defaults() {
        let o = WebPubSubClientOptions()
        #expect(o.protocolType == .jsonReliable)
        #expect(o.protocolType.subprotocol == "json.reliable.webpubsub.azure.v1")
        #expect(WebPubSubProtocol.json.subprotocol == "json.webpubsub.azure.v1")
        #expect(o.autoReconnect && o.autoRejoinGroups)
        #expect(o.reconnectRetryPolicy == .reconnectDefault && o.messageRetryPolicy == RetryPolicy())
        #expect(o.reconnectRetryPolicy.isUnlimited && o.reconnectRetryPolicy.maxDelay == 30)
        #expect(o.maximumOutgoingMessageSize == 1 << 20 && o.backoffResetInterval == 30)
        #expect(o.ackTimeout == 30 && o.startTimeout == 30)
        #expect(o.keepAliveInterval == 20 && o.keepAliveTimeout == 120)
        #expect(o.recoveryTimeout == 30 && o.recoveryRetryInterval == 1 && o.sequenceAckInterval == 1)
        #expect(!o.logsMessagePayloads)
        #expect(o.maximumMessageSize == 1 << 20)
    }

    @Test func transientClassification() {
        #expect(WebPubSubError(.ackTimeout, "").isTransient)
        #expect(WebPubSubError(.connectionLost, "").isTransient)
        #expect(WebPubSubError(.serviceError, "", errorName: "InternalServerError").isTransient)
        #expect(!WebPubSubError(.serviceError, "", errorName: "Forbidden").isTransient)
        #expect(!WebPubSubError(.serviceError, "", errorName: "SomethingNew").isTransient)
        #expect(!WebPubSubError(.invalidContent, "").isTransient)
        let e = WebPubSubError(.serviceError, "refused", ackID: 7, errorName: "Forbidden", errorMessage: "no")
        #expect(e.description.contains("ackId 7") && e.description.contains("Forbidden"))
    }

    @Test func urlsAreRedactedAndRecoveryURLIsEncoded() throws {
        let url = URL(string: "ws://127.0.0.1:8080/client/hubs/h?access_token=SECRET.abc")!
        #expect(ProtocolRules.redacted(url) == "ws://127.0.0.1:8080/client/hubs/h?<redacted>")
        let r = try #require(ProtocolRules.recoveryURL(from: url, connectionID: "c/1", reconnectionToken: "a+b=c"))
        #expect(r.absoluteString == "ws://127.0.0.1:8080/client/hubs/h?access_token=SECRET.abc&awps_connection_id=c%2F1&awps_reconnection_token=a%2Bb%3Dc")
        // Recovering twice replaces, not repeats, the parameters.
        let r2 = try #require(ProtocolRules.recoveryURL(from: r, connectionID: "c2", reconnectionToken: "t2"))
        #expect(r2.absoluteString == "ws://127.0.0.1:8080/client/hubs/h?access_token=SECRET.abc&awps_connection_id=c2&awps_reconnection_token=t2")
    }
}
