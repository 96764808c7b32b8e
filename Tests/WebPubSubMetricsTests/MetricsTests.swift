import Foundation
import Logging
import MetricsTestKit
import Testing
import TestSupport
import WebPubSub
import WebPubSubEmulator
import WebPubSubMetrics

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

struct HookError: Error { var status: Int }

/// A quiet in-process emulator on a free loopback port.
func startEmulator() throws -> WebPubSubEmulator {
    var configuration = WebPubSubEmulator.Configuration()
    configuration.port = 0
    var logger = Logger(label: "emulator")
    logger.logLevel = .critical
    configuration.logger = logger
    let emulator = WebPubSubEmulator(configuration: configuration)
    try emulator.start()
    return emulator
}

private func post(_ emulator: WebPubSubEmulator, _ path: String) throws {
    var request = URLRequest(url: URL(string: emulator.endpoint + path)!)
    request.httpMethod = "POST"
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var status = 0
    URLSession.shared.dataTask(with: request) { _, response, _ in
        status = (response as? HTTPURLResponse)?.statusCode ?? 0
        done.signal()
    }.resume()
    _ = done.wait(timeout: .now() + 10)
    guard status == 200 else { throw HookError(status: status) }
}

@Suite("WebPubSubMetrics", .timeLimit(.minutes(1)))
struct MetricsTests {
    @Test func aSessionIsCountedWithTheDocumentedLabels() async throws {
        let emulator = try startEmulator()
        defer { emulator.stop() }
        let metrics = TestMetrics()
        var options = WebPubSubClientOptions()
        options.logger.logLevel = .critical
        options.messageRetryPolicy = RetryPolicy(maxRetries: 3, delay: 0.05, mode: .fixed)
        options.instrumentation = WebPubSubMetrics(dimensions: [("service", "test")], factory: metrics)
        let url = emulator.clientAccessURL(hub: "h", userID: "m", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        let client = WebPubSubClient(url: url, options: options)
        let received = LockedCount()
        client.subscribe(.groupMessage) { _ in received.add() }
        try await client.open()
        try await client.joinGroup("g")
        for i in 0..<3 { try await client.sendToGroup("g", .text("m\(i)")) }
        let id = try #require(client.connectionID)
        try post(emulator, "/_emulator/connections/\(id)/fail-acks?count=1")
        try await client.sendToGroup("g", .text("retried"))  // InternalServerError, then success
        try post(emulator, "/_emulator/connections/\(id)/drop")
        // Recovered: the next ack comes on the new socket.
        try await client.sendToGroup("g", .text("after drop"))
        #expect(await eventually { received.value == 5 })
        await client.close()

        let s = ("service", "test")
        #expect(try metrics.expectCounter("webpubsub_client_connections_opened_total", [s, ("kind", "new")]).totalValue == 1)
        #expect(try metrics.expectCounter("webpubsub_client_connections_opened_total", [s, ("kind", "recovery")]).totalValue == 1)
        #expect(try metrics.expectCounter("webpubsub_client_recoveries_total", [s]).totalValue == 1)
        #expect(try metrics.expectCounter("webpubsub_client_reconnects_total", [s]).totalValue == 0)
        #expect(try metrics.expectCounter("webpubsub_client_messages_sent_total", [s, ("operation", "sendToGroup")]).totalValue >= 6)
        #expect(try metrics.expectCounter("webpubsub_client_messages_sent_total", [s, ("operation", "joinGroup")]).totalValue == 1)
        #expect(try metrics.expectCounter("webpubsub_client_messages_received_total", [s, ("source", "group")]).totalValue == 5)
        #expect(try metrics.expectCounter("webpubsub_client_retries_total", [s, ("operation", "sendToGroup")]).totalValue >= 1)
        let acked = try metrics.expectTimer("webpubsub_client_operation_duration_seconds", [s, ("operation", "sendToGroup"), ("outcome", "success")])
        #expect(acked.values.count == 5 && acked.values.allSatisfy { $0 > 0 })
    }

    @Test func failuresAreTimedApart() async throws {
        let emulator = try startEmulator()
        defer { emulator.stop() }
        let metrics = TestMetrics()
        var options = WebPubSubClientOptions()
        options.logger.logLevel = .critical
        options.instrumentation = WebPubSubMetrics(factory: metrics)
        let url = emulator.clientAccessURL(hub: "h", roles: [])  // no permission to join
        let client = WebPubSubClient(url: url, options: options)
        try await client.open()
        await #expect(throws: WebPubSubError(.serviceError, message: "")) { try await client.joinGroup("g") }
        await client.close()
        let failed = try metrics.expectTimer("webpubsub_client_operation_duration_seconds", [("operation", "joinGroup"), ("outcome", "failure")])
        #expect(failed.values.count == 1)
    }
}

/// A count any thread may bump.
final class LockedCount: @unchecked Sendable {  // `count` guarded by `lock`
    private let lock = NSLock()
    private var count = 0
    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

/// Polls without blocking a thread of the cooperative pool.
func eventually(timeout: TimeInterval = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 5_000_000)
    }
    return condition()
}
