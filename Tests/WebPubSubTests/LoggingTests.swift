import Foundation
import Logging
import Testing
import TestSupport

@testable import WebPubSub

@Suite("Logging", .timeLimit(.minutes(1)))
struct LoggingTests {
    @Test(arguments: [false, true])
    func accessTokensAreNeverLoggedAndPayloadsOnlyWhenAsked(_ payloads: Bool) throws {
        let emu = try EmulatorFixture()
        let handler = LogCapture()
        let url = emu.url(userID: "u")
        let token = try #require(URLComponents(url: url, resolvingAgainstBaseURL: false)?.queryItems?.first { $0.name == "access_token" }?.value)
        var options = EmulatorFixture.options()
        options.logger = Logger(label: "capture", factory: { _ in CapturingLogHandler(handler) })
        options.logger.logLevel = .trace
        options.logsMessagePayloads = payloads
        let client = WebPubSubClient(url: url, options: options)
        try client.open()
        try client.joinGroup("g")
        try client.sendToGroup("g", .text("secret payload"))
        // A drop and a recovery log the recovery URL path too (with the reconnection token in its query).
        try emu.hook(try #require(client.connectionID), "drop")
        #expect(eventually { client.socketsOpened == 2 && client.isConnected })
        client.close()
        let lines = handler.lines
        #expect(!lines.isEmpty)
        #expect(!lines.contains { $0.contains(token) }, "the access token was logged")
        #expect(!lines.contains { $0.contains("access_token=") })
        #expect(!lines.contains { $0.contains("awps_reconnection_token=") })
        #expect(lines.contains { $0.contains("secret payload") } == payloads)
        #expect(lines.contains { $0.contains("?<redacted>") })
    }
}
