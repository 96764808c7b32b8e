//===----------------------------------------------------------------------===//
// swift-webpubsub: drives an Autobahn|Testsuite fuzzing server (or kosoku's)
// with our WebSocket client: /getCaseCount, /runCase?case=N&agent=A (echo
// every message), /updateReports?agent=A.
//===----------------------------------------------------------------------===//
import ArgumentParser
import Dispatch
import Foundation
import Logging
import WebSocket

@main
struct AutobahnClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autobahn-client",
        abstract: "Runs the Autobahn fuzzing server's cases against the WebSocket client (echo).")

    @Option(help: "The fuzzing server's URL.")
    var url: String = "ws://127.0.0.1:9001"

    @Option(help: "The agent name the reports are filed under.")
    var agent: String = "swift-webpubsub"

    @Option(help: "Cases to run, 1-based: N or N..M (default: all the server reports).")
    var cases: String?

    @Option(help: "Seconds one case may take before it is aborted.")
    var caseTimeout: Double = 120

    @Flag(help: "Print every case as it runs.")
    var verbose = false

    func run() throws {
        let count = try caseCount()
        var range = 1...max(count, 1)
        if let cases {
            let parts = cases.components(separatedBy: "..")
            guard let lo = Int(parts[0]), let hi = Int(parts.count > 1 ? parts[1] : parts[0]), lo >= 1, hi >= lo else {
                throw ValidationError("--cases must be N or N..M")
            }
            range = lo...min(hi, count)
        }
        print("autobahn-client: \(count) cases on the server; running \(range.lowerBound)...\(range.upperBound)")
        for n in range {
            let started = Date()
            let report = runSession(path: "/runCase?case=\(n)&agent=\(escaped(agent))", echo: true)
            if verbose {
                let ms = Int(Date().timeIntervalSince(started) * 1000)
                print("case \(n): \(report.map { "\($0)" } ?? "timed out") (\(ms) ms)")
            }
        }
        _ = runSession(path: "/updateReports?agent=\(escaped(agent))", echo: false)
        print("autobahn-client: reports updated for agent \(agent)")
    }

    private func escaped(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s
    }

    private func caseCount() throws -> Int {
        let box = Box()
        _ = runSession(path: "/getCaseCount", echo: false, box: box)
        guard let text = box.text, let n = Int(text) else {
            throw ValidationError("the server at \(url) did not report a case count")
        }
        return n
    }

    /// Connects to `path`, echoes messages when asked, and waits for the close.
    private func runSession(path: String, echo: Bool, box: Box = Box()) -> WebSocketCloseReport? {
        guard let u = URL(string: url + path) else { return nil }
        var config = WebSocketConfiguration()
        config.maximumMessageSize = 64 << 20
        config.maximumFrameSize = 64 << 20
        config.maximumBufferedAmount = 256 << 20
        config.connectTimeout = 10
        config.closeTimeout = 5
        let queue = DispatchQueue(label: "autobahn")
        let connection = WebSocketConnection(
            url: u, configuration: config, queue: queue,
            logger: Logger(label: "autobahn", factory: { _ in SwiftLogNoOpLogHandler() }))
        let done = DispatchSemaphore(value: 0)
        connection.connect(
            handlers: WebSocketHandlers(
                onMessage: { message in
                    if echo {
                        connection.send(message)
                    } else if case .text(let t) = message {
                        box.text = t
                    }
                },
                onClose: { report in
                    box.report = report
                    done.signal()
                }))
        if done.wait(timeout: .now() + caseTimeout) == .timedOut {
            connection.abort()
            _ = done.wait(timeout: .now() + 5)
        }
        return box.report
    }
}

/// Results handed from the connection's queue to the waiting main thread.
final class Box: @unchecked Sendable {  // written on the connection queue before `done.signal()`, read after the wait
    var text: String?
    var report: WebSocketCloseReport?
}
