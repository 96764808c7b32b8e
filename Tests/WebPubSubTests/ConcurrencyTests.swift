import Dispatch
import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// The async/await surface and the event streams, against the emulator.
@Suite("Client with Swift concurrency", .serialized, .timeLimit(.minutes(1)))
struct ConcurrencyTests {
    @Test func everyAsyncCallAgainstTheEmulator() async throws {
        let emu = try EmulatorFixture(upstream: true)
        let url = emu.url(userID: "a")
        let client = WebPubSubClient(credential: { () async throws -> URL in url }, options: EmulatorFixture.options())
        try await client.open()
        #expect(client.isConnected)
        try await client.joinGroup("g")
        let sent = try await client.sendToGroup("g", .text("hi"))
        #expect(sent.ackID != nil)
        try await client.sendToGroup("g", .text("ff"), fireAndForget: true)
        try await client.sendEvent("note", .json(#"{"a":1}"#))
        let answer = try await client.invokeEvent("echo", .text("ping"))
        #expect(answer.content == .text("ping"))
        try await client.leaveGroup("g")
        await client.close()
        #expect(client.state == .stopped)
        await #expect(throws: WebPubSubError(.clientClosed, message: "")) { try await client.joinGroup("g") }
    }

    @Test func cancelledBeforeSendingSendsNothing() async throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "c")
        try await client.open()
        let id = try #require(client.connectionID)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.joinGroup("never")
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        // The next operation goes through, and the cancelled one never reached the service.
        try await client.joinGroup("later")
        #expect(try emu.groups(of: id) == ["later"])
        #expect(client.pendingOperations == 0)
        await client.close()
    }

