//===----------------------------------------------------------------------===//
// swift-webpubsub: the HTTP/1.1 upgrade (RFC 6455 §4).
//===----------------------------------------------------------------------===//
import CSSL
import Foundation

/// A parsed `ws://` / `wss://` URL.
struct WebSocketEndpoint: Sendable, Equatable {
    var secure: Bool
    /// The host without IPv6 brackets.
    var host: String
    var port: Int
    /// Path and query, percent-encoded, starting with "/".
    var requestTarget: String
    /// True when ``host`` is an IPv4 or IPv6 literal.
    var hostIsIPAddress: Bool

    init(url: URL) throws(WebSocketError) {
        guard let components = URLComponents(url: url, resolvingAgainstBaseURL: false),
            let scheme = components.scheme?.lowercased(), scheme == "ws" || scheme == "wss",
            var host = components.host, !host.isEmpty
        else {
            throw WebSocketError(.invalidURL, "expected ws:// or wss:// with a host")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        secure = scheme == "wss"
        self.host = host
        port = components.port ?? (secure ? 443 : 80)
        guard (1...65535).contains(port) else { throw WebSocketError(.invalidURL, "port out of range") }
        var target = components.percentEncodedPath
        if target.isEmpty { target = "/" }
        if let q = components.percentEncodedQuery { target += "?" + q }
        requestTarget = target
        hostIsIPAddress = Self.isIPLiteral(host)
    }

    static func isIPLiteral(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// The `Host` header value.
    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? h : "\(h):\(port)"
    }

    /// A loggable form: no query string (it may hold `access_token=`).
    var redacted: String {
        let path = requestTarget.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        let q = requestTarget.contains("?") ? "?<redacted>" : ""
        return "\(secure ? "wss" : "ws")://\(hostHeader)\(path)\(q)"
    }
}

/// Builds the upgrade request and checks the answer.
struct Handshake: Sendable {
    /// The base64 `Sec-WebSocket-Key` sent.
    let key: String
    let subprotocols: [String]

    /// Largest response head accepted.
    static let maximumHeadSize = 16 * 1024
    /// Largest body kept from a rejected upgrade.
    static let maximumBodySize = 4 * 1024

    init(key: String, subprotocols: [String]) {
        self.key = key
        self.subprotocols = subprotocols
    }

    /// A fresh handshake with 16 random key bytes from `RAND_bytes`.
    static func random(subprotocols: [String]) -> Handshake {
        var bytes = [UInt8](repeating: 0, count: 16)
        if RAND_bytes(&bytes, 16) != 1 {
            var g = SystemRandomNumberGenerator()
            for i in 0..<16 { bytes[i] = UInt8.random(in: 0...255, using: &g) }
        }
        return Handshake(key: Data(bytes).base64EncodedString(), subprotocols: subprotocols)
    }

    /// The expected `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)).
    static func acceptValue(forKey key: String) -> String {
        let input = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: 20)
        _ = input.withUnsafeBytes { cssl_sha1($0.baseAddress, $0.count, &digest) }
        return Data(digest).base64EncodedString()
    }

    /// The request bytes.
    func request(endpoint: WebSocketEndpoint, userAgent: String?, headers: [(name: String, value: String)]) -> [UInt8] {
        var s = "GET \(endpoint.requestTarget) HTTP/1.1\r\n"
        s += "Host: \(endpoint.hostHeader)\r\n"
        s += "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        s += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if !subprotocols.isEmpty { s += "Sec-WebSocket-Protocol: \(subprotocols.joined(separator: ", "))\r\n" }
        if let userAgent { s += "User-Agent: \(userAgent)\r\n" }
        for (name, value) in headers {
            // Header injection guard: no CR/LF in names or values.
            let n = Self.stripLineBreaks(name)
            let v = Self.stripLineBreaks(value)
            s += "\(n): \(v)\r\n"
        }
        s += "\r\n"
        return Array(s.utf8)
    }

    /// The outcome of feeding response bytes.
    enum Outcome: Sendable {
        /// More bytes needed.
        case needMore
        /// The upgrade succeeded; `leftover` are bytes after the head (the first frames).
        case upgraded(WebSocketHandshakeResponse, leftover: [UInt8])
        /// A non-101 status: the head is parsed; the shell may collect up to `bodyLength` body bytes.
        case rejected(status: Int, headers: [(name: String, value: String)], body: [UInt8], bodyLength: Int?)
        /// A broken or unacceptable response.
        case failed(WebSocketError)
    }

