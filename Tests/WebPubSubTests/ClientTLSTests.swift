import Dispatch
import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// The client over wss:// to the emulator's own TLS listener (system OpenSSL on SwiftNIO), with certificates
/// from a private CA made with `openssl` at test time (`TestCA`).
@Suite("Client over TLS", .timeLimit(.minutes(2)))
struct ClientTLSTests {
    static let roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]

    /// Opening fails, typed, with a certificate error, and leaves the client stopped.
    func expectRefused(_ url: URL, caFile: String?, _ why: String) {
        let client = WebPubSubClient(url: url, options: EmulatorFixture.options {
            $0.reconnectRetryPolicy = .none
            $0.tls.additionalCAFile = caFile
        })
        do {
            try client.open()
            Issue.record("\(why): the certificate was accepted")
            client.close()
        } catch {
            #expect(error.code == .openFailed, "\(why): \(error)")
            #expect("\(error)".lowercased().contains("certificate"), "\(why): \(error)")
        }
        #expect(client.state == .stopped, "\(why)")
    }

    @Test func anUntrustedChainOrAnotherNameIsRefused() throws {
        let ca = try TestCA.shared.get()
        let emu = try EmulatorFixture(tls: "good")
        let url = emu.url(userID: "tls")
        #expect(url.scheme == "wss")
        // The system trust store does not know the private CA.
        expectRefused(url, caFile: nil, "system trust store")
        // A chain from another root, with ours trusted.
        let rogue = try EmulatorFixture(tls: "untrusted")
        expectRefused(rogue.url(userID: "tls"), caFile: ca.rootCert, "rogue root")
        // A certificate of our root for another host name.
        let other = try EmulatorFixture(tls: "othername")
        expectRefused(other.url(userID: "tls"), caFile: ca.rootCert, "other name")
        // An expired certificate.
        let expired = try EmulatorFixture(tls: "expired")
        expectRefused(expired.url(userID: "tls"), caFile: ca.rootCert, "expired")
        #expect(try emu.stat("connectionsOpened") == 0)
    }

    @Test func aVerifiedSessionRecoversAfterADropAndReconnectsAfterAnExpiry() throws {
        let ca = try TestCA.shared.get()
        let emu = try EmulatorFixture(tls: "good")
        let urls = Collector<URL>()
        let client = WebPubSubClient(credential: {
            let url = emu.url(userID: "tls")
            urls.append(url)
            return url
        }, options: EmulatorFixture.options { $0.tls.additionalCAFile = ca.rootCert })
        let got = Collector<String>()
        let connects = Collector<String>()
        client.subscribe(.groupMessage) { event in got.append(event.content.text ?? "?") }
        client.subscribe(.connected) { connects.append($0.connectionID) }
        try client.open()
        defer { client.close() }
        #expect(urls.values.allSatisfy { $0.scheme == "wss" })
        let id = try #require(client.connectionID)
        try client.joinGroup("secure")
        try client.sendToGroup("secure", .text("one"))
        #expect(got.wait(count: 1) == ["one"])

        // A TCP reset: the same connection is recovered over a new TLS session.
        try emu.hook(id, "drop")
        try client.sendToGroup("secure", .text("two"))
        #expect(got.wait(count: 2) == ["one", "two"])
        #expect(client.connectionID == id)
        #expect(try emu.stat("recoveries") == 1)

        // The session ends: a fresh URL, a new connection over TLS, the group rejoined.
        try emu.hook(id, "expire")
        let ids = connects.wait(count: 2)
        try #require(ids.count == 2)
        #expect(ids[1] != id)
        #expect(eventually { (try? emu.groups(of: ids[1])) == ["secure"] })
        try client.sendToGroup("secure", .text("three"))
        #expect(got.wait(count: 3) == ["one", "two", "three"])
        #expect(urls.values.count == 2)
    }

    @Test func plainAndTLSClientsShareOneHub() throws {
        let ca = try TestCA.shared.get()
        let emu = try EmulatorFixture(tls: "good")
        let secure = WebPubSubClient(url: emu.url(userID: "secure", roles: Self.roles),
                                     options: EmulatorFixture.options { $0.tls.additionalCAFile = ca.rootCert })
        let plainURL = URL(string: WebPubSubEmulator.clientAccessURL(
            endpoint: try #require(emu.emulator.plainEndpoint), accessKey: emu.emulator.configuration.accessKey,
            hub: emu.hub, userID: "plain", roles: Self.roles))!
        #expect(plainURL.scheme == "ws")
        let plain = WebPubSubClient(url: plainURL, options: EmulatorFixture.options())
        let got = Collector<String>()
        secure.subscribe(.groupMessage) { got.append("secure:" + ($0.content.text ?? "?")) }
        plain.subscribe(.groupMessage) { got.append("plain:" + ($0.content.text ?? "?")) }
        try secure.open()
        defer { secure.close() }
        try plain.open()
        defer { plain.close() }
        try secure.joinGroup("both")
        try plain.joinGroup("both")
        try plain.sendToGroup("both", .text("hi"), noEcho: true)
        try secure.sendToGroup("both", .text("yo"), noEcho: true)
        #expect(Set(got.wait(count: 2)) == ["secure:hi", "plain:yo"])
    }
}
