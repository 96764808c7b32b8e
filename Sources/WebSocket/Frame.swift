//===----------------------------------------------------------------------===//
// swift-webpubsub: RFC 6455 frames: an incremental parser, an encoder, masking.
//===----------------------------------------------------------------------===//

/// RFC 6455 opcodes.
enum WebSocketOpcode: UInt8, Sendable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    var isControl: Bool { rawValue & 0x8 != 0 }
}

/// One frame as read from the wire (payload unmasked).
struct WebSocketFrame: Equatable, Sendable {
    var fin: Bool
    var opcode: WebSocketOpcode
    var payload: [UInt8]
}

/// A framing error: the close code to fail the connection with and why.
struct FrameError: Error, Equatable, Sendable {
    var closeCode: WebSocketCloseCode
    var message: String
}

/// An incremental frame parser for frames sent by a server (unmasked). Input may be split at any byte;
/// the frames it yields are exactly those of a whole-buffer parse.
///
/// Frames are buffered until complete; a frame longer than ``maximumFrameSize`` fails with 1009 as soon
/// as its header is read, before its payload is buffered.
struct FrameParser: Sendable {
    /// The largest payload accepted for one frame.
    var maximumFrameSize: Int
    private var buffer: [UInt8] = []
    private var start = 0
    /// Buffer capacity kept once empty; a bigger buffer (after a large frame) is released.
    static let retainedCapacity = 256 * 1024

    init(maximumFrameSize: Int) {
        self.maximumFrameSize = maximumFrameSize
        buffer.reserveCapacity(4096)
    }

    /// Bytes received but not yet returned as frames.
    var bufferedByteCount: Int { buffer.count - start }

    /// Appends received bytes.
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    /// Appends received bytes.
    mutating func append(_ bytes: some Sequence<UInt8>) {
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    private mutating func compactIfUseful() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= Self.retainedCapacity)
            start = 0
        } else if start > 65_536 && start > buffer.count / 2 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }

    /// A frame header: what it says and where the payload starts.
    private struct Header {
        var fin: Bool
        var opcode: WebSocketOpcode
        var headerLength: Int
        var length: Int
    }

    /// Parses the header at `start`; nil when more bytes are needed.
    private func header() throws(FrameError) -> Header? {
        let available = buffer.count - start
        guard available >= 2 else { return nil }
        let b0 = buffer[start]
        let b1 = buffer[start + 1]
        let fin = b0 & 0x80 != 0
        if b0 & 0x70 != 0 {
            throw FrameError(closeCode: .protocolError, message: "reserved bits set without a negotiated extension")
        }
        guard let opcode = WebSocketOpcode(rawValue: b0 & 0x0F) else {
            throw FrameError(closeCode: .protocolError, message: "reserved opcode \(b0 & 0x0F)")
        }
        if b1 & 0x80 != 0 {
            throw FrameError(closeCode: .protocolError, message: "a server frame was masked")
        }
        var length = UInt64(b1 & 0x7F)
        var headerLength = 2
        if opcode.isControl {
            if !fin { throw FrameError(closeCode: .protocolError, message: "fragmented control frame") }
            if length > 125 { throw FrameError(closeCode: .protocolError, message: "control frame payload > 125") }
        }
        if length == 126 {
            guard available >= 4 else { return nil }
            length = UInt64(buffer[start + 2]) << 8 | UInt64(buffer[start + 3])
            headerLength = 4
        } else if length == 127 {
            guard available >= 10 else { return nil }
            length = 0
            for i in 2..<10 { length = length << 8 | UInt64(buffer[start + i]) }
            if length & (1 << 63) != 0 {
                throw FrameError(closeCode: .protocolError, message: "64-bit length with the high bit set")
            }
            headerLength = 10
        }
        if length > UInt64(maximumFrameSize) {
            throw FrameError(closeCode: .messageTooBig, message: "frame of \(length) bytes exceeds \(maximumFrameSize)")
        }
        return Header(fin: fin, opcode: opcode, headerLength: headerLength, length: Int(length))
    }

    /// The next complete frame, nil when more bytes are needed. Throws on a framing violation.
    mutating func next() throws(FrameError) -> WebSocketFrame? {
        guard let h = try header() else { return nil }
        let total = h.headerLength + h.length
        guard buffer.count - start >= total else { return nil }
        let payloadStart = start + h.headerLength
        let payload = Array(buffer[payloadStart..<(payloadStart + h.length)])
        start += total
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= Self.retainedCapacity)
            start = 0
        }
        return WebSocketFrame(fin: h.fin, opcode: h.opcode, payload: payload)
    }

    /// The frame being received when its header is complete but its payload is not: its opcode and
    /// the payload bytes so far (lets text be validated before the frame completes: "fail fast").
    func partialFrame() -> (opcode: WebSocketOpcode, payload: ArraySlice<UInt8>)? {
        guard let h = try? header() else { return nil }
        let payloadStart = start + h.headerLength
        guard payloadStart <= buffer.count, buffer.count - payloadStart < h.length else { return nil }
        return (h.opcode, buffer[payloadStart..<buffer.count])
    }
}

