import Dispatch
import Foundation
import Logging

/// Collects values from callbacks, for tests (thread-safe).
final class Collector<T: Sendable>: @unchecked Sendable {  // `items` guarded by `condition`
    private let condition = NSCondition()
    private var items: [T] = []

    func append(_ item: T) {
        condition.lock()
        items.append(item)
        condition.broadcast()
        condition.unlock()
    }

    var values: [T] { condition.lock(); defer { condition.unlock() }; return items }

    /// Waits until at least `count` items arrived; returns them (or what came within `timeout`).
    @discardableResult
    func wait(count: Int, timeout: TimeInterval = 10) -> [T] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while items.count < count {
            if !condition.wait(until: deadline) { break }
        }
        return items
    }
}

/// A logger for tests: warnings and worse only (set WPS_TEST_LOG=trace to see everything).
let quietLogger: Logger = {
    var logger = Logger(label: "WebPubSubClient.test")
    let level = ProcessInfo.processInfo.environment["WPS_TEST_LOG"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .critical
    return logger
}()

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: TimeInterval = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}

/// Polls `condition` without blocking a thread of the cooperative pool (for async tests).
func eventuallyAsync(timeout: TimeInterval = 10, _ condition: () throws -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? condition()) == true { return true }
        try? await Task.sleep(nanoseconds: 5_000_000)
    }
    return (try? condition()) == true
}

extension Collector {
    /// Waits, without blocking a thread, until at least `count` items arrived; returns them.
    func values(count: Int, timeout: TimeInterval = 10) async -> [T] {
        _ = await eventuallyAsync(timeout: timeout) { self.values.count >= count }
        return values
    }
}
