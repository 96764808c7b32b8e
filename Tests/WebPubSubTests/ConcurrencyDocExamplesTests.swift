import Foundation
import Testing
import TestSupport
import WebPubSub
import WebPubSubEmulator

/// The async examples of Docs/Client.md ("Swift concurrency") and of the DocC catalog, compiled and
/// run against the emulator; `everyCatalogExampleIsCompiled` checks the catalog shows only compiled code.
@Suite("Concurrency doc examples", .serialized, .timeLimit(.minutes(1)))
struct ConcurrencyDocExamplesTests {
    @Test func asyncTour() async throws {
        let emu = try EmulatorFixture()
        let fetchClientAccessURL: @Sendable () async throws -> URL = { emu.url(userID: "async") }
        let printed = Collector<String>()
        @Sendable func print(_ items: Any...) { printed.append(items.map { "\($0)" }.joined(separator: " ")) }

        // snippet: async-connect
        let client = WebPubSubClient(credential: {
            try await fetchClientAccessURL()  // an async credential: awaited on open and every reconnect
        })
        try await client.open()
        try await client.joinGroup("chat")
        try await client.sendToGroup("chat", .text("hello"), timeout: 10)
        // end snippet

        // snippet: async-events
        let messages = Task {
            for await message in client.events(.groupMessage) {
                print("\(message.group):", message.content.text ?? "")
            }
            print("the stream ended")  // the client stopped
        }
        // end snippet

        // The stream subscribes when its loop starts, in its own task: publish until it has seen one.
        var streamed = false
        for _ in 0..<100 where !streamed {
            try await client.sendToGroup("chat", .text("streamed"))
            streamed = await eventuallyAsync(timeout: 0.1) { printed.values.contains("chat: streamed") }
        }
        #expect(streamed)

        // snippet: async-cancel
        let send = Task { try await client.sendToGroup("chat", .text("maybe")) }
        send.cancel()
        do {
            _ = try await send.value
        } catch is CancellationError {
            print("cancelled: not sent, or sent and no longer awaited")
        } catch {
            print("failed:", error)
        }
        // end snippet

        // snippet: async-close
        await client.close()
        await messages.value
        // end snippet
        #expect(printed.values.contains("the stream ended"))
    }

    @Test func docsShowTheseExamples() throws {
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let doc = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Docs/Client.md"), encoding: .utf8)
        #expect(DocSnippets.snippets(in: source).count == 4)
        #expect(DocSnippets.missing(from: doc, source: source) == [])
    }

    /// Every Swift code block of the DocC catalog is one of the compiled examples of the package.
    @Test func everyCatalogExampleIsCompiled() throws {
        let root = TestPaths.packageRoot
        var compiled: [String] = []
        for file in ["Tests/WebPubSubTests/DocExamplesTests.swift", "Tests/WebPubSubTests/ConcurrencyDocExamplesTests.swift",
                     "Tests/WebPubSubTests/ClientCredentialTests.swift", "Sources/webpubsub-lifecycle-example/main.swift"] {
            let source = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            compiled += DocSnippets.snippets(in: source).map { DocSnippets.normalized($0.1) }
        }
        let catalog = root.appendingPathComponent("Sources/WebPubSub/Documentation.docc")
        let articles = try FileManager.default.contentsOfDirectory(atPath: catalog.path).filter { $0.hasSuffix(".md") }
        #expect(articles.count >= 7)
        var blocks = 0
        for article in articles {
            let text = try String(contentsOf: catalog.appendingPathComponent(article), encoding: .utf8)
            for block in text.components(separatedBy: "```swift\n").dropFirst() {
                let code = DocSnippets.normalized(String(block.prefix { _ in true }.components(separatedBy: "\n```")[0]))
                blocks += 1
                #expect(compiled.contains(code), "\(article) shows code that no test compiles:\n\(code)")
            }
        }
        #expect(blocks >= 8)
    }
}
