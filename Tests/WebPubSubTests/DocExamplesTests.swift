import Dispatch
import Foundation
import Logging
import Testing
import TestSupport
import WebPubSub

/// The examples of Docs/Client.md, compiled and run against the emulator. Each example sits
/// between `// snippet: NAME` and `// end snippet`; `docsShowTheseExamples` checks that the doc
/// shows every one of them verbatim, so the docs cannot rot.
@Suite("Docs/Client.md examples", .timeLimit(.minutes(1)))
struct DocExamplesTests {
    @Test func tour() throws {
        let emu = try EmulatorFixture(upstream: true)
        let fetchClientAccessURL: @Sendable () throws -> URL = { emu.url(userID: "doc") }
        let printed = Collector<String>()
        @Sendable func print(_ items: Any...) { printed.append(items.map { "\($0)" }.joined(separator: " ")) }

        // snippet: connect
        let client = WebPubSubClient(credential: {
            // Ask your server for a client access URL (it holds the access key).
            try fetchClientAccessURL()
        })
        try client.open()
        print("connected as", client.connectionID ?? "?")
        // end snippet
        defer { client.close() }

        // snippet: callbacks
        client.subscribe(.connected) { event in
            print("connected:", event.connectionID)
        }
        client.subscribe(.groupMessage) { event in
            print("\(event.group) from \(event.fromUserID ?? "?"):", event.content)
        }
        let subscription = client.subscribe(.serverMessage) { event in
            print("from the server:", event.content)
        }
        client.unsubscribe(subscription)  // its handler never runs after this returns
        client.subscribe(.disconnected) { event in
            print("lost", event.connectionID ?? "?", event.message ?? "")
        }
        client.subscribe(.stopped) { _ in print("stopped") }
        // end snippet

        // snippet: join-and-send
        try client.joinGroup("chat")
        let result = try client.sendToGroup("chat", .text("hello"))
        print("acked as", result.ackID ?? 0)
        try client.sendToGroup("chat", .json(#"{"temperature": 21.5}"#), noEcho: true)
        try client.sendToGroup("chat", .binary(Data([0x01, 0x02])), fireAndForget: true)
        try client.sendEvent("telemetry", .json(#"{"cpu": 0.93}"#))
        // end snippet

        // snippet: completion-handler
        client.sendToGroup("chat", .text("no waiting")) { result in
            switch result {
            case .success(let r): print("acked", r.ackID ?? 0)
            case .failure(let error): print("failed", error)
            }
        }
        // end snippet

        // snippet: rejoin-failure
        client.subscribe(.rejoinGroupFailed) { event in
            print("could not rejoin \(event.group): \(event.error.errorName ?? "")")
        }
        // end snippet

        // snippet: retry-with-ack-id
        do {
            try client.sendToGroup("orders", .json(#"{"id": 7}"#))
        } catch let error where error.isTransient {
            // Same ack id: if the first attempt got through, the service answers Duplicate (success).
            let again = try client.sendToGroup("orders", .json(#"{"id": 7}"#), ackID: error.ackID)
            print("duplicate:", again.isDuplicated)
        } catch {
            print("refused:", error.errorName ?? "", error.message)
        }
        // end snippet

        // snippet: retry-in-a-closure
        let worker = DispatchGroup()
        DispatchQueue.global().async(group: worker) {
            do {
                try client.sendToGroup("orders", .json(#"{"id": 8}"#))
            } catch let error as WebPubSubError where error.isTransient {
                _ = try? client.sendToGroup("orders", .json(#"{"id": 8}"#), ackID: error.ackID)
            } catch {
                print("refused:", error)
            }
        }
        worker.wait()
        // end snippet

        // snippet: recovery-events
        client.subscribe(.recovering) { event in
            print("recovering \(event.connectionID) after close \(event.closeCode)")
        }
        client.subscribe(.recovered) { event in
            print("recovered \(event.connectionID)")
        }
        client.subscribe(.disconnected) { event in
            print("gone: close \(event.closeCode ?? 0) \(event.closeReason ?? "")")
        }
        // end snippet

        // snippet: error-cause
        let rejected = WebPubSubClient(url: URL(string: "ws://127.0.0.1:\(emu.emulator.port)/client/hubs/hub?access_token=x")!)
        do {
            try rejected.open()
        } catch {
            // error.code == .openFailed; the cause stays typed.
            print("status:", error.httpStatus ?? 0, "body:", error.webSocketError?.httpBodyText ?? "")
        }
        // end snippet

        #expect(printed.wait(count: 4).contains { $0.hasPrefix("connected as ") })
        #expect(eventually { printed.values.contains("chat from doc: text(5 chars)") })
        #expect(eventually { printed.values.contains { $0.hasPrefix("acked ") } })
        #expect(printed.values.contains("acked as 1") || printed.values.contains("acked as 2"))
        #expect(!printed.values.contains { $0.hasPrefix("from the server") })
        #expect(printed.values.contains { $0.hasPrefix("status: 401 body: ") && $0.count > "status: 401 body: ".count })
    }

    @Test func optionsLifetimeLoggingThreading() throws {
        let emu = try EmulatorFixture()
        let fetchClientAccessURL: @Sendable () throws -> URL = { emu.url(userID: "doc") }

        // snippet: options
        var options = WebPubSubClientOptions()
        options.protocolType = .json  // no recovery; the default is .jsonReliable
        options.messageRetryPolicy = RetryPolicy(maxRetries: 5, delay: 0.5, mode: .exponential)
        options.ackTimeout = 10
        options.keepAliveInterval = 20
        options.keepAliveTimeout = 60
        let plainClient = WebPubSubClient(credential: fetchClientAccessURL, options: options)
        // end snippet
        try plainClient.open()
        #expect(plainClient.isConnected)

        // snippet: lifetime
        plainClient.close()  // disconnected, then stopped; pending operations fail with .stopped
        try plainClient.open()  // a closed client can be opened again; subscriptions are kept
        // end snippet
        plainClient.close()

        // snippet: logging
        var logged = WebPubSubClientOptions()
        var logger = Logger(label: "chat.webpubsub")
        logger.logLevel = .info
        logged.logger = logger
        logged.logsMessagePayloads = false  // true: payloads at trace level; access tokens are never logged
        // end snippet
        logged.logger = quietLogger
        let loggedClient = WebPubSubClient(credential: fetchClientAccessURL, options: logged)
        try loggedClient.open()
        loggedClient.close()

        let echoed = Collector<String>()
        // snippet: threading
        let callbacks = DispatchQueue(label: "chat.callbacks")
        var threaded = WebPubSubClientOptions()
        threaded.callbackQueue = callbacks  // every callback and completion, one at a time, in order
        let echo = WebPubSubClient(credential: fetchClientAccessURL, options: threaded)
        echo.subscribe(.groupMessage) { event in
            // Blocking calls work from a callback, and so does close().
            if case .text(let text) = event.content, !text.hasPrefix("echo") {
                _ = try? echo.sendToGroup(event.group, .text("echo: \(text)"))
            }
        }
        // end snippet
        echo.subscribe(.groupMessage) { event in echoed.append(event.content.text ?? "") }
        try echo.open()
        defer { echo.close() }
        try echo.joinGroup("chat")
        try echo.sendToGroup("chat", .text("ping"))
        #expect(echoed.wait(count: 2) == ["ping", "echo: ping"])
    }

    /// The README's quick start, compiled and run; `readmeShowsTheQuickStart` checks the README shows it.
    @Test func readmeQuickStart() throws {
        let emu = try EmulatorFixture()
        let fetchClientAccessURL: @Sendable () throws -> URL = { emu.url(userID: "readme") }
        let printed = Collector<String>()
        @Sendable func print(_ items: Any...) { printed.append(items.map { "\($0)" }.joined(separator: " ")) }

        // readme: begin
        let client = WebPubSubClient(credential: {
            // Ask your server for a client access URL (it holds the access key).
            try fetchClientAccessURL()
        })
        client.subscribe(.groupMessage) { event in
            print("\(event.group) from \(event.fromUserID ?? "?"):", event.content)
        }
        try client.open()
        try client.joinGroup("chat")
        let result = try client.sendToGroup("chat", .text("hello"))
        print("acked as", result.ackID ?? 0)
        client.close()
        // readme: end

        let lines = printed.wait(count: 2)
        #expect(lines.contains("acked as 2"))
        #expect(lines.contains { $0.hasPrefix("chat from readme:") })
    }

    @Test func readmeShowsTheQuickStart() throws {
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = try #require(source.range(of: "// readme: begin\n"))
        let end = try #require(source.range(of: "        // readme: end", range: begin.upperBound..<source.endIndex))
        let code = String(source[begin.upperBound..<end.lowerBound])
        #expect(Self.normalized(readme).contains(Self.normalized(code)), "README.md lacks the quick start:\n\(code)")
    }

    /// Every snippet in this file appears verbatim in Docs/Client.md.
    @Test func docsShowTheseExamples() throws {
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let doc = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Docs/Client.md"), encoding: .utf8)
        let snippets = Self.snippets(in: source)
        #expect(snippets.count == 13)
        let docCode = Self.normalized(doc)
        for (name, code) in snippets {
            #expect(docCode.contains(Self.normalized(code)), "Docs/Client.md lacks snippet '\(name)':\n\(code)")
        }
    }

    static func snippets(in source: String) -> [(String, String)] { DocSnippets.snippets(in: source) }

    static func normalized(_ text: String) -> String { DocSnippets.normalized(text) }
}
