//===----------------------------------------------------------------------===//
// swift-webpubsub: incremental UTF-8 validation (fail fast at the offending byte).
//===----------------------------------------------------------------------===//

/// An incremental UTF-8 validator: feed chunks in order; it fails at the first byte that cannot start or
/// continue a well-formed sequence (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF), so a
/// message split across fragments is rejected as soon as the offending fragment arrives.
struct UTF8Validator: Sendable {
    /// Continuation bytes still expected.
    private var needed: UInt8 = 0
    /// Bounds of the next continuation byte.
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    init() {}

    /// True when no sequence is left open (the input so far ends on a character boundary).
    var isComplete: Bool { needed == 0 }

    /// Validates the next chunk; false once invalid (the validator must then be discarded or reset).
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let count = bytes.count
        guard count > 0, let base = bytes.baseAddress else { return true }
        var i = 0
        while i < count {
            if needed == 0 {
                // ASCII fast path, 8 bytes at a time.
                while i + 8 <= count {
                    let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    if word & 0x8080_8080_8080_8080 != 0 { break }
                    i += 8
                }
                if i >= count { break }
                let b = base.load(fromByteOffset: i, as: UInt8.self)
                i += 1
                switch b {
                case 0x00...0x7F: continue
                case 0xC2...0xDF: needed = 1; lower = 0x80; upper = 0xBF
                case 0xE0: needed = 2; lower = 0xA0; upper = 0xBF
                case 0xE1...0xEC, 0xEE...0xEF: needed = 2; lower = 0x80; upper = 0xBF
                case 0xED: needed = 2; lower = 0x80; upper = 0x9F
                case 0xF0: needed = 3; lower = 0x90; upper = 0xBF
                case 0xF1...0xF3: needed = 3; lower = 0x80; upper = 0xBF
                case 0xF4: needed = 3; lower = 0x80; upper = 0x8F
                default: return false
                }
            } else {
                let b = base.load(fromByteOffset: i, as: UInt8.self)
                i += 1
                if b < lower || b > upper { return false }
                needed -= 1
                lower = 0x80
                upper = 0xBF
            }
        }
        return true
    }

    /// Validates the next chunk of bytes.
    mutating func feed(_ bytes: some Collection<UInt8>) -> Bool {
        if let r = bytes.withContiguousStorageIfAvailable({ feed(UnsafeRawBufferPointer($0)) }) { return r }
        return Array(bytes).withUnsafeBytes { feed($0) }
    }

    /// Whether `bytes` is complete, valid UTF-8.
    static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        var v = UTF8Validator()
        return v.feed(bytes) && v.isComplete
    }
}