/// Encodes client frames (always masked).
enum FrameEncoder {
    /// Appends one masked frame to `out`.
    static func encode(
        opcode: WebSocketOpcode, fin: Bool, payload: UnsafeRawBufferPointer, maskKey: UInt32, into out: inout [UInt8]
    ) {
        let count = payload.count
        out.append((fin ? 0x80 : 0) | opcode.rawValue)
        if count < 126 {
            out.append(0x80 | UInt8(count))
        } else if count <= 0xFFFF {
            out.append(0x80 | 126)
            out.append(UInt8(count >> 8))
            out.append(UInt8(count & 0xFF))
        } else {
            out.append(0x80 | 127)
            let c = UInt64(count)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((c >> UInt64(shift)) & 0xFF)) }
        }
        let keyStart = out.count
        withUnsafeBytes(of: maskKey) { out.append(contentsOf: $0) }
        let payloadStart = out.count
        out.append(contentsOf: payload)
        out.withUnsafeMutableBytes { all in
            let key = (all[keyStart], all[keyStart + 1], all[keyStart + 2], all[keyStart + 3])
            let region = UnsafeMutableRawBufferPointer(rebasing: all[payloadStart..<(payloadStart + count)])
            applyMask(region, key: key)
        }
    }

    /// Appends one masked frame to `out`.
    static func encode(
        opcode: WebSocketOpcode, fin: Bool, payload: some Collection<UInt8>, maskKey: UInt32, into out: inout [UInt8]
    ) {
        if payload.withContiguousStorageIfAvailable({
            encode(opcode: opcode, fin: fin, payload: UnsafeRawBufferPointer($0), maskKey: maskKey, into: &out)
        }) == nil {
            Array(payload).withUnsafeBytes {
                encode(opcode: opcode, fin: fin, payload: $0, maskKey: maskKey, into: &out)
            }
        }
    }

    /// XORs `bytes` in place with the 4-byte `key` (RFC 6455 §5.3), starting at key phase 0, a word at a time.
    static func applyMask(_ bytes: UnsafeMutableRawBufferPointer, key: (UInt8, UInt8, UInt8, UInt8)) {
        let count = bytes.count
        guard count > 0, let base = bytes.baseAddress else { return }
        var k32: UInt32 = 0
        withUnsafeMutableBytes(of: &k32) { $0[0] = key.0; $0[1] = key.1; $0[2] = key.2; $0[3] = key.3 }
        let k64 = UInt64(k32) | (UInt64(k32) << 32)
        var i = 0
        while i + 8 <= count {
            let w = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            base.storeBytes(of: w ^ k64, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        let ordered = UInt32(littleEndian: k32)  // key.0 in the low byte
        while i < count {
            let b = base.load(fromByteOffset: i, as: UInt8.self)
            let k = UInt8(truncatingIfNeeded: ordered >> UInt32(8 * (i & 3)))
            base.storeBytes(of: b ^ k, toByteOffset: i, as: UInt8.self)
            i += 1
        }
    }

    /// The close frame payload: code (big-endian) and reason, reason cut to fit 125 bytes at a character boundary.
    static func closePayload(code: WebSocketCloseCode?, reason: String) -> [UInt8] {
        guard let code else { return [] }
        var p: [UInt8] = [UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)]
        var r = Array(reason.utf8)
        if r.count > 123 {
            var cut = 123
            while cut > 0 && (r[cut] & 0xC0) == 0x80 { cut -= 1 }
            r = Array(r[0..<cut])
        }
        p.append(contentsOf: r)
        return p
    }
}
