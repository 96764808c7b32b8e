import Foundation
import Testing
@testable import WebSocket

/// A deterministic generator (SplitMix64) so random tests are reproducible.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// An unmasked server frame.
func serverFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = false) -> [UInt8] {
    var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
    let n = payload.count
    let m: UInt8 = masked ? 0x80 : 0
    if n < 126 {
        out.append(m | UInt8(n))
    } else if n <= 0xFFFF {
        out += [m | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
    } else {
        out.append(m | 127)
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((UInt64(n) >> UInt64(s)) & 0xFF)) }
    }
    if masked { out += [0, 0, 0, 0] }
    return out + payload
}

func parseAll(_ chunks: [[UInt8]], max: Int = 1 << 20) -> ([WebSocketFrame], FrameError?) {
    var p = FrameParser(maximumFrameSize: max)
    var frames: [WebSocketFrame] = []
    for c in chunks {
        p.append(c)
        do {
            while let f = try p.next() { frames.append(f) }
        } catch {
            return (frames, error)
        }
    }
    return (frames, nil)
}

@Suite("Frame parser and encoder")
struct FrameTests {
    static func stream() -> [UInt8] {
        var g = SeededRandom(seed: 42)
        var s: [UInt8] = []
        for size in [0, 1, 125, 126, 127, 1000, 65535, 65536, 100_000] {
            s += serverFrame(2, (0..<size).map { _ in UInt8.random(in: 0...255, using: &g) })
            s += serverFrame(9, Array("ping".utf8))
        }
        s += serverFrame(1, Array("frag".utf8), fin: false) + serverFrame(10, []) + serverFrame(0, [1, 2])
        s += serverFrame(8, [3, 232] + Array("bye".utf8))
        return s
    }

    @Test func byteByByteEqualsWholeBuffer() {
        let s = Self.stream()
        let (whole, e1) = parseAll([s])
        #expect(e1 == nil)
        #expect(whole.count == 22)
        let (bytewise, e2) = parseAll(s.map { [$0] })
        #expect(e2 == nil)
        #expect(bytewise == whole)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func randomSplitsEqualWholeBuffer(seed: UInt64) {
        let s = Self.stream()
        let (whole, _) = parseAll([s])
        var g = SeededRandom(seed: seed)
        var chunks: [[UInt8]] = []
        var i = 0
        while i < s.count {
            let n = Int.random(in: 1...(seed % 2 == 0 ? 7 : 70_000), using: &g)
            chunks.append(Array(s[i..<min(i + n, s.count)]))
            i += n
        }
        let (split, e) = parseAll(chunks)
        #expect(e == nil)
        #expect(split == whole)
    }

    @Test("framing violations are typed errors with the right close code")
    func violations() {
        let cases: [([UInt8], WebSocketCloseCode)] = [
            (serverFrame(1, [], rsv: 1), .protocolError),
            (serverFrame(1, [], rsv: 4), .protocolError),
            (serverFrame(3, []), .protocolError),
            (serverFrame(11, []), .protocolError),
            (serverFrame(9, [], fin: false), .protocolError),
            (serverFrame(9, [UInt8](repeating: 0, count: 126)), .protocolError),
            (serverFrame(1, [1], masked: true), .protocolError),
            ([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], .protocolError),
            (serverFrame(2, [UInt8](repeating: 0, count: 2000)), .messageTooBig),
        ]
        for (bytes, code) in cases {
            let (_, e) = parseAll([bytes], max: 1000)
            #expect(e?.closeCode == code, "\(bytes.prefix(4))")
            // and byte by byte
            let (_, e2) = parseAll(bytes.map { [$0] }, max: 1000)
            #expect(e2?.closeCode == code)
        }
    }

    @Test("an oversized frame fails on its header, before the payload arrives")
    func oversizeFailsEarly() {
        let header = Array(serverFrame(2, [UInt8](repeating: 0, count: 70_000)).prefix(10))
        let (_, e) = parseAll([header], max: 65_536)
        #expect(e?.closeCode == .messageTooBig)
    }

