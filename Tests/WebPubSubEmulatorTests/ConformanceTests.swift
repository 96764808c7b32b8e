import Foundation
import Testing
import TestSupport

@testable import WebPubSubEmulator

/// The emulator driven by the official Python SDKs (`azure-messaging-webpubsubclient` 1.1.0 and
/// `azure-messaging-webpubsubservice` 1.3.0) through Tests/Peers/emulator_conformance.py.
/// Serialized: the machine is small and the scenarios measure reconnect timings.
@Suite(.serialized) struct ConformanceTests {
    @Test(arguments: ["handshake", "acks", "fanout", "recovery", "dead_session", "kick", "reliable_raw", "nonreliable", "rest", "hooks", "aio", "ordering"])
    func scenario(_ name: String) throws {
        let output = try withEmulator { try runScenarios($0.connectionString, [name]) }
        #expect(expectPass(output, [name]), "\(output.joined(separator: "\n"))")
    }

    @Test func badInputIsRefusedLoggedAndOthersKeepWorking() throws {
        let recorder = LogCapture()
        let output = try withEmulator(recorder: recorder) { try runScenarios($0.connectionString, ["bad_input"]) }
        #expect(expectPass(output, ["bad_input"]), "\(output.joined(separator: "\n"))")
        #expect(recorder.contains("invalid client message"))
        #expect(recorder.contains("closing connection for bad input"))
        #expect(recorder.contains("client connection refused"))
        #expect(recorder.contains("REST request failed"))
        // Tokens never reach the log.
        #expect(!recorder.lines.contains { $0.contains("access_token=ey") || $0.contains("Bearer ey") })
    }

    @Test func recoveryWindowEndsTheSession() throws {
        let output = try withEmulator(configure: { $0.recoveryWindow = 3 }) {
            try runScenarios($0.connectionString, ["recovery_window"])
        }
        #expect(expectPass(output, ["recovery_window"]), "\(output.joined(separator: "\n"))")
    }

    @Test func aClientThatStopsReadingIsClosedAsASlowClient() throws {
        let recorder = LogCapture()
        let output = try withEmulator(recorder: recorder, configure: { $0.outboundBufferLimit = 1 << 20 }) {
            try runScenarios($0.connectionString, ["slow_client"])
        }
        #expect(expectPass(output, ["slow_client"]), "\(output.joined(separator: "\n"))")
        #expect(recorder.contains("slow client; closing connection"))
    }

    @Test func upstreamEventsThroughARealHTTPHandler() throws {
        let upstream = try PeerProcess.python("upstream_server.py", [WebPubSubEmulator.defaultAccessKey])
        defer { upstream.stop() }
        let port = try upstream.value(after: "READY ", timeout: 20)
        let handler = WebPubSubEmulator.EventHandler(hub: "*", urlTemplate: "http://127.0.0.1:\(port)/eventhandler/{hub}/{event}")
        let output = try withEmulator(eventHandlers: [handler]) {
            try runScenarios($0.connectionString, ["events", "connect_reject"], extra: ["--upstream=http://127.0.0.1:\(port)"])
        }
        #expect(expectPass(output, ["events", "connect_reject"]), "\(output.joined(separator: "\n"))")
    }
}

@Suite struct ShutdownTests {
    @Test func stopClosesLiveConnectionsWith1001() throws {
        let emulator = WebPubSubEmulator(configuration: .init(port: 0))
        try emulator.start()
        defer { emulator.stop() }
        let peer = try PeerProcess.python("emulator_conformance.py", [emulator.connectionString, "shutdown"])
        defer { peer.stop() }
        try peer.waitForLine(containing: "CONNECTED", timeout: 30)
        emulator.stop()
        #expect(peer.waitForExit(timeout: 20) == 0, "\(peer.output.joined(separator: "\n"))")
        #expect(peer.output.contains("PASS shutdown"), "\(peer.output.joined(separator: "\n"))")
    }
}
