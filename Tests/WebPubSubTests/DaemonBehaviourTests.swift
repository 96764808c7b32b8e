import Dispatch
import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// What a long-running daemon meets, against real sockets: the emulator, and scripted misbehaving
/// servers (Tests/Peers/flapping_service.py). The decisions themselves are unit-tested in
/// ClientStateMachineTests; these prove the shell carries them out.
@Suite("Client as a daemon meets it", .timeLimit(.minutes(2)))
struct DaemonBehaviourTests {
    /// A server that closes every connection right after `connected`: every new attempt (and every
    /// recovery) is paced. Proven by a lower bound on the time the attempts took, which load can
    /// only make longer.
    @Test(arguments: [UInt16(1008), 1011])
    func aFlappingServerIsPaced(code: UInt16) throws {
        let server = try PeerProcess.python("flapping_service.py", ["\(code)"])
        defer { server.stop() }
        let port = try server.value(after: "PORT ")
        let url = URL(string: "ws://127.0.0.1:\(port)/client/hubs/h?access_token=t")!
        let credentials = Collector<Date>()
        var options = EmulatorFixture.options()
        options.reconnectRetryPolicy = RetryPolicy(maxRetries: .max, delay: 0.2, maxDelay: 30, jitter: 0.2)
        options.recoveryRetryInterval = 0.5
        let client = WebPubSubClient(credential: { credentials.append(Date()); return url }, options: options)
        let start = Date()
        try client.open()
        defer { client.close() }
        // Five more connections after the first.
        _ = try server.waitForLine(containing: "CONNECTION 6 ", timeout: 60)
        let elapsed = Date().timeIntervalSince(start)
        if code == 1008 {
            // New connections: 0.2·2^(n-1) each, at least 80 % of it (jitter): 0.16 + 0.32 + 0.64 + 1.28 + 2.56.
            #expect(elapsed >= 4.9, "6 connections in \(elapsed) s")
            #expect(credentials.values.count <= 7)  // one fresh URL per connection, none for anything else
        } else {
            // Recoveries of the same session: the first at once, then one per recovery interval.
            #expect(elapsed >= 4 * 0.5, "6 connections in \(elapsed) s")
            #expect(credentials.values.count == 1)
        }
        #expect(client.state != .stopped)
    }

    @Test func aMessageOverTheLimitFailsAtOnceAndTheConnectionStays() throws {
        let emu = try EmulatorFixture()
        let client = emu.client()
        try client.open()
        defer { client.close() }
        try client.joinGroup("g")
        let big = String(repeating: "x", count: 2 << 20)
        #expect(throws: WebPubSubError(.messageTooLarge, message: "")) {
            try client.sendToGroup("g", .text(big))
        }
        do {
            try client.sendToGroup("g", .text(big))
        } catch {
            #expect(!error.isTransient && error.ackID != nil)
        }
        try client.sendToGroup("g", .text("small"))
        #expect(client.socketsOpened == 1 && client.isConnected)
    }

    /// The emulator is gone for 15 s; with default reconnect options the client comes back by itself.
    @Test func aLongOutageIsSurvivedWithDefaultOptions() throws {
        var configuration = WebPubSubEmulator.Configuration()
        configuration.port = 0
        configuration.logger = quietLogger
        let first = WebPubSubEmulator(configuration: configuration)
        try first.start()
        let port = first.port
        let url = first.clientAccessURL(hub: "h", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        var options = EmulatorFixture.options { $0.protocolType = .json }
        options.reconnectRetryPolicy = WebPubSubClientOptions().reconnectRetryPolicy
        let client = WebPubSubClient(url: url, options: options)
        let connected = Collector<ConnectedEvent>()
        let stopped = Collector<StoppedEvent>()
        client.subscribe(.connected) { connected.append($0) }
        client.subscribe(.stopped) { stopped.append($0) }
        try client.open()
        defer { client.close() }
        first.stop()
        Thread.sleep(forTimeInterval: 15)  // the outage itself, not a check
        configuration.port = port
        let second = WebPubSubEmulator(configuration: configuration)
        try second.start()
        defer { second.stop() }
        #expect(connected.wait(count: 2, timeout: 60).count == 2)
        #expect(stopped.values.isEmpty)
        try client.sendToGroup("g", .text("back"))
    }

    @Test func aPoisonedSequenceIDDoesNotMuteTheClient() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "u")
        let got = Collector<GroupMessageEvent>()
        client.subscribe(.groupMessage) { got.append($0) }
        try client.open()
        defer { client.close() }
        try client.joinGroup("g")
        try client.sendToGroup("g", .text("before"))
        #expect(got.wait(count: 1).count == 1)
        let id = try #require(client.connectionID)
        let poison = #"{"sequenceId":18446744073709551615,"type":"message","from":"group","group":"g","dataType":"text","data":"poison"}"#
        #expect(try emu.http("POST", "/_emulator/connections/\(id)/frame", body: Data(poison.utf8)).status == 200)
        for i in 0..<5 { try client.sendToGroup("g", .text("after \(i)")) }
        let events = got.wait(count: 6)
        #expect(events.map(\.content) == [.text("before")] + (0..<5).map { .text("after \($0)") })
        #expect(client.connectionID == id)  // recovered, not replaced
    }

    /// A slow callback under a flood: reading pauses, so what waits for callbacks stays bounded,
    /// and every message still arrives.
    @Test func aSlowCallbackBoundsWhatWaits() throws {
        let emu = try EmulatorFixture()
        let receiver = emu.client(userID: "r") {
            $0.protocolType = .json
            $0.maximumPendingCallbackMessages = 50
        }
        let sender = emu.client(userID: "s")
        let got = Collector<Int>()
        receiver.subscribe(.groupMessage) { _ in
            usleep(1_000)
            got.append(1)
        }
        try receiver.open()
        try sender.open()
        defer {
            receiver.close()
            sender.close()
        }
        try receiver.joinGroup("flood")
        let count = 1500
        for i in 0..<count {
            try sender.sendToGroup("flood", .text("message \(i) " + String(repeating: "p", count: 100)), fireAndForget: true)
        }
        #expect(got.wait(count: count, timeout: 60).count == count)
        // The bound, plus what one socket read (32 KiB) holds at most.
        let mark = receiver.pendingCallbackHighWaterMark
        #expect(mark >= 50 && mark <= 50 + 32 * 1024 / 120, "high-water mark \(mark)")
        #expect(receiver.socketsOpened == 1)
    }

    @Test func aRejectedUpgradeKeepsItsStatusAndBody() throws {
        let emu = try EmulatorFixture()
        let bad = URL(string: "ws://127.0.0.1:\(emu.emulator.port)/client/hubs/h?access_token=not.a.token")!
        let client = WebPubSubClient(url: bad, options: EmulatorFixture.options())
        do {
            try client.open()
            Issue.record("open() succeeded with a malformed token")
        } catch {
            #expect(error.code == .openFailed)
            #expect(error.httpStatus == 401)
            let body = try #require(error.webSocketError?.httpBodyText)
            #expect(!body.isEmpty && error.message.contains(body.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(error.webSocketError?.code == .upgradeRejected)
        }
    }
}