    @Test("encoder masks every frame; unmasking restores the payload", arguments: [0, 1, 3, 8, 125, 126, 65535, 65536, 70001])
    func masking(size: Int) {
        var g = SeededRandom(seed: UInt64(size))
        let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &g) }
        let key: UInt32 = 0xA1B2_C3D4
        var out: [UInt8] = []
        FrameEncoder.encode(opcode: .binary, fin: true, payload: payload, maskKey: key, into: &out)
        #expect(out[0] == 0x82)
        #expect(out[1] & 0x80 != 0)
        var len = Int(out[1] & 0x7F)
        var off = 2
        if len == 126 {
            len = Int(out[2]) << 8 | Int(out[3])
            off = 4
        } else if len == 127 {
            len = 0
            for i in 2..<10 { len = len << 8 | Int(out[i]) }
            off = 10
        }
        #expect(len == size)
        let k = Array(out[off..<off + 4])
        let masked = Array(out[(off + 4)...])
        let unmasked = masked.enumerated().map { $0.element ^ k[$0.offset % 4] }
        #expect(unmasked == payload)
        if size >= 8 { #expect(masked != payload) }
    }

    @Test("word-sized masking equals the byte-wise definition at every length and alignment")
    func maskMatchesNaive() {
        var g = SeededRandom(seed: 7)
        for n in 0..<40 {
            for shift in 0..<3 {
                var buf = (0..<(n + shift)).map { _ in UInt8.random(in: 0...255, using: &g) }
                let original = buf
                let key: (UInt8, UInt8, UInt8, UInt8) = (1, 0x80, 0xFF, 0x55)
                let kb = [key.0, key.1, key.2, key.3]
                buf.withUnsafeMutableBytes {
                    FrameEncoder.applyMask(UnsafeMutableRawBufferPointer(rebasing: $0[shift...]), key: key)
                }
                let expected = original.prefix(shift) + original[shift...].enumerated().map { $0.element ^ kb[$0.offset % 4] }
                #expect(buf == Array(expected))
            }
        }
    }

    @Test("close payloads: code big-endian; long reasons cut at a character boundary")
    func closePayload() {
        #expect(FrameEncoder.closePayload(code: .normalClosure, reason: "ok") == [3, 232, 111, 107])
        #expect(FrameEncoder.closePayload(code: nil, reason: "ignored") == [])
        let p = FrameEncoder.closePayload(code: .goingAway, reason: String(repeating: "é", count: 100))
        #expect(p.count <= 125)
        #expect(UTF8Validator.isValid(p[2...]))
    }
}

@Suite("State machine")
struct StateMachineTests {
    func frame(_ op: WebSocketOpcode, _ p: [UInt8], fin: Bool = true) -> WebSocketFrame {
        WebSocketFrame(fin: fin, opcode: op, payload: p)
    }

    @Test func fragmentationWithInterleavedControlFrames() {
        var m = WebSocketStateMachine(maximumMessageSize: 100)
        #expect(m.receive(frame(.text, Array("Hel".utf8), fin: false)) == .none)
        #expect(m.receive(frame(.ping, [1])) == .sendPong([1]))
        #expect(m.receive(frame(.pong, [2])) == .pongReceived([2]))
        #expect(m.receive(frame(.continuation, Array("lo".utf8))) == .deliver(.text("Hello")))
        #expect(m.receive(frame(.binary, [1], fin: false)) == .none)
        #expect(m.receive(frame(.continuation, [2], fin: false)) == .none)
        #expect(m.receive(frame(.continuation, [3])) == .deliver(.binary([1, 2, 3])))
    }

    @Test func fragmentRuleViolations() {
        var m = WebSocketStateMachine(maximumMessageSize: 100)
        guard case .fail(.protocolError, _) = m.receive(frame(.continuation, [1])) else {
            Issue.record("continuation without start")
            return
        }
        var m2 = WebSocketStateMachine(maximumMessageSize: 100)
        _ = m2.receive(frame(.text, [65], fin: false))
        guard case .fail(.protocolError, _) = m2.receive(frame(.text, [65])) else {
            Issue.record("new message inside a fragmented one")
            return
        }
        // After failing, nothing else is acted on.
        #expect(m2.receive(frame(.ping, [])) == .none)
        #expect(m2.state == .closeSent)
    }

