import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NIOConcurrencyHelpers
import TestSupport

@testable import WebPubSubEmulator

/// An in-process emulator on a free port, stopped at the end of `body`.
func withEmulator<T>(eventHandlers: [WebPubSubEmulator.EventHandler] = [], recorder: LogCapture = LogCapture(),
                     configure: (inout WebPubSubEmulator.Configuration) -> Void = { _ in },
                     _ body: (WebPubSubEmulator) throws -> T) throws -> T {
    var config = WebPubSubEmulator.Configuration(port: 0, eventHandlers: eventHandlers,
                                                 logger: recorder.logger(label: "emulator-test", level: .info))
    config.threads = 2
    configure(&config)
    let emulator = WebPubSubEmulator(configuration: config)
    try emulator.start()
    defer { emulator.stop() }
    return try body(emulator)
}

/// Runs conformance scenarios in a Python process and returns its output lines.
func runScenarios(_ connectionString: String, _ scenarios: [String], extra: [String] = [], timeout: TimeInterval = 90)
    throws -> [String]
{
    let peer = try PeerProcess.python("emulator_conformance.py", [connectionString] + scenarios + extra)
    defer { peer.stop() }
    guard peer.waitForExit(timeout: timeout) != nil else {
        throw ScenarioTimeout(description: "scenarios \(scenarios) timed out; output:\n" + peer.output.joined(separator: "\n"))
    }
    return peer.output
}

struct ScenarioTimeout: Error, CustomStringConvertible { var description: String }

/// Fails the test unless every scenario printed PASS.
func expectPass(_ output: [String], _ scenarios: [String]) -> Bool {
    scenarios.allSatisfy { name in output.contains("PASS \(name)") }
}

/// A small HTTP helper for hook calls from Swift.
func http(_ method: String, _ url: String, body: Data? = nil) throws -> (Int, Data) {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.httpBody = body
    request.timeoutInterval = 5
    let result = NIOLockedValueBox<(Int, Data)?>(nil)
    let done = DispatchSemaphore(value: 0)
    URLSession.shared.dataTask(with: request) { data, response, _ in
        result.withLockedValue { $0 = ((response as? HTTPURLResponse)?.statusCode ?? -1, data ?? Data()) }
        done.signal()
    }.resume()
    _ = done.wait(timeout: .now() + 10)
    return result.withLockedValue { $0 } ?? (-1, Data())
}
