import Dispatch
import Foundation
import Logging
import TestSupport
import WebSocket

/// Records a connection's events and lets a test wait for them.
final class Recorder: @unchecked Sendable {  // all fields guarded by `cond`
    enum Event: Sendable {
        case open(WebSocketHandshakeResponse)
        case message(WebSocketMessage)
        case pong([UInt8])
        case close(WebSocketCloseReport)
    }

    private let cond = NSCondition()
    private var _events: [Event] = []
    /// Echo every message back through this connection (set before connecting).
    var echoTarget: WebSocketConnection?

    var events: [Event] {
        cond.lock()
        defer { cond.unlock() }
        return _events
    }

    private func record(_ e: Event) {
        cond.lock()
        _events.append(e)
        cond.broadcast()
        cond.unlock()
    }

    var handlers: WebSocketHandlers {
        WebSocketHandlers(
            onOpen: { self.record(.open($0)) },
            onMessage: { m in
                self.record(.message(m))
                self.echoTarget?.send(m)
            },
            onPong: { self.record(.pong($0)) },
            onClose: { self.record(.close($0)) })
    }

    /// Waits until `predicate` holds for the events so far.
    @discardableResult
    func wait(timeout: TimeInterval = 10, until predicate: ([Event]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        cond.lock()
        defer { cond.unlock() }
        while !predicate(_events) {
            if !cond.wait(until: deadline) { return predicate(_events) }
        }
        return true
    }

    var messages: [WebSocketMessage] {
        events.compactMap { if case .message(let m) = $0 { return m } else { return nil } }
    }
    var report: WebSocketCloseReport? {
        for e in events { if case .close(let r) = e { return r } }
        return nil
    }
    var opened: WebSocketHandshakeResponse? {
        for e in events { if case .open(let r) = e { return r } }
        return nil
    }
    var openCount: Int { events.filter { if case .open = $0 { return true } else { return false } }.count }
    var closeCount: Int { events.filter { if case .close = $0 { return true } else { return false } }.count }

    /// Waits for the close report.
    func waitForClose(timeout: TimeInterval = 10) -> WebSocketCloseReport? {
        wait(timeout: timeout) { $0.contains { if case .close = $0 { return true } else { return false } } }
        return report
    }
    func waitForOpen(timeout: TimeInterval = 10) -> Bool {
        wait(timeout: timeout) {
            $0.contains {
                switch $0 {
                case .open, .close: return true
                default: return false
                }
            }
        }
        return opened != nil
    }
    func waitForMessages(_ n: Int, timeout: TimeInterval = 10) -> [WebSocketMessage] {
        wait(timeout: timeout) { evs in
            evs.filter { if case .message = $0 { return true } else { return false } }.count >= n
                || evs.contains { if case .close = $0 { return true } else { return false } }
        }
        return messages
    }
}

/// Connects to `url` and returns the connection with its recorder.
func startConnection(
    _ url: String, configuration: WebSocketConfiguration = .init(), echo: Bool = false
) -> (WebSocketConnection, Recorder) {
    var config = configuration
    if config.connectTimeout == 30 { config.connectTimeout = 5 }
    if config.closeTimeout == 5 { config.closeTimeout = 2 }
    let c = WebSocketConnection(
        url: URL(string: url)!, configuration: config, queue: DispatchQueue(label: "ws-test"), logger: testLogger)
    let r = Recorder()
    if echo { r.echoTarget = c }
    c.connect(handlers: r.handlers)
    return (c, r)
}

/// A peer from Tests/Peers/ws_peer.py and its port.
func startPeer(_ mode: String, _ extra: [String] = []) throws -> (PeerProcess, Int) {
    let p = try PeerProcess.python("ws_peer.py", [mode] + extra)
    let port = Int(try p.value(after: "PORT ", timeout: 20))!
    return (p, port)
}

/// Open descriptors of this process.
func openFDCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Threads of this process (from /proc/self/status).
func threadCount() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in s.split(separator: "\n") where line.hasPrefix("Threads:") {
        return Int(line.dropFirst(8).trimmingCharacters(in: .whitespaces)) ?? -1
    }
    return -1
}

/// Descriptors of this process that are TCP sockets to or from one of `ports` on loopback.
func socketsTouching(ports: Set<Int>) -> Int {
    var inodes = Set<String>()
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let cols = line.split(separator: " ", omittingEmptySubsequences: true)
            guard cols.count > 9 else { continue }
            let remotePort = Int(cols[2].split(separator: ":").last ?? "", radix: 16) ?? -1
            if ports.contains(remotePort) { inodes.insert(String(cols[9])) }
        }
    }
    guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return -1 }
    var n = 0
    for fd in fds {
        guard let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else {
            continue
        }
        if dest.hasPrefix("socket:["), inodes.contains(String(dest.dropFirst(8).dropLast())) { n += 1 }
    }
    return n
}

/// Logs to stderr at trace level when WS_DEBUG is set, else nowhere.
let testLogger: Logger = {
    if ProcessInfo.processInfo.environment["WS_DEBUG"] != nil {
        var l = Logger(label: "ws-test", factory: { StreamLogHandler.standardError(label: $0) })
        l.logLevel = .trace
        return l
    }
    return Logger(label: "ws-test", factory: { _ in SwiftLogNoOpLogHandler() })
}()
