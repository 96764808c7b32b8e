import Dispatch
import Foundation
import Logging
import Testing
import TestSupport
@testable import WebSocket

/// Every test that opens sockets lives under this serialized suite, so descriptor and thread counts
/// taken by one test are not disturbed by another of this target.
@Suite("Real peers", .serialized, .timeLimit(.minutes(3)))
struct RealPeerTests {
    @Test("echo: text and binary, small and large, over ws://")
    func echo() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/echo?access_token=secret")
        #expect(r.waitForOpen())
        let big = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let sent: [WebSocketMessage] = [
            .text("hello"), .binary([1, 2, 3]), .text(""), .text("héllo wörld ✓"), .binary(big),
            .text(String(repeating: "x", count: 70_000)),
        ]
        for m in sent { #expect(c.send(m)) }
        let got = r.waitForMessages(sent.count)
        #expect(got == sent)
        c.close(code: .normalClosure, reason: "done")
        let report = r.waitForClose()
        #expect(report?.code == .normalClosure)
        #expect(report?.wasClean == true)
        #expect(report?.error == nil)
        #expect(c.bufferedAmount == 0)
    }

    @Test("outgoing fragmentation and ping/pong against websockets")
    func outgoingFragmentsAndPing() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.outgoingFragmentSize = 1000
        let (c, r) = startConnection("ws://localhost:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        let text = String(repeating: "abcdé", count: 1000)
        c.send(text: text)
        c.ping([7, 7])
        #expect(r.waitForMessages(1) == [.text(text)])
        #expect(r.wait { $0.contains { if case .pong([7, 7]) = $0 { return true } else { return false } } })
        c.close()
        #expect(r.waitForClose()?.code == .normalClosure)
    }

    @Test("subprotocol offered and echoed by websockets")
    func subprotocolEchoed() throws {
        let (peer, port) = try startPeer("echo", ["--subprotocol", "json.webpubsub.azure.v1"])
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.subprotocols = ["json.webpubsub.azure.v1"]
        config.additionalHeaders = [("Authorization", "Bearer secret")]
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        #expect(r.opened?.subprotocol == "json.webpubsub.azure.v1")
        c.close()
        _ = r.waitForClose()
    }

    @Test("websockets refuses a subprotocol it does not know → typed error")
    func subprotocolRefused() throws {
        let (peer, port) = try startPeer("echo", ["--subprotocol", "a"])
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.subprotocols = ["b"]
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        let report = r.waitForClose()
        #expect(report?.code == .abnormalClosure)
        // websockets answers 400 when no offered subprotocol is acceptable
        #expect(report?.error?.code == .upgradeRejected || report?.error?.code == .subprotocolMismatch)
        #expect(r.openCount == 0)
    }

    @Test("fragmented messages with a ping between fragments; automatic pong")
    func fragments() throws {
        let (peer, port) = try startPeer("fragments")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/")
        let got = r.waitForMessages(2)
        #expect(got == [.text("Hello, wörld"), .binary([0, 1, 2, 3])])
        try peer.waitForLine(containing: "PONG p1", timeout: 5)
        c.close()
        #expect(r.waitForClose()?.wasClean == true)
        try peer.waitForLine(containing: "CLIENT_CLOSE 1000", timeout: 5)
    }

    @Test("server ping gets a pong")
    func serverPing() throws {
        let (peer, port) = try startPeer("ping")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/")
        #expect(r.waitForOpen())
        try peer.waitForLine(containing: "PONG abc", timeout: 5)
        c.close()
        _ = r.waitForClose()
    }

    @Test("bytes that follow the 101 response reach the frame parser")
    func pipelined() throws {
        let (peer, port) = try startPeer("pipelined")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/")
        #expect(r.waitForMessages(2) == [.text("early"), .text("second")])
        c.close()
        _ = r.waitForClose()
    }

    @Test("server closes with a code: echoed, reported clean", arguments: [1000, 1001, 1008, 1011, 3000, 4999])
    func serverCloses(code: Int) throws {
        let (peer, port) = try startPeer("close", [String(code)])
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(report?.code.rawValue == UInt16(code))
        #expect(report?.reason == "bye")
        #expect(report?.wasClean == true)
        #expect(report?.error == nil)
        try peer.waitForLine(containing: "CLIENT_CLOSE \(code)", timeout: 5)
    }

    @Test("abrupt TCP close → 1006 with connectionReset")
    func abrupt() throws {
        let (peer, port) = try startPeer("abrupt")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(r.messages == [.text("hi")])
        #expect(report?.code == .abnormalClosure)
        #expect(report?.wasClean == false)
        #expect(report?.error?.code == .connectionReset)
    }

