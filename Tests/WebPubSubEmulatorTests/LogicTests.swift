import Foundation
import NIOCore
import Testing

@testable import WebPubSubEmulator

/// Pure logic: tokens, permissions, ack memory, reliable buffer, message parsing/encoding, filters.
@Suite struct TokenTests {
    let codec = AccessTokenCodec(accessKey: WebPubSubEmulator.defaultAccessKey)
    let now = Int(Date().timeIntervalSince1970)

    @Test func signAndVerifyRoundTrip() throws {
        let claims = AccessTokenClaims(audience: "http://localhost:8080/client/hubs/Chat", expires: now + 60, issuedAt: now,
                                       userID: "u1", roles: ["webpubsub.joinLeaveGroup"], groups: ["g1"])
        let token = codec.sign(claims)
        let back = try codec.verify(token) { Audience.matchesClient(aud: $0, host: "localhost:8080", hub: "chat") }
        #expect(back == claims)
    }

    @Test func refusesBadSignatureExpiryAndAudience() {
        let good = codec.sign(AccessTokenClaims(audience: "http://h:1/client/hubs/a", expires: now + 60))
        let other = AccessTokenCodec(accessKey: String(repeating: "Z", count: 44))
        #expect(throws: AccessTokenError.badSignature) {
            try other.verify(good) { _ in true }
        }
        let expired = codec.sign(AccessTokenClaims(audience: "http://h:1/client/hubs/a", expires: now - 600))
        #expect(throws: AccessTokenError.expired) { try codec.verify(expired) { _ in true } }
        #expect(throws: AccessTokenError.audienceMismatch) {
            try codec.verify(good) { Audience.matchesClient(aud: $0, host: "h:1", hub: "b") }
        }
        #expect(throws: AccessTokenError.malformed) { try codec.verify("a.b") { _ in true } }
        // Within the 5-minute clock skew an expired token still passes.
        let skewed = codec.sign(AccessTokenClaims(audience: "x", expires: now - 60))
        #expect((try? codec.verify(skewed) { _ in true }) != nil)
    }

    @Test func audienceRules() {
        #expect(Audience.matchesClient(aud: "http://LOCALHOST:8080/client/hubs/Chat", host: "127.0.0.1:8080", hub: "chat"))
        #expect(Audience.matchesClient(aud: "wss://h/client/hubs/chat", host: "h", hub: "Chat"))
        #expect(!Audience.matchesClient(aud: "http://h:1/client/hubs/chat", host: "h:2", hub: "chat"))
        #expect(!Audience.matchesClient(aud: "ftp://h/client/hubs/chat", host: "h", hub: "chat"))
        let uri = "/api/hubs/chat/groups/g1/:send?excluded=c1&api-version=2024-12-01"
        #expect(Audience.matchesREST(aud: "http://h:1" + uri, host: "h:1", uri: uri))
        #expect(Audience.matchesREST(aud: "http://h:1/api/hubs/chat/groups/g1/:send", host: "h:1", uri: uri))
        #expect(Audience.matchesREST(aud: "http://h:1/api/hubs/chat/groups/g1/%3Asend", host: "h:1", uri: uri))
        #expect(Audience.matchesREST(aud: "http://h:1/api/", host: "h:1", uri: uri))
        #expect(!Audience.matchesREST(aud: "http://h:1/api/hubs/other/:send", host: "h:1", uri: uri))
    }
}

@Suite struct PermissionTests {
    @Test func rolesGrantWhatTheySay() {
        let p = PermissionSet(roles: ["webpubsub.joinLeaveGroup.g1", "webpubsub.sendToGroup", "nonsense"])
        #expect(p.allows(.joinLeaveGroup, group: "g1"))
        #expect(!p.allows(.joinLeaveGroup, group: "g2"))
        #expect(p.allows(.sendToGroup, group: "anything"))
        #expect(!PermissionSet(roles: []).allows(.sendToGroup, group: "g"))
    }

    @Test func wildcardRoles() {
        let p = PermissionSet(roles: ["webpubsub.joinLeaveGroups.room.*", "webpubsub.sendToGroups.a.**"])
        #expect(p.allows(.joinLeaveGroup, group: "room.1"))
        #expect(!p.allows(.joinLeaveGroup, group: "room.1.x"))
        #expect(p.allows(.sendToGroup, group: "a.b.c"))
        #expect(GroupPattern.matches(pattern: "g?", name: "g1"))
        #expect(!GroupPattern.matches(pattern: "g?", name: "g."))
        #expect(GroupPattern.matches(pattern: #"lit\*"#, name: "lit*"))
        #expect(!GroupPattern.matches(pattern: #"lit\*"#, name: "litx"))
    }

