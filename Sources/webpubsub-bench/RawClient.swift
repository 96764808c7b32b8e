//===----------------------------------------------------------------------===//
// The raw baseline of `make bench`: a Web PubSub client with no library at
// all. Plain blocking POSIX sockets (TCP_NODELAY, like ours), the HTTP upgrade
// written by hand, frames encoded and masked before the clock starts, and a
// reader that only finds frame boundaries and looks for a marker in the text.
// It does no JSON parsing, no UTF-8 validation and no bookkeeping: it is the
// floor of what one message costs through the socket, not a usable client.
//===----------------------------------------------------------------------===//
#if canImport(Glibc)
import Glibc
#endif
import Foundation

struct RawClientError: Error, CustomStringConvertible {
    var description: String
}

/// One blocking WebSocket connection to the emulator, used from one thread at a time.
final class RawClient: @unchecked Sendable {  // confined: one thread at a time (a publisher thread hands it back when it reports its usage)
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0
    private var end = 0
    private var mask: UInt32 = 0x1234_5678

    /// Connects to `url` (ws://127.0.0.1:PORT/client/hubs/HUB?access_token=…) with `subprotocol` and waits
    /// for the service's `connected` message.
    init(url: URL, subprotocol: String) throws {
        guard let host = url.host, let port = url.port else { throw RawClientError(description: "bad URL") }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawClientError(description: "socket failed") }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &address.sin_addr)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw RawClientError(description: "connect failed: errno \(errno)")
        }
        var target = url.path
        if let q = url.query { target += "?" + q }
        let request = "GET \(target) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Protocol: \(subprotocol)\r\n\r\n"
        writeAll(Array(request.utf8))
        // The response head.
        var head: [UInt8] = []
        while true {
            try fill()
            head += buffer[start..<end]
            start = end
            if let r = head.firstRange(of: Array("\r\n\r\n".utf8)) {
                let rest = head[r.upperBound...]
                buffer.replaceSubrange(0..<rest.count, with: rest)
                start = 0
                end = rest.count
                break
            }
        }
        guard String(decoding: head.prefix(12), as: UTF8.self).hasSuffix("101") else {
            throw RawClientError(description: "upgrade refused: \(String(decoding: head, as: UTF8.self))")
        }
        while true {
            let text = try String(decoding: readTextFrame(), as: UTF8.self)
            if text.contains(#""event":"connected""#) { break }
        }
    }

    deinit { close(fd) }

    /// Encodes a masked text frame (done before timing).
    func frame(_ text: String) -> [UInt8] {
        mask = mask &* 1_103_515_245 &+ 12345
        return RawClient.frame(Array(text.utf8), mask: mask)
    }

    static func frame(_ payload: [UInt8], mask: UInt32) -> [UInt8] {
        var out: [UInt8] = [0x81]
        if payload.count < 126 {
            out.append(0x80 | UInt8(payload.count))
        } else if payload.count < 65536 {
            out += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        } else {
            out.append(0x80 | 127)
            for i in (0..<8).reversed() { out.append(UInt8((payload.count >> (8 * i)) & 0xff)) }
        }
        let key = [UInt8(mask >> 24), UInt8((mask >> 16) & 0xff), UInt8((mask >> 8) & 0xff), UInt8(mask & 0xff)]
        out += key
        for (i, b) in payload.enumerated() { out.append(b ^ key[i & 3]) }
        return out
    }

    /// Writes all of `bytes` (one send call unless the kernel takes less).
    func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    return
                }
                off += n
            }
        }
    }

    private func fill() throws {
        if start == end {
            start = 0
            end = 0
        } else if end == buffer.count {
            if start > 0 {
                buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
                end -= start
                start = 0
            } else {
                buffer += [UInt8](repeating: 0, count: buffer.count)
            }
        }
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + end, $0.count - end, 0) }
        if n < 0 && errno == EINTR { return }
        guard n > 0 else { throw RawClientError(description: "connection closed (errno \(errno))") }
        end += n
    }

    /// The payload of the next text frame (control and other frames skipped). Server frames are unmasked
    /// and, from the emulator, never fragmented.
    func readTextFrame() throws -> ArraySlice<UInt8> {
        while true {
            while end - start < 2 { try fill() }
            let opcode = buffer[start] & 0x0f
            var length = Int(buffer[start + 1] & 0x7f)
            var headerLength = 2
            if length == 126 {
                while end - start < 4 { try fill() }
                length = Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
                headerLength = 4
            } else if length == 127 {
                while end - start < 10 { try fill() }
                length = 0
                for i in 0..<8 { length = length << 8 | Int(buffer[start + 2 + i]) }
                headerLength = 10
            }
            while end - start < headerLength + length { try fill() }
            let payload = buffer[(start + headerLength)..<(start + headerLength + length)]
            start += headerLength + length
            if opcode == 0x1 { return payload }
        }
    }
}

extension ArraySlice<UInt8> {
    /// Whether the bytes contain `marker` (memchr and memcmp, no decoding).
    func contains(marker: [UInt8]) -> Bool {
        withUnsafeBytes { hay in
            marker.withUnsafeBytes { needle in
                guard let h = hay.baseAddress, let n = needle.baseAddress, needle.count > 0 else { return false }
                var offset = 0
                while hay.count - offset >= needle.count {
                    guard let hit = memchr(h + offset, Int32(needle[0]), hay.count - offset - needle.count + 1) else { return false }
                    if memcmp(hit, n, needle.count) == 0 { return true }
                    offset = h.distance(to: UnsafeRawPointer(hit)) + 1
                }
                return false
            }
        }
    }
}