    /// Parses the response in `buffer` (all bytes received so far).
    /// - Parameter scannedUpTo: bytes already known to hold no `CRLFCRLF` (from an earlier call), so a
    ///   head that arrives in many small pieces is scanned once, not quadratically.
    func parse(_ buffer: [UInt8], scannedUpTo: Int = 0) -> Outcome {
        // Fail fast on an answer that is not HTTP at all, without waiting for a head that never ends.
        let prefix = Array("HTTP/1.".utf8)
        if !buffer.starts(with: prefix.prefix(buffer.count)) {
            return .failed(WebSocketError(.invalidUpgradeResponse, "the answer is not HTTP/1.x"))
        }
        guard let headEnd = Self.findHeadEnd(buffer, from: max(0, scannedUpTo - 3)) else {
            if buffer.count >= Self.maximumHeadSize {
                return .failed(WebSocketError(.invalidUpgradeResponse, "response head larger than 16 KiB"))
            }
            return .needMore
        }
        // The same bound when the whole head arrived at once: the answer does not depend on how it was split.
        if headEnd + 4 > Self.maximumHeadSize {
            return .failed(WebSocketError(.invalidUpgradeResponse, "response head larger than 16 KiB"))
        }
        guard let head = String(validating: buffer[0..<headEnd], as: UTF8.self) else {
            return .failed(WebSocketError(.invalidUpgradeResponse, "response head is not UTF-8"))
        }
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            return .failed(WebSocketError(.invalidUpgradeResponse, "bad status line"))
        }
        var headers: [(name: String, value: String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else {
                return .failed(WebSocketError(.invalidUpgradeResponse, "bad header line"))
            }
            let name = String(line[..<colon]).trimmingCharacters(in: .whitespaces)
            let value = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, !name.contains(" ") else {
                return .failed(WebSocketError(.invalidUpgradeResponse, "bad header name"))
            }
            headers.append((name, value))
        }
        let rest = Array(buffer[(headEnd + 4)...])
        func header(_ n: String) -> String? {
            headers.first { $0.name.caseInsensitiveCompare(n) == .orderedSame }?.value
        }
        guard status == 101 else {
            var length: Int?
            if let text = header("Content-Length") {
                guard let n = Self.contentLength(text) else {
                    return .failed(WebSocketError(.invalidUpgradeResponse, "bad Content-Length", httpStatus: status))
                }
                length = n
            }
            let cap = min(length ?? Self.maximumBodySize, Self.maximumBodySize)
            return .rejected(status: status, headers: headers, body: Array(rest.prefix(cap)), bodyLength: length)
        }
        guard header("Upgrade")?.lowercased() == "websocket" else {
            return .failed(WebSocketError(.invalidUpgradeResponse, "101 without Upgrade: websocket", httpStatus: 101))
        }
        let connectionTokens = (header("Connection") ?? "").lowercased().split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard connectionTokens.contains("upgrade") else {
            return .failed(WebSocketError(.invalidUpgradeResponse, "101 without Connection: Upgrade", httpStatus: 101))
        }
        guard header("Sec-WebSocket-Accept") == Self.acceptValue(forKey: key) else {
            return .failed(WebSocketError(.invalidAcceptKey, "Sec-WebSocket-Accept missing or wrong", httpStatus: 101))
        }
        if let ext = header("Sec-WebSocket-Extensions"), !ext.isEmpty {
            return .failed(WebSocketError(.invalidUpgradeResponse, "server selected an extension we did not offer"))
        }
        let selected = header("Sec-WebSocket-Protocol")
        if subprotocols.isEmpty {
            if let selected, !selected.isEmpty {
                return .failed(WebSocketError(.subprotocolMismatch, "server selected a subprotocol none was offered"))
            }
        } else {
            guard let selected, !selected.isEmpty else {
                return .failed(WebSocketError(.subprotocolMismatch, "server selected no subprotocol"))
            }
            guard subprotocols.contains(selected) else {
                return .failed(WebSocketError(.subprotocolMismatch, "server selected a subprotocol not offered"))
            }
        }
        let response = WebSocketHandshakeResponse(
            status: 101, headers: headers, subprotocol: subprotocols.isEmpty ? nil : selected)
        return .upgraded(response, leftover: rest)
    }

    /// A `Content-Length` value (RFC 9110 §8.6: one or more ASCII digits), saturated at `Int.max`; nil for
    /// anything else (a sign, spaces inside, a list, other characters). The caller caps what it reads.
    static func contentLength(_ text: String) -> Int? {
        let digits = text.utf8
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        var n = 0
        for d in digits {
            let (times10, o1) = n.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(d - 0x30))
            if o1 || o2 { return Int.max }
            n = sum
        }
        return n
    }

    /// Removes CR, LF and NUL (by scalar: "\r\n" is one Character in Swift).
    static func stripLineBreaks(_ s: String) -> String {
        String(String.UnicodeScalarView(s.unicodeScalars.filter { $0 != "\r" && $0 != "\n" && $0 != "\0" }))
    }

    static func findHeadEnd(_ b: [UInt8], from: Int = 0) -> Int? {
        guard b.count >= 4 else { return nil }
        var i = from
        while i + 3 < b.count {
            if b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }
}