    @Test func grantAndRevokeAtRunTime() {
        var p = PermissionSet(roles: ["webpubsub.joinLeaveGroup"])
        p.revoke(.joinLeaveGroup, group: "g")  // revoking one group wins over the role for all groups
        #expect(!p.allows(.joinLeaveGroup, group: "g"))
        #expect(p.allows(.joinLeaveGroup, group: "h"))
        #expect(!p.allowsAll(.joinLeaveGroup))
        p.grant(.joinLeaveGroup, group: "g")
        #expect(p.allows(.joinLeaveGroup, group: "g"))
        p.revoke(.joinLeaveGroup, group: nil)
        #expect(!p.allows(.joinLeaveGroup, group: "h"))
        p.grant(.sendToGroup, group: nil)
        #expect(p.allowsAll(.sendToGroup) && p.allows(.sendToGroup, group: "z"))
    }
}

@Suite struct AckAndReliableTests {
    @Test func ackMemoryKeepsTheMostRecent() {
        var m = AckMemory(capacity: 3)
        for id in [1, 2, 3, 2, 4] as [UInt64] { m.record(id) }
        #expect(!m.contains(1))
        #expect(m.contains(2) && m.contains(3) && m.contains(4))
        #expect(m.count == 3)
        var big = AckMemory()
        for id in 1...1500 as ClosedRange<UInt64> { big.record(id) }
        #expect(big.count == 1000 && !big.contains(500) && big.contains(501) && big.contains(1500))
    }

    @Test func sequenceIDsAndCumulativeAcks() {
        var b = ReliableBuffer<String>(limits: .init(maxMessages: 5, maxBytes: 100))
        for i in 1...4 { #expect(b.append(size: 10) { "m\($0)" }?.0 == UInt64(i)) }
        b.acknowledge(0)
        #expect(b.count == 4)
        b.acknowledge(2)
        #expect(b.pending.map(\.payload) == ["m3", "m4"] && b.bytes == 20)
        b.acknowledge(1)  // older: ignored
        #expect(b.count == 2)
        b.acknowledge(99)  // beyond the last: clamps
        #expect(b.count == 0 && b.acknowledged == 4)
        #expect(b.append(size: 1) { "m\($0)" }?.0 == 5)
    }

    @Test func overflowByCountAndBytes() {
        var b = ReliableBuffer<Int>(limits: .init(maxMessages: 2, maxBytes: 1000))
        #expect(b.append(size: 1) { Int($0) } != nil)
        #expect(b.append(size: 1) { Int($0) } != nil)
        #expect(b.append(size: 1) { Int($0) } == nil)
        var c = ReliableBuffer<Int>(limits: .init(maxMessages: 100, maxBytes: 10))
        #expect(c.append(size: 6) { Int($0) } != nil)
        #expect(c.append(size: 6) { Int($0) } == nil)
        #expect(c.lastSequenceID == 1)
        // Defaults are the service's.
        #expect(ReliableBuffer<Int>.Limits() == .init(maxMessages: 1000, maxBytes: 16 * 1024 * 1024))
    }
}

@Suite struct MessageTests {
    func parse(_ s: String) throws -> ClientMessage { try ClientMessage.parse(Array(s.utf8)) }

