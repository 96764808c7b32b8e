import Foundation
import Testing
import TestSupport

@testable import WebPubSubEmulator

#if canImport(Glibc)
import Glibc
#endif

/// Issue 10: hostile input against the real `webpubsub-emulator` process. Each test sends what used to crash
/// the process, hold its sockets or grow it without bound, then checks the documented answer and that the
/// process still serves (`HEAD /api/health`). Loopback only; every process is stopped.
@Suite("Hostile input (emulator process)", .serialized, .timeLimit(.minutes(3)))
struct HostileEmulatorTests {
    let key = WebPubSubEmulator.defaultAccessKey

    /// A running emulator executable and its port.
    final class Running {
        let process: PeerProcess
        let port: Int
        init(_ arguments: [String]) throws {
            process = try PeerProcess(EmulatorTests.executable, ["--port", "0", "--log-level", "info"] + arguments)
            let line = try process.waitForLine(containing: "Endpoint=", timeout: 20)
            guard let m = line.firstMatch(of: /:(\d+);AccessKey/), let p = Int(m.output.1) else {
                throw HostileTestError("no port in \(line)")
            }
            port = p
        }
        deinit { process.stop() }
        var alive: Bool { (try? RawHTTP.request(port: port, "HEAD /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status) == 200 }
    }

    func restToken(_ port: Int, path: String = "/api/hubs/h/") -> String {
        AccessTokenCodec(accessKey: key).sign(
            object: ["aud": "http://127.0.0.1:\(port)\(path)", "exp": Int(Date().timeIntervalSince1970) + 600])
    }

    func rest(_ e: Running, _ method: String, _ target: String, token: String? = nil) throws -> RawHTTP.Response {
        let t = token ?? restToken(e.port)
        return try RawHTTP.request(port: e.port, """
            \(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(e.port)\r\nAuthorization: Bearer \(t)\r\n\
            Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi
            """)
    }

    func upgradeRequest(_ e: Running, claims: [String: Any]) -> String {
        let token = AccessTokenCodec(accessKey: key).sign(object: claims)
        return """
            GET /client/hubs/h?access_token=\(token) HTTP/1.1\r\nHost: 127.0.0.1:\(e.port)\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n
            """
    }

    func upgrade(_ e: Running, claims: [String: Any]) throws -> Int {
        try RawHTTP.request(port: e.port, upgradeRequest(e, claims: claims), untilHeadOnly: true).status
    }

    /// A plain WebSocket client of hub `h` that stays connected (a subject for REST filters); close the descriptor.
    func connectedClient(_ e: Running) throws -> Int32 {
        let fd = try RawHTTP.connect(port: e.port)
        RawHTTP.write(fd, upgradeRequest(e, claims: [
            "aud": "http://127.0.0.1:\(e.port)/client/hubs/h", "exp": Int(Date().timeIntervalSince1970) + 600, "sub": "u"]))
        let head = RawHTTP.readAll(fd, untilHeadOnly: true)
        guard head.hasPrefix("HTTP/1.1 101") else { close(fd); throw HostileTestError("upgrade refused: \(head)") }
        return fd
    }

    @Test("OData: a huge substring index and 3 KB of nesting are 202 / 400, and the process keeps serving")
    func odata() throws {
        let e = try Running([])
        // Filters are evaluated against the hub's connections: one must be there (the trap was in evaluation).
        let subject = try connectedClient(e)
        defer { close(subject) }
        let huge = "substring('',9999999999999999999) eq ''".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        #expect(try rest(e, "POST", "/api/hubs/h/:send?api-version=1&filter=\(huge)").status == 202)
        for deep in [String(repeating: "(", count: 1500) + "userId eq 'a'" + String(repeating: ")", count: 1500),
                     String(repeating: "not ", count: 800) + "userId eq 'a'",
                     Array(repeating: "userId eq 'a'", count: 400).joined(separator: " and ")] {
            let q = deep.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let r = try rest(e, "POST", "/api/hubs/h/:send?api-version=1&filter=\(q)")
            #expect(r.status == 400, "\(r.status) \(r.body)")
            #expect(r.body.contains("Invalid filter"))
        }
        #expect(e.alive)
        #expect(try e.process.waitForLine(containing: "Invalid filter", timeout: 10).contains("REST request failed"))
    }

    @Test("integer overflow: exp = Int.max, continuationToken = Int.max, minutesToExpire = Int.max")
    func overflow() throws {
        let e = try Running([])
        let big = "9223372036854775807"
        #expect(try upgrade(e, claims: ["aud": "http://127.0.0.1:\(e.port)/client/hubs/h", "exp": Int.max]) == 101)
        #expect(try upgrade(e, claims: ["aud": "http://127.0.0.1:\(e.port)/client/hubs/h", "exp": 1e300]) == 101)
        #expect(try upgrade(e, claims: ["aud": "http://127.0.0.1:\(e.port)/client/hubs/h", "exp": -1e300]) == 401)
        #expect(e.alive)
        let page = try rest(e, "GET", "/api/hubs/h/groups/g/connections?api-version=1&continuationToken=\(big)")
        #expect(page.status == 200 && page.body.contains("\"value\":[]"), "\(page.status) \(page.body)")
        let token = try rest(e, "POST", "/api/hubs/h/:generateToken?api-version=1&minutesToExpire=\(big)")
        #expect(token.status == 400, "\(token.status) \(token.body)")
        #expect(try rest(e, "POST", "/api/hubs/h/:generateToken?api-version=1&minutesToExpire=60").status == 200)
        #expect(e.alive)
    }

    @Test("nbf or iat in the future beyond the 5 min skew → 401; within it → 101")
    func notYetValid() throws {
        let e = try Running([])
        let now = Int(Date().timeIntervalSince1970)
        let aud = "http://127.0.0.1:\(e.port)/client/hubs/h"
        #expect(try upgrade(e, claims: ["aud": aud, "exp": now + 3600, "nbf": now + 86_400]) == 401)
        #expect(try upgrade(e, claims: ["aud": aud, "exp": now + 3600, "iat": now + 86_400]) == 401)
        #expect(try upgrade(e, claims: ["aud": aud, "exp": now + 3600, "nbf": now + 60, "iat": now + 60]) == 101)
        #expect(try upgrade(e, claims: ["aud": aud, "exp": now + 3600, "nbf": "soon"]) == 401)
        #expect(try e.process.waitForLine(containing: "notYetValid", timeout: 10).contains("refused"))
    }

    @Test("connection cap and header time-out: the socket over the cap gets 503, silent sockets are closed and logged")
    func capAndTimeouts() throws {
        let e = try Running(["--max-connections", "4", "--header-timeout", "1", "--idle-timeout", "1"])
        let idle = try (0..<4).map { _ in try RawHTTP.connect(port: e.port) }
        defer { idle.forEach { close($0) } }
        // Wait until the emulator counts all four (an accepted socket is counted in its initializer).
        var refused = ""
        for _ in 0..<50 {
            let fd = try RawHTTP.connect(port: e.port)
            refused = RawHTTP.readAll(fd)
            close(fd)
            if refused.hasPrefix("HTTP/1.1 503") { break }
        }
        #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
        #expect(refused.contains("ConnectionCountLimitReached"))
        // Each silent socket is closed by the emulator (EOF), well within the reads' 20 s bound.
        for fd in idle { #expect(RawHTTP.readAll(fd, timeout: 20) == "") }
        #expect(try e.process.waitForLine(containing: "connection limit reached", timeout: 10).contains("503"))
        #expect(try e.process.waitForLine(containing: "no request head in time", timeout: 10).contains("closed"))
        // A kept-alive HTTP connection that goes idle is closed too.
        let fd = try RawHTTP.connect(port: e.port)
        defer { close(fd) }
        RawHTTP.write(fd, "HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(RawHTTP.readAll(fd, timeout: 20).hasPrefix("HTTP/1.1 200"))
        #expect(try e.process.waitForLine(containing: "new request (idle)", timeout: 10).contains("closed"))
        #expect(e.alive)
    }

    @Test("per-connection limits: the join past --max-groups-per-connection is BadRequest; a token over it is 400")
    func groupLimit() throws {
        let e = try Running(["--max-groups-per-connection", "3"])
        let now = Int(Date().timeIntervalSince1970)
        let url = "ws://127.0.0.1:\(e.port)/client/hubs/h?access_token=" + AccessTokenCodec(accessKey: key).sign(
            object: ["aud": "http://127.0.0.1:\(e.port)/client/hubs/h", "exp": now + 600, "role": ["webpubsub.joinLeaveGroup"]])
        let client = try PeerProcess.python("hostile_client.py", ["joins", url, "4"])
        defer { client.stop() }
        #expect(client.waitForExit(timeout: 30) == 0)
        #expect(client.output.contains("ACK 3 True -"), "\(client.output)")
        #expect(client.output.contains("ACK 4 False BadRequest"), "\(client.output)")
        let aud = "http://127.0.0.1:\(e.port)/client/hubs/h"
        #expect(try upgrade(e, claims: ["aud": aud, "exp": now + 600, "webpubsub.group": ["a", "b", "c", "d"]]) == 400)
        let pattern = "webpubsub.joinLeaveGroups." + String(repeating: "*", count: 6)
        #expect(try upgrade(e, claims: ["aud": aud, "exp": now + 600, "role": [pattern]]) == 400)
        #expect(try e.process.waitForLine(containing: "group limit reached", timeout: 10).contains("refused"))
    }

    @Test("test hooks: open on a loopback bind, 404 on 0.0.0.0, and with --test-hooks enabled they need the key")
    func hooks() throws {
        let stats = "GET /_emulator/stats HTTP/1.1\r\nConnection: close\r\n"
        do {
            let e = try Running([])
            #expect(try RawHTTP.request(port: e.port, stats + "Host: 127.0.0.1\r\n\r\n").status == 200)
        }
        do {
            let e = try Running(["--host", "0.0.0.0"])
            let r = try RawHTTP.request(port: e.port, stats + "Host: 127.0.0.1:\(e.port)\r\n\r\n")
            #expect(r.status == 404 && r.body.contains("disabled"))
            #expect(try e.process.waitForLine(containing: "test hook refused", timeout: 10).contains("off"))
        }
        do {
            let e = try Running(["--host", "0.0.0.0", "--test-hooks", "enabled"])
            let host = "Host: 127.0.0.1:\(e.port)\r\n"
            #expect(try RawHTTP.request(port: e.port, stats + host + "\r\n").status == 401)
            let wrongKey = AccessTokenCodec(accessKey: String(repeating: "k", count: 44)).sign(
                object: ["aud": "http://127.0.0.1:\(e.port)/_emulator/", "exp": Int(Date().timeIntervalSince1970) + 60])
            #expect(try RawHTTP.request(port: e.port, stats + host + "Authorization: Bearer \(wrongKey)\r\n\r\n").status == 401)
            let token = restToken(e.port, path: "/_emulator/")
            #expect(try RawHTTP.request(port: e.port, stats + host + "Authorization: Bearer \(token)\r\n\r\n").status == 200)
        }
    }
}

struct HostileTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Plain HTTP over a blocking loopback socket: exact bytes out, the raw answer back.
enum RawHTTP {
    struct Response { var status: Int; var body: String }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw HostileTestError("connect failed: errno \(errno)") }
        return fd
    }

    static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            bytes = bytes.dropFirst(n)
        }
    }

    /// Reads until EOF (or, with `untilHeadOnly`, the end of the head), each read bounded by `timeout`.
    static func readAll(_ fd: Int32, timeout: Int = 10, untilHeadOnly: Bool = false) -> String {
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buffer[0..<n]
            if untilHeadOnly, out.count >= 4, String(decoding: out, as: UTF8.self).contains("\r\n\r\n") { break }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func request(port: Int, _ text: String, untilHeadOnly: Bool = false) throws -> Response {
        let fd = try connect(port: port)
        defer { close(fd) }
        write(fd, text)
        let answer = readAll(fd, untilHeadOnly: untilHeadOnly)
        let status = answer.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? -1
        let body = answer.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return Response(status: status, body: body)
    }
}