    @Test("oversized message → close 1009")
    func oversize() throws {
        let (peer, port) = try startPeer("oversize", ["200000"])
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.maximumMessageSize = 100_000
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        let report = r.waitForClose()
        #expect(report?.code == .messageTooBig)
        #expect(report?.error?.code == .messageTooBig)
        #expect(r.messages.isEmpty)
        try peer.waitForLine(containing: "CLIENT_CLOSE 1009", timeout: 5)
    }

    @Test("invalid UTF-8 in a fragment → close 1007")
    func badUTF8() throws {
        let (peer, port) = try startPeer("badutf8")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(report?.code == .invalidFramePayloadData)
        #expect(report?.error?.code == .invalidUTF8)
        try peer.waitForLine(containing: "CLIENT_CLOSE 1007", timeout: 5)
    }

    @Test("reserved bits → close 1002")
    func badFrame() throws {
        let (peer, port) = try startPeer("badframe")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(report?.code == .protocolError)
        #expect(report?.error?.code == .protocolViolation)
        try peer.waitForLine(containing: "CLIENT_CLOSE 1002", timeout: 5)
    }

    @Test("close code 1005 received on the wire → 1002")
    func badCloseCode() throws {
        let (peer, port) = try startPeer("badclosecode")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(report?.code == .protocolError)
        try peer.waitForLine(containing: "CLIENT_CLOSE 1002", timeout: 5)
    }

    @Test("HTTP 401 on the upgrade → upgradeRejected with status, headers and body")
    func http401() throws {
        let (peer, port) = try startPeer("http401")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/client?access_token=x")
        let report = r.waitForClose()
        let error = report?.error
        #expect(error?.code == .upgradeRejected)
        #expect(error?.httpStatus == 401)
        #expect(error?.httpBodyText == "unauthorized: token expired\n")
        #expect(error?.httpHeaders.contains { $0.name == "WWW-Authenticate" && $0.value == "Bearer" } == true)
        #expect(report?.code == .abnormalClosure)
        #expect(r.openCount == 0)
    }

    @Test("missing or different subprotocol in the answer → subprotocolMismatch", arguments: ["noproto", "wrongproto"])
    func subprotocolMismatch(mode: String) throws {
        let (peer, port) = try startPeer(mode)
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.subprotocols = ["json.webpubsub.azure.v1"]
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForClose()?.error?.code == .subprotocolMismatch)
        #expect(r.openCount == 0)
    }

    @Test("wrong Sec-WebSocket-Accept → invalidAcceptKey")
    func badAccept() throws {
        let (peer, port) = try startPeer("badaccept")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        #expect(r.waitForClose()?.error?.code == .invalidAcceptKey)
    }

    @Test("a server that accepts TCP and never answers → timedOut within the connect timeout")
    func silent() throws {
        let (peer, port) = try startPeer("silent")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.connectTimeout = 0.5
        let start = Date()
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        let report = r.waitForClose(timeout: 10)
        #expect(report?.error?.code == .timedOut)
        // Generous: the point is that the 0.5 s timeout, not the silent peer, ended it.
        #expect(Date().timeIntervalSince(start) < 8)
    }

    @Test("connection refused → connectionFailed with errno")
    func refused() throws {
        let port = try unusedPort()
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(report?.error?.code == .connectionFailed)
        #expect(report?.error?.errno == ECONNREFUSED)
    }

    @Test("invalid URLs → invalidURL", arguments: ["http://127.0.0.1/", "ws:///nohost", "ftp://x"])
    func invalidURL(url: String) throws {
        let (_, r) = startConnection(url)
        #expect(r.waitForClose()?.error?.code == .invalidURL)
    }

    @Test("unknown host name → nameResolutionFailed")
    func unknownHost() throws {
        let (_, r) = startConnection("ws://no-such-host.invalid/")
        #expect(r.waitForClose()?.error?.code == .nameResolutionFailed)
    }

    @Test("keep-alive: a peer that goes mute fails with pongTimeout")
    func keepAliveTimeout() throws {
        let (peer, port) = try startPeer("mute")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.keepAlive = .init(interval: 0.1, timeout: 0.5)
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        let report = r.waitForClose(timeout: 5)
        #expect(report?.error?.code == .pongTimeout)
        #expect(report?.code == .abnormalClosure)
    }

    @Test("keep-alive: a live peer answers pings and the connection stays up")
    func keepAliveAlive() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.keepAlive = .init(interval: 0.1, timeout: 1)
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        Thread.sleep(forTimeInterval: 1.5)
        #expect(r.report == nil)
        #expect(r.events.contains { if case .pong = $0 { return true } else { return false } })
        c.close()
        #expect(r.waitForClose()?.code == .normalClosure)
    }

    @Test("messages sent before open are delivered after open; abort reports cancelled")
    func earlySendAndAbort() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let c = WebSocketConnection(url: URL(string: "ws://127.0.0.1:\(port)/")!, queue: DispatchQueue(label: "t"))
        let r = Recorder()
        c.send(text: "first")
        c.connect(handlers: r.handlers)
        #expect(r.waitForMessages(1) == [.text("first")])
        c.abort()
        let report = r.waitForClose()
        #expect(report?.error?.code == .cancelled)
        #expect(report?.code == .abnormalClosure)
        Thread.sleep(forTimeInterval: 0.1)
        #expect(r.closeCount == 1)
    }

    @Test("send from the owner queue acts directly; handlers run on the owner queue")
    func ownerQueue() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let q = DispatchQueue(label: "owner")
        let c = WebSocketConnection(url: URL(string: "ws://127.0.0.1:\(port)/")!, queue: q)
        let r = Recorder()
        let base = r.handlers
        c.connect(
            handlers: WebSocketHandlers(
                onOpen: { resp in
                    dispatchPrecondition(condition: .onQueue(q))
                    base.onOpen(resp)
                    // Called on the owner queue: encoded and written before returning.
                    c.send(text: "from-queue")
                },
                onMessage: { m in
                    dispatchPrecondition(condition: .onQueue(q))
                    base.onMessage(m)
                },
                onClose: base.onClose))
        #expect(r.waitForMessages(1) == [.text("from-queue")])
        c.close()
        _ = r.waitForClose()
    }
}