    @Test func messageTooBig() {
        var m = WebSocketStateMachine(maximumMessageSize: 4)
        _ = m.receive(frame(.binary, [1, 2, 3], fin: false))
        guard case .fail(.messageTooBig, let e) = m.receive(frame(.continuation, [4, 5])) else {
            Issue.record("expected 1009")
            return
        }
        #expect(e.code == .messageTooBig)
    }

    @Test("UTF-8 fails fast at the offending fragment, and on a message ending mid-sequence")
    func utf8FailFast() {
        var m = WebSocketStateMachine(maximumMessageSize: 100)
        #expect(m.receive(frame(.text, [0xCE], fin: false)) == .none)  // incomplete, still fine
        guard case .fail(.invalidFramePayloadData, _) = m.receive(frame(.continuation, [0x41], fin: false)) else {
            Issue.record("expected 1007 at the second fragment")
            return
        }
        var m2 = WebSocketStateMachine(maximumMessageSize: 100)
        _ = m2.receive(frame(.text, [0x41, 0xE2, 0x82], fin: false))
        guard case .fail(.invalidFramePayloadData, _) = m2.receive(frame(.continuation, [])) else {
            Issue.record("expected 1007 at the end")
            return
        }
    }

    @Test("fail fast inside one frame: invalid UTF-8 is caught from the partial payload")
    func utf8FailFastInsideAFrame() {
        let payload: [UInt8] = Array("κόσμε".utf8) + [0xED, 0xA0, 0x80] + Array(repeating: 0x41, count: 1000)
        let bytes = serverFrame(1, payload)
        var p = FrameParser(maximumFrameSize: 1 << 20)
        var m = WebSocketStateMachine(maximumMessageSize: 1 << 20)
        var failedAt: Int?
        for (i, b) in bytes.enumerated() {
            p.append([b])
            #expect((try? p.next()) == nil)
            if let partial = p.partialFrame(), case .fail(.invalidFramePayloadData, _) = m.inspectPartial(partial.opcode, partial.payload) {
                failedAt = i
                break
            }
        }
        // header (4 bytes) + "κόσμε" + 0xED, then 0xA0 is the offending byte
        #expect(failedAt == 4 + "κόσμε".utf8.count + 1)
        // A valid text frame inspected partially still completes normally.
        var p2 = FrameParser(maximumFrameSize: 1 << 20)
        var m2 = WebSocketStateMachine(maximumMessageSize: 1 << 20)
        let ok = serverFrame(1, Array("héllo wörld".utf8))
        var delivered: WebSocketStateMachine.Action = .none
        for b in ok {
            p2.append([b])
            if let f = try? p2.next() {
                delivered = m2.receive(f)
            } else if let partial = p2.partialFrame() {
                #expect(m2.inspectPartial(partial.opcode, partial.payload) == .none)
            }
        }
        #expect(delivered == .deliver(.text("héllo wörld")))
    }

    @Test("every received close code: valid ones are echoed, others fail with 1002")
    func receivedCloseCodes() {
        for raw in UInt16(0)...5100 {
            var m = WebSocketStateMachine(maximumMessageSize: 100)
            let action = m.receive(frame(.close, [UInt8(raw >> 8), UInt8(raw & 0xFF)]))
            let valid = (1000...1003).contains(raw) || (1007...1014).contains(raw) || (3000...4999).contains(raw)
            if valid {
                #expect(action == .replyClose(code: WebSocketCloseCode(raw), reason: ""), "\(raw)")
                #expect(m.peerClose?.code?.rawValue == raw)
            } else {
                guard case .fail(.protocolError, _) = action else {
                    Issue.record("code \(raw) should fail with 1002")
                    continue
                }
            }
        }
        for raw: UInt16 in [1005, 1006, 1015, 0, 999, 1004, 1016, 2999, 5000, 65535] {
            #expect(!WebSocketCloseCode(raw).isValidOnWire)
        }
    }

