//===----------------------------------------------------------------------===//
// Idle clients: N reliable clients opened in one burst in this process, then
// left alone. Reports the peak thread count during the burst (/proc/self/status
// sampled every 2 ms), the process's CPU over the idle period, and resident
// memory per client.
//===----------------------------------------------------------------------===//
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import EmulatorLauncher
import Foundation
import Synchronization
import WebPubSub

/// A field of /proc/self/status (kB for memory, a count for Threads).
func procStatus(_ key: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
        return Int(line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 0
    }
    return 0
}

/// Raises the soft RLIMIT_NOFILE to the hard limit when `needed` descriptors are more than it allows (child
/// processes, the emulator among them, inherit it), and says so on stderr; warns when even the hard limit is short.
func raiseDescriptorLimit(needed: Int) {
    var rl = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return }
    let before = rl.rlim_cur
    if rl.rlim_cur < rlim_t(needed) && rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) != 0 { _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) }
    }
    var note = "descriptors: soft limit \(rl.rlim_cur)"
    if rl.rlim_cur != before { note += " (raised from \(before))" }
    note += ", hard \(rl.rlim_max), about \(needed) needed"
    if rl.rlim_cur < rlim_t(needed) { note += ": too few, opens may fail" }
    FileHandle.standardError.write(Data((note + "\n").utf8))
}

/// "Max open files" (soft) of a process, from /proc/PID/limits.
func openFilesLimit(pid: Int32) -> String {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8) else { return "?" }
    for line in text.split(separator: "\n") where line.hasPrefix("Max open files") {
        return String(line.dropFirst("Max open files".count).split(separator: " ").first ?? "?")
    }
    return "?"
}

struct IdleResult {
    var clients = 0
    var opened = 0
    var peakThreads = 0
    var threadsBefore = 0
    var idleThreads = 0
    var idleCPUPercent = 0.0
    var idleSeconds = 0.0
    var rssPerClientKB = 0.0

    func print() {
        Swift.print("")
        Swift.print("\(clients) idle reliable clients in one process (\(opened) opened):")
        Swift.print("| measure | value |")
        Swift.print("|---|---:|")
        Swift.print("| peak threads during the open burst (before: \(threadsBefore)) | \(peakThreads) |")
        Swift.print("| threads while idle | \(idleThreads) |")
        Swift.print(String(format: "| CPU over %.0f s idle (%% of one core) | %.1f |", idleSeconds, idleCPUPercent))
        Swift.print(String(format: "| resident memory per client (KB) | %.1f |", rssPerClientKB))
    }
}

func idlePhase(emulator: EmulatorProcess, clients count: Int, idleSeconds: Double) throws -> IdleResult {
    var result = IdleResult()
    result.clients = count
    FileHandle.standardError.write(Data(("open files limit: bench \(openFilesLimit(pid: getpid())), "
        + "emulator \(openFilesLimit(pid: emulator.processIdentifier))\n").utf8))
    let credential = try WebPubSubClientCredential(
        connectionString: emulator.connectionString, hub: "bench_idle", userID: "idle",
        roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
    let rssBefore = procStatus("VmRSS")
    result.threadsBefore = procStatus("Threads")
    let peak = AtomicCount()
    let sampling = AtomicCount()
    sampling.value.store(1, ordering: .relaxed)
    let sampler = Thread {
        while sampling.value.load(ordering: .relaxed) == 1 {
            let t = procStatus("Threads")
            if t > peak.value.load(ordering: .relaxed) { peak.value.store(t, ordering: .relaxed) }
            usleep(2_000)
        }
    }
    sampler.start()
    var options = WebPubSubClientOptions()
    options.logger.logLevel = .critical
    let clients = (0..<count).map { _ in WebPubSubClient(credential: credential, options: options) }
    let opened = DispatchGroup()
    let ok = AtomicCount()
    for c in clients {
        opened.enter()
        c.open { r in
            if case .success = r { ok.value.add(1, ordering: .relaxed) }
            opened.leave()
        }
    }
    _ = opened.wait(timeout: .now() + 300)
    usleep(500_000)
    sampling.value.store(0, ordering: .relaxed)
    result.opened = ok.value.load(ordering: .relaxed)
    result.peakThreads = peak.value.load(ordering: .relaxed)
    result.rssPerClientKB = Double(procStatus("VmRSS") - rssBefore) / Double(max(1, count))
    let before = Usage.now()
    usleep(UInt32(idleSeconds * 1e6))
    let u = Usage.now() - before
    result.idleSeconds = Double(u.nanoseconds) / 1e9
    result.idleCPUPercent = u.cpuMicroseconds / (Double(u.nanoseconds) / 1e3) * 100
    result.idleThreads = procStatus("Threads")
    let closed = DispatchGroup()
    for c in clients {
        closed.enter()
        c.close { closed.leave() }
    }
    _ = closed.wait(timeout: .now() + 120)
    return result
}