/// A loopback port nothing listens on (bound, then closed).
func unusedPort() throws -> Int {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) }
    }
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

extension RealPeerTests {
    @Test("backpressure: bufferedAmount grows against a peer that reads nothing; send refuses past the limit")
    func backpressure() throws {
        let (peer, port) = try startPeer("noread")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.maximumBufferedAmount = 1 << 20
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        let chunk = [UInt8](repeating: 1, count: 64 * 1024)
        var refused = false
        for _ in 0..<2000 {
            if !c.send(binary: chunk) {
                refused = true
                break
            }
            Thread.sleep(forTimeInterval: 0.001)
        }
        #expect(refused)
        let amount = c.bufferedAmount
        #expect(amount > 0 && amount <= (1 << 20) + 64 * 1024, "\(amount)")
        c.abort()
        #expect(r.waitForClose()?.error?.code == .cancelled)
        #expect(c.bufferedAmount == 0)
    }

    @Test("close handshake timeout: a peer that never answers our close → closeTimeout, 1006")
    func closeTimeout() throws {
        let (peer, port) = try startPeer("mute")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.closeTimeout = 0.3
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        let start = Date()
        c.close(code: .goingAway, reason: "bye")
        let report = r.waitForClose(timeout: 10)
        #expect(report?.error?.code == .closeTimeout)
        #expect(report?.code == .abnormalClosure)
        #expect(report?.wasClean == false)
        // Generous, yet well under the 5 s default the setting replaced.
        #expect(Date().timeIntervalSince(start) < 4)
    }

    @Test("close() before the connection opens cancels it")
    func closeBeforeOpen() throws {
        let (peer, port) = try startPeer("silent")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/")
        c.close()
        let report = r.waitForClose(timeout: 3)
        #expect(report?.error?.code == .cancelled)
        #expect(r.openCount == 0)
    }

    @Test("send from many threads at once: every message echoed, per-thread order kept")
    func concurrentSenders() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/")
        #expect(r.waitForOpen())
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<100 { c.send(text: "\(t):\(i)") }
        }
        let got = r.waitForMessages(800)
        #expect(got.count == 800)
        var last: [Int: Int] = [:]
        for case .text(let s) in got {
            let parts = s.split(separator: ":").compactMap { Int($0) }
            #expect(parts[1] == last[parts[0], default: -1] + 1)
            last[parts[0]] = parts[1]
        }
        c.close()
        _ = r.waitForClose()
    }
}