    @Test("close frame payload rules")
    func closePayloadRules() {
        var m = WebSocketStateMachine(maximumMessageSize: 100)
        #expect(m.receive(frame(.close, [])) == .replyClose(code: nil, reason: ""))
        #expect(m.peerClose?.code == nil)
        var m1 = WebSocketStateMachine(maximumMessageSize: 100)
        guard case .fail(.protocolError, _) = m1.receive(frame(.close, [3])) else {
            Issue.record("1-byte close payload")
            return
        }
        var m2 = WebSocketStateMachine(maximumMessageSize: 100)
        guard case .fail(.invalidFramePayloadData, _) = m2.receive(frame(.close, [3, 232, 0xFF])) else {
            Issue.record("invalid UTF-8 reason")
            return
        }
    }

    @Test("our close: a close frame once; the peer's answer completes the handshake; data after is ignored")
    func localClose() {
        var m = WebSocketStateMachine(maximumMessageSize: 100)
        let first = m.close()
        let second = m.close()
        #expect(first)
        #expect(!second)
        #expect(!m.canSend)
        #expect(m.receive(frame(.text, [65])) == .none)
        #expect(m.receive(frame(.close, [3, 232])) == .closeHandshakeCompleted)
        #expect(m.state == .closed)
    }

    @Test("a parser error becomes a fail action with its code")
    func parserErrors() {
        var m = WebSocketStateMachine(maximumMessageSize: 100)
        guard case .fail(.messageTooBig, let e) = m.receive(FrameError(closeCode: .messageTooBig, message: "x")) else {
            Issue.record("1009")
            return
        }
        #expect(e.code == .messageTooBig)
        #expect(e.closeCode == .messageTooBig)
    }
}

@Suite("UTF-8 validator")
struct UTF8Tests {
    static let adversarial: [[UInt8]] = [
        [], [0x00], [0x7F], [0x80], [0xBF], [0xC0, 0x80], [0xC1, 0xBF], [0xC2, 0x80], [0xDF, 0xBF],
        [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF], [0xE0, 0xA0, 0x80], [0xED, 0x9F, 0xBF], [0xED, 0xA0, 0x80],
        [0xED, 0xBF, 0xBF], [0xEF, 0xBF, 0xBF], [0xEF, 0xBF, 0xBE], [0xF0, 0x8F, 0xBF, 0xBF], [0xF0, 0x90, 0x80, 0x80],
        [0xF4, 0x8F, 0xBF, 0xBF], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xFE], [0xFF],
        [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5], [0xCE], [0xE2, 0x82], [0xF0, 0x9F, 0x98],
        Array("hello world, plain ascii longer than eight".utf8), Array("héllo wörld ✓ 😀".utf8),
        Array("abcdefgh".utf8) + [0xC3] + Array("abcdefgh".utf8),
    ]

    static func reference(_ b: [UInt8]) -> Bool { String(validating: b, as: UTF8.self) != nil }

    @Test func adversarialAgreesWithStandardLibrary() {
        for b in Self.adversarial {
            #expect(UTF8Validator.isValid(b) == Self.reference(b), "\(b)")
        }
    }

    @Test func randomAgreesWithStandardLibraryWholeAndChunked() {
        var g = SeededRandom(seed: 2026)
        let pieces: [[UInt8]] = [[0x41], [0xC3, 0xA9], [0xE2, 0x9C, 0x93], [0xF0, 0x9F, 0x98, 0x80]]
        for round in 0..<3000 {
            var b: [UInt8] = []
            let n = Int.random(in: 0...24, using: &g)
            for _ in 0..<n {
                if round % 3 == 0 {
                    b.append(UInt8.random(in: 0...255, using: &g))  // mostly invalid
                } else {
                    b += pieces.randomElement(using: &g)!
                    if Int.random(in: 0..<12, using: &g) == 0 { b.append(UInt8.random(in: 0x80...0xFF, using: &g)) }
                    if Int.random(in: 0..<15, using: &g) == 0, !b.isEmpty { b.removeLast() }
                }
            }
            let expected = Self.reference(b)
            #expect(UTF8Validator.isValid(b) == expected, "\(b)")
            // Chunked at a random point: the same verdict.
            let cut = b.isEmpty ? 0 : Int.random(in: 0...b.count, using: &g)
            var v = UTF8Validator()
            let ok = v.feed(b[0..<cut]) && v.feed(b[cut...]) && v.isComplete
            #expect(ok == expected)
        }
    }
}

