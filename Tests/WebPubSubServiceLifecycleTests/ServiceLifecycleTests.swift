import Foundation
import Logging
import ServiceLifecycle
import Testing
import TestSupport
import WebPubSub
import WebPubSubEmulator
import WebPubSubServiceLifecycle

private func startEmulator() throws -> WebPubSubEmulator {
    var configuration = WebPubSubEmulator.Configuration()
    configuration.port = 0
    var logger = Logger(label: "emulator")
    logger.logLevel = .critical
    configuration.logger = logger
    let emulator = WebPubSubEmulator(configuration: configuration)
    try emulator.start()
    return emulator
}

private var quiet: Logger {
    var logger = Logger(label: "lifecycle-test")
    logger.logLevel = .critical
    return logger
}

@Suite("WebPubSubService", .serialized, .timeLimit(.minutes(1)))
struct ServiceLifecycleTests {
    @Test func gracefulShutdownClosesTheClient() async throws {
        let emulator = try startEmulator()
        defer { emulator.stop() }
        var options = WebPubSubClientOptions()
        options.logger = quiet
        let client = WebPubSubClient(url: emulator.clientAccessURL(hub: "h"), options: options)
        let group = ServiceGroup(services: [WebPubSubService(client: client)], logger: quiet)
        let running = Task { try await group.run() }
        var up = false
        for _ in 0..<2000 where !up {
            up = client.isConnected
            if !up { try await Task.sleep(nanoseconds: 5_000_000) }
        }
        #expect(up)
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(client.state == .stopped)
    }

    @Test func aClientThatStopsByItselfEndsTheServiceWithAnError() async throws {
        let emulator = try startEmulator()
        var options = WebPubSubClientOptions()
        options.logger = quiet
        options.reconnectRetryPolicy = RetryPolicy(maxRetries: 1, delay: 0.05)
        options.protocolType = .json  // no recovery window: straight to reconnecting
        let client = WebPubSubClient(url: emulator.clientAccessURL(hub: "h"), options: options)
        let service = WebPubSubService(client: client)
        let running = Task { try await service.run() }
        for _ in 0..<2000 where !client.isConnected { try await Task.sleep(nanoseconds: 5_000_000) }
        emulator.stop()  // the reconnect policy runs out
        await #expect(throws: WebPubSubServiceError.self) { try await running.value }
    }

    /// The Docs/Integrations.md daemon, as a real process: SIGTERM shuts it down gracefully.
    @Test func theDocExampleStopsOnSIGTERM() throws {
        let emulator = try startEmulator()
        defer { emulator.stop() }
        let binary = TestPaths.buildProducts.appendingPathComponent("webpubsub-lifecycle-example").path
        let daemon = try PeerProcess(binary, [emulator.connectionString, "chat"])
        defer { daemon.stop() }
        _ = try daemon.waitForLine(containing: "connected ", timeout: 30)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 30) == 0, "\(daemon.output)")
        let lines = daemon.output
        let stopped = try #require(lines.firstIndex(of: "stopped"), "\(lines)")
        let down = try #require(lines.firstIndex(of: "shut down"), "\(lines)")
        #expect(stopped < down)
    }

    @Test func theDocShowsTheExample() throws {
        let source = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Sources/webpubsub-lifecycle-example/main.swift"), encoding: .utf8)
        let doc = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Docs/Integrations.md"), encoding: .utf8)
        #expect(DocSnippets.snippets(in: source).count == 1)
        #expect(DocSnippets.missing(from: doc, source: source) == [])
    }
}
