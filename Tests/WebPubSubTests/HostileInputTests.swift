import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// Issue 10 at the client level: the real client against hostile or limiting peers on loopback.
@Suite("Hostile input (client)", .serialized, .timeLimit(.minutes(2)))
struct HostileInputTests {
    @Test("a service answering the upgrade with Content-Length: -1 fails open() with a typed error, no trap")
    func negativeContentLength() throws {
        let peer = try PeerProcess.python("ws_peer.py", ["negativelength"])
        defer { peer.stop() }
        let port = try peer.value(after: "PORT ", timeout: 20)
        let client = WebPubSubClient(
            url: URL(string: "ws://127.0.0.1:\(port)/client/hubs/h?access_token=x")!,
            options: EmulatorFixture.options { $0.reconnectRetryPolicy = RetryPolicy(maxRetries: 0, delay: 0.05, mode: .fixed) })
        defer { client.close() }
        do {
            try client.open()
            Issue.record("open() succeeded against a broken service")
        } catch {
            #expect(error.code == .openFailed, "\(error)")
            #expect("\(error)".contains("invalidUpgradeResponse") || "\(error)".contains("Content-Length"), "\(error)")
        }
    }

    @Test("a join past the emulator's group limit fails with the service's BadRequest; earlier joins stand")
    func groupLimit() throws {
        var configuration = WebPubSubEmulator.Configuration(port: 0)
        configuration.maxGroupsPerConnection = 2
        configuration.threads = 1
        let emulator = WebPubSubEmulator(configuration: configuration)
        try emulator.start()
        defer { emulator.stop() }
        let client = WebPubSubClient(url: emulator.clientAccessURL(hub: "h", roles: ["webpubsub.joinLeaveGroup"]),
                                     options: EmulatorFixture.options())
        try client.open()
        defer { client.close() }
        _ = try client.joinGroup("a")
        _ = try client.joinGroup("b")
        _ = try client.joinGroup("a")  // already in: not a new group
        do {
            _ = try client.joinGroup("c")
            Issue.record("the third group was joined")
        } catch {
            #expect(error.code == .serviceError)
            #expect(error.errorName == "BadRequest")
            #expect(!error.isTransient)
        }
    }
}