extension RealPeerTests {
    @Test("logs never hold the access token, the Authorization header or the query string")
    func logRedaction() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let sink = LogCapture()
        var logger = Logger(label: "redaction", factory: { _ in CapturingLogHandler(sink) })
        logger.logLevel = .trace
        var config = WebSocketConfiguration()
        config.additionalHeaders = [("Authorization", "Bearer hunter2-header")]
        let c = WebSocketConnection(
            url: URL(string: "ws://127.0.0.1:\(port)/client/hubs/h?access_token=hunter2-token&x=1")!,
            configuration: config, queue: DispatchQueue(label: "log"), logger: logger)
        let r = Recorder()
        c.connect(handlers: r.handlers)
        #expect(r.waitForOpen())
        c.close()
        _ = r.waitForClose()
        let lines = sink.lines
        #expect(!lines.isEmpty)
        #expect(lines.contains { $0.contains("ws://127.0.0.1:\(port)/client/hubs/h?<redacted>") })
        for line in lines {
            #expect(!line.contains("hunter2"), "\(line)")
            #expect(!line.contains("access_token"), "\(line)")
        }
    }
}

extension RealPeerTests {
    @Test("a rejection without Content-Length on a kept-alive connection is reported promptly, not as a timeout")
    func rejectionWithoutLength() throws {
        let (peer, port) = try startPeer("http403chunked")
        defer { peer.stop() }
        let start = Date()
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let error = r.waitForClose()?.error
        #expect(error?.code == .upgradeRejected)
        #expect(error?.httpStatus == 403)
        #expect(error?.httpBodyText.contains("forbidden") == true)
        #expect(Date().timeIntervalSince(start) < 8)  // generous: a timeout would take the 30 s default
    }

    @Test("close() before connect(): onClose still comes exactly once, with cancelled")
    func closeBeforeConnect() throws {
        let c = WebSocketConnection(url: URL(string: "ws://127.0.0.1:9/")!, queue: DispatchQueue(label: "t"))
        let r = Recorder()
        c.close()
        c.connect(handlers: r.handlers)
        #expect(r.waitForClose(timeout: 3)?.error?.code == .cancelled)
        c.connect(handlers: r.handlers)  // a second connect is ignored
        Thread.sleep(forTimeInterval: 0.1)
        #expect(r.closeCount == 1)
    }
}

extension RealPeerTests {
    @Test("writing to a peer that is gone never raises SIGPIPE (default disposition restored for the test)", arguments: [false, true])
    func noSIGPIPE(tls: Bool) throws {
        let ca = try TestCA.shared.get()
        let (peer, port) = try startPeer("abrupt", tls ? ["--cert", ca.cert("good"), "--key", ca.key("good")] : [])
        defer { peer.stop() }
        // Make SIGPIPE fatal again, as in a plain process, while this test writes into a dead socket.
        let previous = signal(SIGPIPE, SIG_DFL)
        defer { signal(SIGPIPE, previous) }
        var config = WebSocketConfiguration()
        config.tls.additionalCAFile = ca.rootCert
        let q = DispatchQueue(label: "sigpipe")
        let c = WebSocketConnection(
            url: URL(string: "\(tls ? "wss" : "ws")://127.0.0.1:\(port)/")!, configuration: config, queue: q)
        let r = Recorder()
        let chunk = [UInt8](repeating: 7, count: 256 * 1024)
        let base = r.handlers
        c.connect(
            handlers: WebSocketHandlers(
                onOpen: base.onOpen,
                onMessage: { m in
                    base.onMessage(m)
                    // Keep writing after the peer has closed: EPIPE / ECONNRESET, not a signal.
                    for i in 0..<40 {
                        q.asyncAfter(deadline: .now() + .milliseconds(10 * i)) { c.send(binary: chunk) }
                    }
                },
                onClose: base.onClose))
        let report = r.waitForClose()
        #expect(report?.error?.code == .connectionReset)
        #expect(report?.code == .abnormalClosure)
    }
}

extension RealPeerTests {
    @Test("slow name resolution is bounded by the connect timeout and never blocks the connection queue")
    func slowResolution() throws {
        // The lookup hangs until the test lets it go, so only the connect timeout can end the attempt.
        let gate = DispatchSemaphore(value: 0)
        let lookupEnded = LockedValue(false)
        Resolver.testHook.value = { host, port in
            if host == "slow.test" {
                _ = gate.wait(timeout: .now() + 30)
                lookupEnded.value = true
            }
            return Resolver.resolveNow(host: "127.0.0.1", port: port, numericOnly: true)
        }
        defer { Resolver.testHook.value = nil }
        var config = WebSocketConfiguration()
        config.connectTimeout = 0.3
        let q = DispatchQueue(label: "slow-dns")
        let c = WebSocketConnection(url: URL(string: "ws://slow.test:9/")!, configuration: config, queue: q)
        let r = Recorder()
        c.connect(handlers: r.handlers)
        // The owner queue stays free while the lookup is pending.
        let probe = DispatchSemaphore(value: 0)
        q.async { probe.signal() }
        #expect(probe.wait(timeout: .now() + 10) == .success)
        #expect(lookupEnded.value == false)
        let report = r.waitForClose(timeout: 10)
        #expect(report?.error?.code == .timedOut)
        #expect(lookupEnded.value == false, "the attempt ended only when the lookup did")
        gate.signal()
    }
}

