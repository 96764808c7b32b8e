import Dispatch
import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// The client over wss://: a real TLS server (Python's ssl module, `Tests/Peers/tls_proxy.py`) in front
/// of the emulator, with a certificate from a private CA made with `openssl` at test time.
@Suite("Client over TLS", .timeLimit(.minutes(1)))
struct ClientTLSTests {
    @Test func wssWithAPrivateCAVerifiesTheServerAndRecovers() throws {
        let ca = try TestCA.shared.get()
        let emu = try EmulatorFixture()
        let proxy = try PeerProcess.python("tls_proxy.py", [ca.cert("good"), ca.key("good"), String(emu.emulator.port)])
        defer { proxy.stop() }
        let port = try proxy.value(after: "PORT ", timeout: 15)
        let url = URL(string: WebPubSubEmulator.clientAccessURL(
            endpoint: "https://localhost:\(port)", accessKey: emu.emulator.configuration.accessKey, hub: emu.hub,
            userID: "tls", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]))!
        #expect(url.scheme == "wss")

        // The system trust store does not know the private CA: the first open fails, typed, and nothing hangs.
        let untrusted = WebPubSubClient(url: url, options: EmulatorFixture.options { $0.reconnectRetryPolicy = .none })
        do {
            try untrusted.open()
            Issue.record("an untrusted certificate was accepted")
            untrusted.close()
        } catch {
            #expect(error.code == .openFailed)
            #expect("\(error)".lowercased().contains("certificate"), "\(error)")
        }
        #expect(untrusted.state == .stopped)

        // With the CA added: a verified session, messages both ways, and a recovery over TLS.
        let client = WebPubSubClient(url: url, options: EmulatorFixture.options { $0.tls.additionalCAFile = ca.rootCert })
        let got = Collector<String>()
        client.subscribe(.groupMessage) { event in got.append(event.content.text ?? "?") }
        try client.open()
        defer { client.close() }
        let id = try #require(client.connectionID)
        try client.joinGroup("secure")
        try client.sendToGroup("secure", .text("one"))
        #expect(got.wait(count: 1) == ["one"])
        try emu.hook(id, "drop")
        try client.sendToGroup("secure", .text("two"))
        #expect(got.wait(count: 2) == ["one", "two"])
        #expect(client.connectionID == id)
    }
}
