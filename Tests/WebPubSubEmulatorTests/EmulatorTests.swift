import Foundation
import Testing
import TestSupport

@testable import WebPubSubEmulator

/// The in-process API and the executable.
@Suite struct EmulatorTests {
    @Test func startsOnAFreePortAndStops() throws {
        let emulator = WebPubSubEmulator(configuration: .init(port: 0))
        try emulator.start()
        #expect(emulator.port > 0)
        #expect(emulator.endpoint == "http://127.0.0.1:\(emulator.port)")
        #expect(emulator.connectionString == "Endpoint=http://127.0.0.1:\(emulator.port);AccessKey=\(WebPubSubEmulator.defaultAccessKey);Version=1.0;")
        let url = emulator.clientAccessURL(hub: "Chat", userID: "u", roles: ["webpubsub.joinLeaveGroup"])
        #expect(url.absoluteString.hasPrefix("ws://127.0.0.1:\(emulator.port)/client/hubs/Chat?access_token="))
        let (status, body) = try http("GET", emulator.endpoint + "/_emulator/stats")
        #expect(status == 200)
        let stats = try JSONSerialization.jsonObject(with: body) as? [String: Int]
        #expect(stats?["connections"] == 0 && stats?["groupMessagesPublished"] == 0)
        #expect(try http("POST", emulator.endpoint + "/_emulator/connections/nope/drop").0 == 404)
        #expect(try http("HEAD", emulator.endpoint + "/api/health").0 == 200)
        emulator.stop()
        emulator.stop()  // idempotent
        #expect(try http("GET", emulator.endpoint + "/_emulator/stats").0 != 200)
    }

    @Test func defaultsMatchMicrosoftsEmulator() {
        let c = WebPubSubEmulator.Configuration()
        #expect(c.port == 8080 && c.host == "127.0.0.1" && c.accessKey == "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH")
        #expect(c.recoveryWindow == 30 && c.maxMessageSize == 1 << 20 && c.ackMemoryCapacity == 1000)
        #expect(WebPubSubEmulator.EventHandler(argument: "*=http://h/{hub}/{event}")?.hub == "*")
        #expect(WebPubSubEmulator.EventHandler(argument: "nohandler") == nil)
    }

    static var executable: String { TestPaths.buildProducts.appendingPathComponent("webpubsub-emulator").path }

    @Test func executablePrintsItsConnectionStringAndStopsOnSIGTERM() throws {
        let process = try PeerProcess(Self.executable, ["--port", "0", "--log-level", "warning"])
        defer { process.stop() }
        let line = try process.waitForLine(containing: "Endpoint=", timeout: 20)
        let match = line.wholeMatch(of: /Endpoint=http:\/\/127\.0\.0\.1:(\d+);AccessKey=([A-Z0-9]+);Version=1\.0;/)
        #expect(match != nil, "ready line: \(line)")
        let port = Int(match?.output.1 ?? "0") ?? 0
        #expect(port > 0)
        #expect(try http("HEAD", "http://127.0.0.1:\(port)/api/health").0 == 200)
        kill(process.process.processIdentifier, SIGTERM)
        #expect(process.waitForExit(timeout: 10) == 0)
    }

    @Test func executableTokenCommand() throws {
        let process = try PeerProcess(Self.executable, ["token", "--hub", "Chat", "--user", "u1", "--role", "webpubsub.sendToGroup",
                                                        "--group", "g", "--minutes", "5"])
        defer { process.stop() }
        #expect(process.waitForExit(timeout: 20) == 0)
        let line = try process.waitForLine(containing: "ws://")
        #expect(line.hasPrefix("ws://localhost:8080/client/hubs/Chat?access_token="))
        let token = String(line.split(separator: "=", maxSplits: 1)[1])
        let claims = try AccessTokenCodec(accessKey: WebPubSubEmulator.defaultAccessKey).verify(token) {
            Audience.matchesClient(aud: $0, host: "localhost:8080", hub: "Chat")
        }
        #expect(claims.userID == "u1" && claims.roles == ["webpubsub.sendToGroup"] && claims.groups == ["g"])
        #expect(claims.expires - Int(Date().timeIntervalSince1970) <= 300)
    }
}

@Suite struct FanOutLoadTests {
    @Test(arguments: [true, false])
    func smallLoadDeliversEverything(_ reliable: Bool) throws {
        try withEmulator { emulator in
            var options = FanOutLoad.Options()
            options.receivers = 20
            options.messages = 200
            options.reliable = reliable
            options.timeout = 30
            let result = try FanOutLoad.run(endpoint: emulator.endpoint, accessKey: emulator.configuration.accessKey,
                                            options: options)
            #expect(result.complete, "\(result)")
            let stats = try JSONSerialization.jsonObject(with: Data(emulator.statsJSON().utf8)) as? [String: Int]
            #expect(stats?["groupMessagesPublished"] == 200 && stats?["messagesOut"] == 4000)
        }
    }
}