extension RealPeerTests {
    @Test("codes that may not go on the wire (1005, 1006, 1015, 0, 5000) are sent as 1000; others as given",
          arguments: [(1005, 1000), (1006, 1000), (1015, 1000), (0, 1000), (5000, 1000), (4000, 4000), (1001, 1001)])
    func closeCodesOnTheWire(code: Int, sent: Int) throws {
        let (peer, port) = try startPeer("rawecho")
        defer { peer.stop() }
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/")
        #expect(r.waitForOpen())
        c.close(code: WebSocketCloseCode(UInt16(code)), reason: "r")
        try peer.waitForLine(containing: "CLIENT_CLOSE \(sent)", timeout: 5)
        #expect(r.waitForClose()?.code.rawValue == UInt16(sent))
    }
}

extension RealPeerTests {
    @Test("outgoing fragmentation lets a pong out between the fragments of a large message")
    func pongBetweenOutgoingFragments() throws {
        let (peer, port) = try startPeer("slowread")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.outgoingFragmentSize = 16 * 1024
        config.maximumBufferedAmount = 64 << 20
        let big = [UInt8](repeating: 0x5A, count: 16 << 20)  // 1,024 fragments
        let q = DispatchQueue(label: "fragments")
        let c = WebSocketConnection(url: URL(string: "ws://127.0.0.1:\(port)/")!, configuration: config, queue: q)
        let r = Recorder()
        let base = r.handlers
        c.connect(handlers: WebSocketHandlers(onOpen: { resp in base.onOpen(resp); c.send(binary: big) }, onClose: base.onClose))
        #expect(r.waitForOpen())
        let pongLine = try peer.waitForLine(containing: "PONG_AFTER ", timeout: 20)
        let fragmentsLine = try peer.waitForLine(containing: "FRAGMENTS ", timeout: 30)
        let before = Int(pongLine.split(separator: " ")[1])!
        #expect(fragmentsLine.hasPrefix("FRAGMENTS 1024 "))
        #expect(before < 1024, "the pong waited for the whole message")
        print("PONG after \(before) of 1024 fragments")
        c.close()
        #expect(r.waitForClose()?.wasClean == true)
        #expect(c.bufferedAmount == 0)
    }
}

// MARK: Hostile peers (issue 10): each of these brought the process down or grew it without bound before.
extension RealPeerTests {
    @Test("a non-101 answer with Content-Length: -1 → invalidUpgradeResponse (the process used to trap)")
    func negativeContentLength() throws {
        let (peer, port) = try startPeer("negativelength")
        defer { peer.stop() }
        let (_, r) = startConnection("ws://127.0.0.1:\(port)/")
        let error = r.waitForClose()?.error
        #expect(error?.code == .invalidUpgradeResponse)
        #expect(error?.httpStatus == 400)
        #expect(r.openCount == 0)
    }

    @Test("a peer that floods pings without reading is closed with 1008 peerNotReading; the pongs stay bounded")
    func pingFlood() throws {
        let (peer, port) = try startPeer("pingflood")
        defer { peer.stop() }
        var config = WebSocketConfiguration()
        config.closeTimeout = 0.5
        let (c, r) = startConnection("ws://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForOpen())
        guard let report = r.waitForClose(timeout: 30) else {
            // The kernel stopped taking the flood (under TCP memory pressure, with other suites' sockets
            // about, the peer's sends can stall once our receive window is full): no ping arrives, so no
            // pong is queued. What must hold then is the bound itself.
            #expect(c.bufferedAmount <= WebSocketConnection.maximumUnwrittenControlBytes + 128 * 512)
            c.abort()
            return
        }
        #expect(report.error?.code == .peerNotReading)
        #expect(report.error?.closeCode == .policyViolation)
        #expect(report.code == .abnormalClosure || report.code == .policyViolation)
        // The flood ended because we closed the socket, long before its 512 MiB.
        let sent = Int(try peer.value(after: "FLOOD_SENT ", timeout: 20)) ?? -1
        #expect(sent > 0 && sent < 512 << 20, "\(sent)")
        #expect(c.bufferedAmount == 0)
    }
}