    @Test func cancelledAfterSendingFailsAndForgetsIt() async throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "c") { $0.ackTimeout = 30 }
        try await client.open()
        let id = try #require(client.connectionID)
        try emu.hook(id, "drop-acks", query: "count=1")  // executed, never acked
        let task = Task { try await client.joinGroup("sent") }
        #expect(await eventuallyAsync { try emu.groups(of: id) == ["sent"] })
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(client.pendingOperations == 0)
        // The same ack id again: the service has it already (Duplicate counts as success).
        let again = try await client.joinGroup("sent", ackID: 1)
        #expect(again.isDuplicated)
        await client.close()
    }

    @Test func cancelledDuringRecoveryIsNeverSent() async throws {
        var configuration = WebPubSubEmulator.Configuration()
        configuration.port = 0
        configuration.logger = quietLogger
        let emulator = WebPubSubEmulator(configuration: configuration)
        try emulator.start()
        let url = emulator.clientAccessURL(hub: "h", roles: ["webpubsub.joinLeaveGroup"])
        let client = WebPubSubClient(url: url, options: EmulatorFixture.options { $0.recoveryTimeout = 30; $0.recoveryRetryInterval = 0.2 })
        try await client.open()
        emulator.stop()  // the socket goes; recovery attempts are refused
        #expect(await eventuallyAsync { client.state == .recovering })
        let task = Task { try await client.joinGroup("queued") }
        #expect(await eventuallyAsync { client.pendingOperations == 1 })
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(client.pendingOperations == 0 && client.state == .recovering)
        await client.close()
    }

    @Test func aDeadlineFailsTheOperationWithTimedOut() async throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "d") { $0.ackTimeout = 30 }
        try await client.open()
        let id = try #require(client.connectionID)
        try emu.hook(id, "drop-acks", query: "count=3")
        await #expect(throws: WebPubSubError(.timedOut, message: "")) { try await client.joinGroup("slow", timeout: 0.3) }
        // The blocking and completion forms take the same deadline.
        let blocking = Collector<WebPubSubError.Code>()
        DispatchQueue.global().async {
            do { try client.joinGroup("slow2", timeout: 0.3) } catch let e as WebPubSubError { blocking.append(e.code) } catch {}
        }
        #expect(await blocking.values(count: 1) == [.timedOut])
        let done = Collector<WebPubSubError.Code>()
        client.joinGroup("slow3", timeout: 0.3) { if case .failure(let e) = $0 { done.append(e.code) } }
        #expect(await done.values(count: 1) == [.timedOut])
        #expect(client.pendingOperations == 0)
        await client.close()
    }

    @Test func aCompletionFormCanBeCancelledWithItsHandle() throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "h") { $0.ackTimeout = 30 }
        try client.open()
        defer { client.close() }
        let id = try #require(client.connectionID)
        try emu.hook(id, "drop-acks", query: "count=1")
        let done = Collector<WebPubSubError.Code>()
        let handle = client.joinGroup("h") { if case .failure(let e) = $0 { done.append(e.code) } }
        #expect(eventually { (try? emu.groups(of: id)) == ["h"] })
        handle.cancel()
        handle.cancel()
        #expect(done.wait(count: 1) == [.cancelled])
        Thread.sleep(forTimeInterval: 0.2)
        #expect(done.values.count == 1 && client.pendingOperations == 0)
    }

    @Test func eventStreamsAreInOrderAndEndWhenTheClientStops() async throws {
        let emu = try EmulatorFixture()
        let receiver = emu.client(userID: "r")
        let sender = emu.client(userID: "s")
        try await receiver.open()
        try await sender.open()
        try await receiver.joinGroup("g")
        // Subscribed now, before anything is sent (a stream subscribes when its iterator is made).
        let subscribed = receiver.events(.groupMessage).makeAsyncIterator()
        let consumer = Task {
            var iterator = subscribed
            var texts: [String] = []
            while let event = await iterator.next() { texts.append(event.content.text ?? "") }
            return texts  // ends with the client
        }
        for i in 0..<50 { try await sender.sendToGroup("g", .text("m\(i)")) }
        // Every message reached the stream before close (the stream is fed through the callback queue).
        let all = (0..<50).map { "m\($0)" }
        let probe = Collector<String>()
        receiver.subscribe(.groupMessage) { probe.append($0.content.text ?? "") }
        try await sender.sendToGroup("g", .text("last"))
        #expect(await eventuallyAsync { probe.values.contains("last") })
        await receiver.close()
        #expect(await consumer.value == all + ["last"])
        await sender.close()
    }

    @Test func aCancelledConsumerEndsItsStream() async throws {
        let emu = try EmulatorFixture()
        let client = emu.client(userID: "x")
        try await client.open()
        let consumer = Task {
            var n = 0
            for await _ in client.events(.groupMessage) { n += 1 }
            return n
        }
        consumer.cancel()
        #expect(await consumer.value == 0)
        await client.close()
    }

    /// A consumer slower than the publisher: the stream holds at most its buffer, the callback
    /// backlog at most its limit, and nothing is lost.
    @Test func aSlowConsumerIsBounded() async throws {
        let emu = try EmulatorFixture()
        let receiver = emu.client(userID: "r") {
            $0.protocolType = .json
            $0.maximumPendingCallbackMessages = 40
        }
        let sender = emu.client(userID: "s")
        try await receiver.open()
        try await sender.open()
        try await receiver.joinGroup("f")
        let count = 600
        let subscribed = receiver.events(.groupMessage, bufferSize: 8).makeAsyncIterator()
        let consumer = Task {
            var iterator = subscribed
            var seen = 0
            while await iterator.next() != nil {
                seen += 1
                try? await Task.sleep(nanoseconds: 1_000_000)
                if seen == count { break }
            }
            return seen
        }
        for i in 0..<count { try await sender.sendToGroup("f", .text("m\(i) " + String(repeating: "x", count: 100)), fireAndForget: true) }
        #expect(await consumer.value == count)
        let mark = receiver.pendingCallbackHighWaterMark
        #expect(mark <= 40 + 32 * 1024 / 120, "high-water mark \(mark)")
        await receiver.close()
        await sender.close()
    }
}