@Suite("Handshake")
struct HandshakeTests {
    @Test("the RFC 6455 example accept key")
    func acceptKey() {
        #expect(Handshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    func response(_ h: Handshake, extra: String = "", status: String = "101 Switching Protocols") -> [UInt8] {
        Array(
            ("HTTP/1.1 \(status)\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
                + "Sec-WebSocket-Accept: \(Handshake.acceptValue(forKey: h.key))\r\n\(extra)\r\n").utf8)
    }

    @Test("101 followed by frame bytes: the bytes are returned as leftover, at every split point")
    func leftover() {
        let h = Handshake.random(subprotocols: ["p1", "p2"])
        let frames = serverFrame(1, Array("early".utf8)) + serverFrame(9, [])
        let bytes = response(h, extra: "Sec-WebSocket-Protocol: p2\r\n") + frames
        for cut in 0..<bytes.count {
            if case .upgraded = h.parse(Array(bytes[0..<cut])) {
                // only possible once the whole head is there
                #expect(cut >= bytes.count - frames.count)
            }
        }
        guard case .upgraded(let resp, let leftover) = h.parse(bytes) else {
            Issue.record("expected upgrade")
            return
        }
        #expect(resp.subprotocol == "p2")
        #expect(leftover == frames)
        #expect(parseAll([leftover]).0.map(\.opcode) == [.text, .ping])
    }

    @Test("incremental parsing (byte by byte, remembering what was scanned) finds the same head and leftover")
    func incremental() {
        let h = Handshake.random(subprotocols: [])
        let frames = serverFrame(2, [1, 2, 3])
        let bytes = response(h, extra: "X-Long: \(String(repeating: "v", count: 5000))\r\n") + frames
        var scanned = 0
        var result: [UInt8]?
        for cut in 1...bytes.count {
            let outcome = h.parse(Array(bytes[0..<cut]), scannedUpTo: scanned)
            scanned = cut
            if case .upgraded(_, let leftover) = outcome {
                result = leftover
                #expect(cut == bytes.count - frames.count)  // found as soon as the head is complete
                break
            }
        }
        #expect(result == [])
        if case .upgraded(_, let leftover) = h.parse(bytes, scannedUpTo: 100) { #expect(leftover == frames) }
    }

    @Test func requestHasTheRequiredHeaders() throws {
        let h = Handshake(key: "dGhlIHNhbXBsZSBub25jZQ==", subprotocols: ["a", "b"])
        let ep = try WebSocketEndpoint(url: URL(string: "wss://example.com:8443/client/hubs/x?access_token=t")!)
        let text = String(decoding: h.request(endpoint: ep, userAgent: "ua", headers: [("Authorization", "B\r\nX: y")]), as: UTF8.self)
        #expect(text.hasPrefix("GET /client/hubs/x?access_token=t HTTP/1.1\r\n"))
        #expect(text.contains("Host: example.com:8443\r\n"))
        #expect(text.contains("Sec-WebSocket-Version: 13\r\n"))
        #expect(text.contains("Sec-WebSocket-Protocol: a, b\r\n"))
        #expect(text.contains("User-Agent: ua\r\n"))
        #expect(text.contains("Authorization: BX: y\r\n"))  // no header injection
        #expect(text.hasSuffix("\r\n\r\n"))
        #expect(ep.redacted == "wss://example.com:8443/client/hubs/x?<redacted>")
    }

    @Test func endpoints() throws {
        let v6 = try WebSocketEndpoint(url: URL(string: "ws://[::1]:9000/")!)
        #expect(v6.host == "::1")
        #expect(v6.hostIsIPAddress)
        #expect(v6.hostHeader == "[::1]:9000")
        let v4 = try WebSocketEndpoint(url: URL(string: "wss://127.0.0.1")!)
        #expect(v4.port == 443 && v4.hostIsIPAddress && v4.requestTarget == "/")
        #expect(throws: WebSocketError.self) { try WebSocketEndpoint(url: URL(string: "https://x/")!) }
    }

    @Test("non-101, broken and unacceptable answers")
    func failures() {
        let h = Handshake.random(subprotocols: ["p"])
        let r401 = Array("HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\nX: y\r\n\r\nnope".utf8)
        guard case .rejected(401, let headers, let body, 4) = h.parse(r401) else {
            Issue.record("401")
            return
        }
        #expect(body == Array("nope".utf8))
        #expect(headers.count == 2)
        func code(_ bytes: [UInt8]) -> WebSocketError.Code? {
            if case .failed(let e) = h.parse(bytes) { return e.code }
            return nil
        }
        #expect(code(Array("garbage\r\n\r\n".utf8)) == .invalidUpgradeResponse)
        #expect(code(Array("HTTP/1.1 101 OK\r\n\r\n".utf8)) == .invalidUpgradeResponse)
        #expect(code(response(h)) == .subprotocolMismatch)
        #expect(code(response(h, extra: "Sec-WebSocket-Protocol: q\r\n")) == .subprotocolMismatch)
        #expect(code(response(h, extra: "Sec-WebSocket-Protocol: p\r\nSec-WebSocket-Extensions: permessage-deflate\r\n")) == .invalidUpgradeResponse)
        let wrongKey = Array(
            "HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n".utf8)
        #expect(code(wrongKey) == .invalidAcceptKey)
        #expect(code([UInt8](repeating: 65, count: 20_000)) == .invalidUpgradeResponse)
        let noProtoOffered = Handshake.random(subprotocols: [])
        if case .failed(let e) = noProtoOffered.parse(response(noProtoOffered, extra: "Sec-WebSocket-Protocol: z\r\n")) {
            #expect(e.code == .subprotocolMismatch)
        } else {
            Issue.record("unrequested subprotocol")
        }
    }
}

// MARK: Hostile input (issue 10)
@Suite("Hostile input units")
struct HostileInputUnitTests {
    let handshake = Handshake(key: "dGhlIHNhbXBsZSBub25jZQ==", subprotocols: [])

