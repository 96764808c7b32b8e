import Foundation
import Testing
import TestSupport
@testable import WebSocket

extension RealPeerTests {
    func tlsConfig(_ ca: TestCA) -> WebSocketConfiguration {
        var c = WebSocketConfiguration()
        c.tls.additionalCAFile = ca.rootCert
        return c
    }

    func startTLSPeer(_ ca: TestCA, _ name: String, mode: String = "echo") throws -> (PeerProcess, Int) {
        try startPeer(mode, ["--cert", ca.cert(name), "--key", ca.key(name)])
    }

    @Test("wss:// with a valid chain (DNS name): echo, close_notify, clean close", arguments: ["localhost", "127.0.0.1"])
    func tlsValid(host: String) throws {
        let ca = try TestCA.shared.get()
        let (peer, port) = try startTLSPeer(ca, "good")
        defer { peer.stop() }
        let (c, r) = startConnection("wss://\(host):\(port)/", configuration: tlsConfig(ca))
        #expect(r.waitForOpen(), "\(String(describing: r.report))")
        // SNI only for DNS names; ALPN http/1.1; TLS 1.2 or newer.
        try peer.waitForLine(containing: host == "localhost" ? "SNI localhost" : "SNI None", timeout: 5)
        let alpn = try peer.waitForLine(containing: "ALPN ", timeout: 5)
        #expect(alpn.hasPrefix("ALPN http/1.1 TLSv1.")  && !alpn.hasSuffix("TLSv1.1"))
        let big = [UInt8](repeating: 0xAB, count: 200_000)
        c.send(text: "über TLS")
        c.send(binary: big)
        #expect(r.waitForMessages(2) == [.text("über TLS"), .binary(big)])
        c.close()
        let report = r.waitForClose()
        #expect(report?.code == .normalClosure)
        #expect(report?.wasClean == true)
    }

    @Test("TLS verification failures are typed: wrong name, untrusted root, expired")
    func tlsFailures() throws {
        let ca = try TestCA.shared.get()
        let cases: [(cert: String, host: String, expect: String)] = [
            ("othername", "localhost", "hostname mismatch"),
            ("othername", "127.0.0.1", "IP address mismatch"),
            ("untrusted", "localhost", "unable to get local issuer certificate"),
            ("expired", "localhost", "certificate has expired"),
        ]
        for c in cases {
            let (peer, port) = try startTLSPeer(ca, c.cert)
            defer { peer.stop() }
            let (_, r) = startConnection("wss://\(c.host):\(port)/", configuration: tlsConfig(ca))
            let report = r.waitForClose()
            #expect(report?.error?.code == .certificateVerificationFailed, "\(c.cert)@\(c.host): \(String(describing: report))")
            #expect(report?.error?.verifyResult == c.expect)
            #expect(report?.code == .abnormalClosure)
            #expect(r.openCount == 0)
        }
    }

    @Test("without the test root in the trust store the chain is rejected; verifyPeer=false accepts it")
    func tlsSystemStoreOnly() throws {
        let ca = try TestCA.shared.get()
        let (peer, port) = try startTLSPeer(ca, "good")
        defer { peer.stop() }
        let (_, r) = startConnection("wss://localhost:\(port)/")
        #expect(r.waitForClose()?.error?.code == .certificateVerificationFailed)
        var insecure = WebSocketConfiguration()
        insecure.tls.verifyPeer = false
        let (c2, r2) = startConnection("wss://localhost:\(port)/", configuration: insecure)
        #expect(r2.waitForOpen())
        c2.close()
        _ = r2.waitForClose()
    }

    @Test("TLS to a plain-TCP server fails with a TLS error, not a hang")
    func tlsToPlainServer() throws {
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let (_, r) = startConnection("wss://127.0.0.1:\(port)/")
        let report = r.waitForClose()
        #expect(report?.error?.code == .tlsHandshakeFailed)
    }

    @Test("a missing CA file is a typed error")
    func missingCAFile() throws {
        var config = WebSocketConfiguration()
        config.tls.additionalCAFile = "/nonexistent/ca.pem"
        let (peer, port) = try startPeer("echo")
        defer { peer.stop() }
        let (_, r) = startConnection("wss://127.0.0.1:\(port)/", configuration: config)
        #expect(r.waitForClose()?.error?.code == .tlsHandshakeFailed)
    }
}

extension RealPeerTests {
    @Test("IPv6 literals: ws://[::1] and wss://[::1] with an IPv6 SAN; a wrong IPv6 name fails verification")
    func ipv6() throws {
        let ca = try TestCA.shared.get()
        let peer: PeerProcess
        let port: Int
        do {
            (peer, port) = try startPeer("echo", ["--host", "::1", "--cert", ca.cert("good"), "--key", ca.key("good")])
        } catch {
            print("no IPv6 loopback here, skipped: \(error)")
            return
        }
        defer { peer.stop() }
        let (c, r) = startConnection("wss://[::1]:\(port)/v6", configuration: tlsConfig(ca))
        #expect(r.waitForOpen(), "\(String(describing: r.report))")
        try peer.waitForLine(containing: "SNI None", timeout: 5)
        c.send(text: "v6")
        #expect(r.waitForMessages(1) == [.text("v6")])
        c.close()
        #expect(r.waitForClose()?.wasClean == true)

        let (other, otherPort) = try startPeer("echo", ["--host", "::1", "--cert", ca.cert("othername"), "--key", ca.key("othername")])
        defer { other.stop() }
        let (_, r2) = startConnection("wss://[::1]:\(otherPort)/", configuration: tlsConfig(ca))
        #expect(r2.waitForClose()?.error?.verifyResult == "IP address mismatch")

        let (plain, plainPort) = try startPeer("echo", ["--host", "::1"])
        defer { plain.stop() }
        let (c3, r3) = startConnection("ws://[::1]:\(plainPort)/")
        #expect(r3.waitForOpen())
        c3.close()
        _ = r3.waitForClose()
    }
}