    @Test func parsesEveryRequest() throws {
        #expect(try parse(#"{"type":"joinGroup","group":"g","ackId":1}"#) == .joinGroup(group: "g", ackID: 1))
        #expect(try parse(#"{"type":"leaveGroup","group":"g"}"#) == .leaveGroup(group: "g", ackID: nil))
        #expect(try parse(#"{"type":"sendToGroup","group":"g","ackId":3,"dataType":"json","data":{"a":[1,2.5e3]},"noEcho":true}"#)
            == .sendToGroup(group: "g", ackID: 3, noEcho: true, data: MessageData(dataType: .json, rawJSON: Array(#"{"a":[1,2.5e3]}"#.utf8))))
        #expect(try parse(#"{"type":"event","event":"ev","dataType":"binary","data":"AAE="}"#)
            == .event(name: "ev", ackID: nil, data: MessageData(dataType: .binary, rawJSON: Array(#""AAE=""#.utf8))))
        #expect(try parse(#"{"type":"event","event":"ev","dataType":"protobuf","data":"AAE="}"#).ackID == nil)
        #expect(try parse(#"{"type":"sequenceAck","sequenceId":4}"#) == .sequenceAck(4))
        #expect(try parse(#"{"type":"sequenceAck","sequenceId":"5"}"#) == .sequenceAck(5))
        #expect(try parse(#" {"type":"ping"} "#) == .ping)
        #expect(try parse(#"{"type":"invoke","invocationId":"1","target":"event","event":"e","dataType":"text","data":"x"}"#)
            == .invoke(invocationID: "1", event: "e", data: .text("x")))
        #expect(try parse(#"{"type":"cancelInvocation","invocationId":"1"}"#) == .cancelInvocation(invocationID: "1"))
        // dataType defaults to json.
        if case .sendToGroup(_, _, _, let d) = try parse(#"{"type":"sendToGroup","group":"g","data":"s"}"#) {
            #expect(d.dataType == .json)
        } else { Issue.record("not a sendToGroup") }
    }

    @Test(arguments: [
        "{", "[]", #"{"type":"nope"}"#, #"{"group":"g"}"#, #"{"type":"joinGroup"}"#, #"{"type":"joinGroup","group":""}"#,
        #"{"type":"joinGroup","group":"g","ackId":-1}"#, #"{"type":"joinGroup","group":"g","ackId":1.5}"#,
        #"{"type":"sendToGroup","group":"g","dataType":"text","data":1}"#,
        #"{"type":"sendToGroup","group":"g","dataType":"binary","data":"@@"}"#,
        #"{"type":"sendToGroup","group":"g","dataType":"json","data":null}"#,
        #"{"type":"sendToGroup","group":"g","dataType":"xml","data":"a"}"#,
        #"{"type":"sendToGroup","group":"g","data":"a","ttlSeconds":301}"#,
        #"{"type":"event","event":"1x","data":1}"#, #"{"type":"event","data":1}"#,
        #"{"type":"joinGroup","group":"g"} x"#, #"{"type":"invoke","event":"e"}"#,
        #"{"type":"invoke","invocationId":"1","target":"group","event":"e"}"#, "{\"type\":\"ping\",\"x\":\"\u{01}\"}",
    ])
    func refusesMalformed(_ text: String) {
        #expect(throws: ClientMessage.ParseError.self) { try ClientMessage.parse(Array(text.utf8)) }
    }

    @Test func encodesOnceAndSplicesSequenceIDs() throws {
        let body = Downstream.groupMessage(group: "g\"1", data: .text("hé\n"), fromUserID: nil)
        let text = String(decoding: body, as: UTF8.self)
        #expect(text == #"{"type":"message","from":"group","group":"g\"1","dataType":"text","data":"hé\n","fromUserId":null}"#)
        let spliced = String(decoding: Downstream.withSequenceID(7, body), as: UTF8.self)
        #expect(spliced.hasPrefix(#"{"sequenceId":7,"type":"message""#))
        let object = try JSONSerialization.jsonObject(with: Data(spliced.utf8)) as? [String: Any]
        #expect(object?["sequenceId"] as? Int == 7 && object?["data"] as? String == "hé\n")
        #expect(String(decoding: Downstream.ack(3, error: ("Forbidden", "no")), as: UTF8.self)
            == #"{"type":"ack","ackId":3,"success":false,"error":{"name":"Forbidden","message":"no"}}"#)
        #expect(String(decoding: Downstream.connected(connectionID: "c", userID: nil, reconnectionToken: "t"), as: UTF8.self)
            == #"{"type":"system","event":"connected","userId":null,"connectionId":"c","reconnectionToken":"t"}"#)
    }

    @Test func payloadConversions() {
        #expect(MessageData.fromHTTP(body: Array("hi".utf8), contentType: "text/plain; charset=utf-8", defaultType: .binary) == .text("hi"))
        #expect(MessageData.fromHTTP(body: Array("{bad".utf8), contentType: "application/json", defaultType: .binary) == nil)
        #expect(MessageData.fromHTTP(body: [0, 255], contentType: nil, defaultType: .binary)?.decodedBytes == [0, 255])
        #expect(MessageData.text("a\"b").decodedBytes == Array("a\"b".utf8))
        #expect(MessageData.binary([1, 2]).rawFrame.isText == false)
        #expect(JSONScanner.decodeString(Array(#""\ud83d\ude00\u00e9""#.utf8), 0..<20) == "😀é")
    }
}

@Suite struct FilterTests {
    let alice = ODataFilter.Subject(connectionID: "c1", userID: "alice", groups: ["g1", "room.a"])
    let anon = ODataFilter.Subject(connectionID: "c2", userID: nil, groups: [])

    @Test(arguments: [
        ("userId eq 'alice'", true, false), ("userId ne 'alice'", false, true), ("'g1' in groups", true, false),
        ("userId in ('bob', 'alice')", true, false), ("userId eq null", false, true),
        ("not ('g1' in groups) and connectionId ne 'c9'", false, true), ("userId eq 'x' or connectionId eq 'c2'", false, true),
        ("startswith(userId, 'al')", true, false), ("tolower('ALICE') eq userId", true, false), ("length(groups) gt 1", true, false),
        ("contains(connectionId, '2')", false, true), ("userId eq 'it''s'", false, false),
    ])
    func evaluates(_ text: String, _ forAlice: Bool, _ forAnon: Bool) throws {
        let f = try ODataFilter(text)
        #expect(f.matches(alice) == forAlice)
        #expect(f.matches(anon) == forAnon)
    }

    @Test(arguments: ["userId eq", "bogus eq 'a'", "'a' in (", "userId eq 'open", "userId $ 'a'", "(userId eq 'a'"])
    func rejectsBadSyntax(_ text: String) {
        #expect(throws: ODataFilter.SyntaxError.self) { try ODataFilter(text) }
    }
}

@Suite struct RoutingTests {
    @Test func hubAndEventNames() {
        #expect(HubName.isValid("Chat_1.a`[x],y"))
        #expect(!HubName.isValid("1chat") && !HubName.isValid("") && !HubName.isValid("a/b"))
        #expect(!HubName.isValid("a" + String(repeating: "b", count: 128)))
        #expect(EventName.isValid("Echo.v1-x_y") && !EventName.isValid("9x") && !EventName.isValid("a b"))
    }

    @Test func requestTargets() {
        let t = RequestTarget("/api/hubs/chat/groups/a%2Fb/:send?excluded=c1&excluded=c2&filter=userId%20eq%20%27x%27&API-VERSION=1")
        #expect(t.segments == ["api", "hubs", "chat", "groups", "a/b", ":send"])
        #expect(t.all("excluded") == ["c1", "c2"])
        #expect(t.first("filter") == "userId eq 'x'")
        #expect(t.first("api-version") == "1")
        if case .some(.some(let hub)) = WebPubSubEmulator.clientHub(RequestTarget("/client/hubs/Chat?access_token=x")) {
            #expect(hub == "Chat")
        } else { Issue.record("client path not recognised") }
        if case .some(.some(let hub)) = WebPubSubEmulator.clientHub(RequestTarget("/client/?hub=q")) {
            #expect(hub == "q")
        } else { Issue.record("query hub not recognised") }
        if case .some = WebPubSubEmulator.clientHub(RequestTarget("/api/hubs/x")) { Issue.record("REST path taken as client") }
    }

    @Test func upstreamURLs() {
        #expect(Upstream.url("http://h:1/e/{hub}/{event}", hub: "chat", event: "connect") == "http://h:1/e/chat/connect")
        let p = MiniHTTPClient.parse("http://127.0.0.1:8081/x?y=1")
        #expect(p?.host == "127.0.0.1" && p?.port == 8081 && p?.target == "/x?y=1")
        #expect(MiniHTTPClient.parse("http://[::1]:9/")?.host == "::1")
        #expect(MiniHTTPClient.parse("http://h")?.port == 80 && MiniHTTPClient.parse("http://h")?.target == "/")
        #expect(MiniHTTPClient.parse("https://h/") == nil)
        #expect(WebPubSubEmulator.EventHandler(hub: "Chat", urlTemplate: "http://x").handles(hub: "chat"))
        #expect(WebPubSubEmulator.EventHandler(hub: "*", urlTemplate: "http://x", userEventPattern: "a, b").handles(userEvent: "B"))
        #expect(!WebPubSubEmulator.EventHandler(hub: "*", urlTemplate: "http://x", userEventPattern: "a").handles(userEvent: "c"))
        #expect(ClientProtocolKind.negotiate(["mqtt", "json.reliable.webpubsub.azure.v1", "json.webpubsub.azure.v1"]) == .reliable)
        #expect(ClientProtocolKind.negotiate(["protobuf.webpubsub.azure.v1"]) == .raw)
    }
}

/// Issue 10: the pure rules behind the hostile-input fixes.
@Suite struct HostileInputLogicTests {
    let alice = ODataFilter.Subject(connectionID: "c1", userID: "alice", groups: ["g1"])

    @Test("OData: no Double→Int trap, (x) is x, and length, token and depth limits are syntax errors")
    func odataLimits() throws {
        #expect(try ODataFilter("substring('',9999999999999999999) eq ''").matches(alice))
        #expect(try ODataFilter("substring('abc',-99999999999999999999) eq 'abc'").matches(alice))
        #expect(try ODataFilter("(true)").matches(alice))
        #expect(try ODataFilter("userId eq ('alice')").matches(alice))
        #expect(try ODataFilter("userId in ('alice')").matches(alice))
        #expect(try ODataFilter(String(repeating: "(", count: 31) + "true" + String(repeating: ")", count: 31)).matches(alice))
        for text in [String(repeating: "(", count: 40) + "true" + String(repeating: ")", count: 40),
                     String(repeating: "not ", count: 40) + "true",
                     Array(repeating: "true", count: 600).joined(separator: " and "),
                     "'" + String(repeating: "x", count: 9000) + "' eq userId"] {
            #expect(throws: ODataFilter.SyntaxError.self) { try ODataFilter(text) }
        }
    }

    @Test("OData indexof counts Characters and never traps (the fuzzer's input that trapped in Foundation's range(of:))")
    func odataIndexOf() throws {
        #expect(try ODataFilter("indexof('aé👍🏽b', 'b') eq 3").matches(alice))
        #expect(try ODataFilter("indexof('abc', 'abcd') eq -1").matches(alice))
        #expect(try ODataFilter("indexof('abc', '') eq 0").matches(alice))
        let seed = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fuzz/Corpus/odata/indexof-utf16-trap").standardized
        let text = String(decoding: try Data(contentsOf: seed), as: UTF8.self)
        _ = try ODataFilter(text).matches(alice)
    }

    @Test("tokens: exp at Int.max or fractional is judged; nbf and iat beyond the skew are notYetValid")
    func tokenDates() throws {
        let codec = AccessTokenCodec(accessKey: WebPubSubEmulator.defaultAccessKey)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func verify(_ claims: [String: Any]) throws(AccessTokenError) {
            _ = try codec.verify(codec.sign(object: claims.merging(["aud": "a"]) { a, _ in a }), now: now) { _ in true }
        }
        try verify(["exp": Int.max])
        try verify(["exp": 1_800_000_000.5])
        try verify(["exp": "1800000100", "nbf": 1_800_000_200, "iat": 1_800_000_299])
        #expect(throws: AccessTokenError.expired) { try verify(["exp": -Double.greatestFiniteMagnitude]) }
        #expect(throws: AccessTokenError.expired) { try verify(["exp": 1_799_999_000]) }
        #expect(throws: AccessTokenError.notYetValid) { try verify(["exp": Int.max, "nbf": 1_800_000_301]) }
        #expect(throws: AccessTokenError.notYetValid) { try verify(["exp": Int.max, "iat": Int.max]) }
        #expect(throws: AccessTokenError.malformed) { try verify(["exp": Int.max, "nbf": "tomorrow"]) }
        #expect(AccessTokenCodec.number(1e300 as Double) == Int.max)
    }

    @Test("JSON scanner: I-JSON — no invalid UTF-8, no unpaired surrogate escape, no number beyond a double")
    func iJSON() {
        #expect(JSONScanner.isValid(Array(#"["\ud83d\ude00","é",1e308,12345678901234567890]"#.utf8)))
        for bad: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], Array(#""\udde0""#.utf8),
                             Array(#""\ud83d x""#.utf8), Array("1e400".utf8), Array("-1e999".utf8)] {
            #expect(!JSONScanner.isValid(bad), "\(bad)")
        }
    }

    @Test("roles: more than 5 '*' or 10 patterns or 1,000 literals are refused; within them, matching works")
    func roleLimits() {
        #expect(PermissionSet.violation(roles: ["webpubsub.joinLeaveGroups.a*b*c*d*e*"]) == nil)
        #expect(PermissionSet.violation(roles: ["webpubsub.joinLeaveGroups.******"]) != nil)
        #expect(PermissionSet.violation(roles: (0...10).map { "webpubsub.sendToGroups.p\($0)*" }) != nil)
        #expect(PermissionSet.violation(roles: (0...1000).map { "webpubsub.sendToGroup.g\($0)" }) != nil)
        let p = PermissionSet(roles: ["webpubsub.joinLeaveGroups." + String(repeating: "x", count: 2000), "webpubsub.joinLeaveGroup.ok"])
        #expect(p.allows(.joinLeaveGroup, group: "ok"))
        #expect(!p.allows(.joinLeaveGroup, group: String(repeating: "x", count: 2000)))
    }
}