    @Test("Content-Length must be digits: a sign, a list, spaces or letters fail the upgrade", arguments: [
        "-1", "+5", "1,2", "1 2", "0x10", "", "١٢",
    ])
    func badContentLength(_ value: String) {
        let answer = Array("HTTP/1.1 400 Bad Request\r\nContent-Length: \(value)\r\n\r\nbody".utf8)
        guard case .failed(let e) = handshake.parse(answer) else {
            Issue.record("accepted Content-Length '\(value)'")
            return
        }
        #expect(e.code == .invalidUpgradeResponse)
        #expect(e.httpStatus == 400)
    }

    @Test("a huge Content-Length saturates and the kept body stays capped at 4 KiB")
    func hugeContentLength() {
        let answer = Array("HTTP/1.1 500 Oops\r\nContent-Length: 99999999999999999999999\r\n\r\nxyz".utf8)
        guard case .rejected(let status, _, let body, let length) = handshake.parse(answer) else {
            Issue.record("not rejected")
            return
        }
        #expect(status == 500)
        #expect(length == Int.max)
        #expect(body == Array("xyz".utf8))
        #expect(Handshake.contentLength("0") == 0)
        #expect(Handshake.contentLength("0012") == 12)
    }

    @Test("a head over 16 KiB fails whether it arrives whole or in pieces")
    func headLimitWhole() {
        let filler = String(repeating: "a", count: 17 * 1024)
        let answer = Array("HTTP/1.1 401 No\r\nX-Filler: \(filler)\r\n\r\n".utf8)
        guard case .failed(let e) = handshake.parse(answer) else {
            Issue.record("a 17 KiB head was accepted")
            return
        }
        #expect(e.code == .invalidUpgradeResponse)
    }

    @Test("peerNotReading fails an open connection with 1008, once")
    func peerNotReadingAction() {
        var m = WebSocketStateMachine(maximumMessageSize: 1024)
        guard case .fail(let code, let error) = m.peerNotReading("flood") else {
            Issue.record("no fail action")
            return
        }
        #expect(code == .policyViolation)
        #expect(error.code == .peerNotReading)
        #expect(m.peerNotReading("again") == .none)
        #expect(m.receive(WebSocketFrame(fin: true, opcode: .ping, payload: [1])) == .none)
    }
}
