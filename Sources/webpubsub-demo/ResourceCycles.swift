//===----------------------------------------------------------------------===//
// webpubsub-demo --cycles N: the resource check of long runs (make soak-resources).
// N times: a new client opens, joins a group, publishes one acked message and
// closes. Descriptors, threads and resident memory of this process and of the
// emulator process are read from /proc before (after a warm-up) and after; the
// run passes when descriptors and threads are back where they started and
// memory grew by less than max(16 MiB, 25 %) (threads: at most 2 more, Dispatch's
// worker pool).
//===----------------------------------------------------------------------===//
import Dispatch
import EmulatorLauncher
import Foundation
import Logging
import WebPubSub

enum ResourceCycles {
    struct Snapshot: CustomStringConvertible {
        var descriptors: Int
        var threads: Int
        var rssKiB: Int
        var description: String { "\(descriptors) descriptors, \(threads) threads, \(rssKiB / 1024) MiB resident" }

        init(pid: String) {
            descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            func field(_ name: String) -> Int {
                for line in status.split(separator: "\n") where line.hasPrefix(name) {
                    return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
                        ?? Int(line.dropFirst(name.count).trimmingCharacters(in: .whitespaces)) ?? -1
                }
                return -1
            }
            threads = Int(status.split(separator: "\n").first { $0.hasPrefix("Threads:") }?
                .dropFirst(8).trimmingCharacters(in: .whitespaces) ?? "") ?? -1
            rssKiB = field("VmRSS:")
        }
    }

    /// Memory may settle a little higher after the first thousands of connections (allocator arenas, caches):
    /// growth beyond max(16 MiB, 25 %) counts as a leak.
    static func memoryOK(_ before: Snapshot, _ after: Snapshot) -> Bool {
        after.rssKiB - before.rssKiB <= max(16 * 1024, before.rssKiB / 4)
    }

    static func cycle(_ url: URL, _ n: Int, options: WebPubSubClientOptions) throws {
        let client = WebPubSubClient(url: url, options: options)
        try client.open()
        _ = try client.joinGroup("cycles")
        _ = try client.sendToGroup("cycles", .text("cycle \(n)"))
        client.close()
    }

    static func run(emulatorPath: String, cycles count: Int) throws -> Bool {
        let emulator = try EmulatorProcess(path: emulatorPath)
        emulator.stopOnInterrupt()
        defer { emulator.stop() }
        let url = try emulator.clientAccessURL(hub: "cycles", user: "cycler")
        var quiet = Logger(label: "cycles")
        quiet.logLevel = .critical
        let options = { () -> WebPubSubClientOptions in
            var o = WebPubSubClientOptions()
            o.logger = quiet
            return o
        }()
        let me = "self", them = "\(emulator.processIdentifier)"
        print("resource check: \(count) client open/join/send/close cycles against \(emulator.endpoint)")

        let lanes = 4
        let failures = LockedCounter()
        func cycles(_ range: Range<Int>) {
            DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                var n = range.lowerBound + lane
                while n < range.upperBound {
                    do { try cycle(url, n, options: options) } catch { failures.increment() }
                    n += lanes
                }
            }
        }
        // Warm-up with the same lanes: lazily made pools, caches and Dispatch worker threads exist before the
        // baseline.
        cycles(0..<200)
        let settle = { (baseline: (Snapshot, Snapshot)?) -> (Snapshot, Snapshot) in
            // Closed sockets and idle workers go away asynchronously: wait (bounded, 60 s) until the emulator
            // holds no connection and the counts held still for a second (and, after the run, until they are
            // back at the baseline: Dispatch retires idle worker threads only after a while).
            var last = (Snapshot(pid: me), Snapshot(pid: them))
            var still = 0
            for _ in 0..<300 {
                Thread.sleep(forTimeInterval: 0.2)
                let stats = (try? emulator.stats()) ?? [:]
                let now = (Snapshot(pid: me), Snapshot(pid: them))
                let same = now.0.descriptors == last.0.descriptors && now.1.descriptors == last.1.descriptors
                    && now.0.threads == last.0.threads && now.1.threads == last.1.threads
                still = (stats["connections"] as? Int) == 0 && same ? still + 1 : 0
                last = now
                let home = baseline.map { b in
                    now.0.descriptors <= b.0.descriptors && now.1.descriptors <= b.1.descriptors
                        && now.0.threads <= b.0.threads + 2 && now.1.threads <= b.1.threads + 2
                } ?? true
                if still >= 5 && home { break }
            }
            return last
        }
        let before = settle(nil)
        print("before: client  \(before.0)\n        emulator \(before.1)")

        let start = Date()
        cycles(200..<(200 + count))
        let seconds = Date().timeIntervalSince(start)
        let settled = Date()
        let after = settle(before)
        print(String(format: "settled %.1f s after the last cycle", Date().timeIntervalSince(settled)))
        print("after:  client  \(after.0)\n        emulator \(after.1)")
        let stats = (try? emulator.stats()) ?? [:]
        print(String(format: "%d cycles in %.1f s (%.0f/s), %d failed; emulator connectionsOpened %@, connections now %@",
                     count, seconds, Double(count) / seconds, failures.value,
                     "\(stats["connectionsOpened"] ?? "?")", "\(stats["connections"] ?? "?")"))
        var ok = failures.value == 0
        for (name, b, a) in [("client", before.0, after.0), ("emulator", before.1, after.1)] {
            // Dispatch's worker pool may keep a thread or two more or fewer between two idle moments.
            let fine = a.descriptors <= b.descriptors && a.threads <= b.threads + 2 && memoryOK(b, a)
            print("\(name): descriptors \(b.descriptors) → \(a.descriptors), threads \(b.threads) → \(a.threads), "
                  + "resident \(b.rssKiB / 1024) → \(a.rssKiB / 1024) MiB: \(fine ? "back where it started" : "GREW")")
            ok = ok && fine
        }
        print(ok ? "RESULT: resources back where they started" : "RESULT: FAILED")
        return ok
    }
}

/// A counter shared by the cycle lanes.
final class LockedCounter: @unchecked Sendable {  // `count` guarded by `lock`
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
