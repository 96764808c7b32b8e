/// A small validating JSON scanner (pure). It checks a whole document and reports the fields of a top-level
/// object as raw byte ranges, so values such as `data` can be forwarded verbatim without re-encoding.
struct JSONScanner {
    enum Kind: Equatable { case string, number, object, array, bool, null }
    struct Field { var range: Range<Int>; var kind: Kind }

    let b: [UInt8]
    var i = 0
    var depth = 0

    init(_ bytes: [UInt8]) { b = bytes }

    /// The fields of a top-level object (the last duplicate wins), or nil when the text is not a valid JSON object.
    static func objectFields(_ bytes: [UInt8]) -> [String: Field]? {
        var s = JSONScanner(bytes)
        s.skipWS()
        guard s.i < s.b.count, s.b[s.i] == UInt8(ascii: "{") else { return nil }
        var fields: [String: Field] = [:]
        guard s.scanObject(collect: &fields) else { return nil }
        s.skipWS()
        return s.i == s.b.count ? fields : nil
    }

    /// Whether `bytes` is one valid JSON value.
    static func isValid(_ bytes: [UInt8]) -> Bool {
        var s = JSONScanner(bytes)
        s.skipWS()
        guard s.scanValue() != nil else { return false }
        s.skipWS()
        return s.i == s.b.count
    }

    mutating func skipWS() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    mutating func scanObject(collect: inout [String: Field]) -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth < 128 else { return false }
        i += 1  // {
        skipWS()
        if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return true }
        while true {
            skipWS()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return false }
            let keyStart = i
            guard scanString() else { return false }
            let key = depth == 1 ? JSONScanner.decodeString(b, keyStart..<i) : nil
            skipWS()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { return false }
            i += 1
            skipWS()
            let valueStart = i
            guard let kind = scanValue() else { return false }
            if let key { collect[key] = Field(range: valueStart..<i, kind: kind) }
            skipWS()
            guard i < b.count else { return false }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return true }
            return false
        }
    }

    mutating func scanValue() -> Kind? {
        guard i < b.count else { return nil }
        switch b[i] {
        case UInt8(ascii: "{"):
            var ignored: [String: Field] = [:]
            return scanObject(collect: &ignored) ? .object : nil
        case UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth < 128 else { return nil }
            i += 1
            skipWS()
            if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array }
            while true {
                skipWS()
                guard scanValue() != nil else { return nil }
                skipWS()
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .array }
                return nil
            }
        case UInt8(ascii: "\""): return scanString() ? .string : nil
        case UInt8(ascii: "t"): return literal("true") ? .bool : nil
        case UInt8(ascii: "f"): return literal("false") ? .bool : nil
        case UInt8(ascii: "n"): return literal("null") ? .null : nil
        default: return scanNumber() ? .number : nil
        }
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        let p = word.utf8Start
        for k in 0..<n where b[i + k] != p[k] { return false }
        i += n
        return true
    }

    mutating func scanNumber() -> Bool {
        let start = i
        if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
        guard i < b.count else { return false }
        if b[i] == UInt8(ascii: "0") {
            i += 1
        } else if b[i] >= UInt8(ascii: "1") && b[i] <= UInt8(ascii: "9") {
            while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
        } else {
            return false
        }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            let d = i
            while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            if i == d { return false }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            let d = i
            while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            if i == d { return false }
        }
        // I-JSON (RFC 7493 §2.2): a number must fit an IEEE double; long or exponent forms are checked.
        if i - start > 15 || b[start..<i].contains(where: { $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }) {
            guard let d = Double(String(decoding: b[start..<i], as: UTF8.self)), d.isFinite else { return false }
        }
        return i > start
    }

    mutating func scanString() -> Bool {
        i += 1  // opening quote
        let start = i
        var nonASCII = false
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                // JSON text is UTF-8 (RFC 8259 §8.1); bytes ≥ 0x80 can only occur inside strings, so checking
                // them here makes every accepted document valid UTF-8 (forwarded verbatim, it stays valid).
                if nonASCII && String(validating: b[start..<i], as: UTF8.self) == nil { return false }
                i += 1
                return true
            }
            if c >= 0x80 { nonASCII = true }
            if c < 0x20 { return false }
            if c == UInt8(ascii: "\\") {
                i += 1
                guard i < b.count else { return false }
                switch b[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    // I-JSON (RFC 7493 §2.1): no unpaired surrogate escapes, so that every decoder (Foundation
                    // included) reads what this scanner accepted.
                    guard let unit = hex4(at: i + 1) else { return false }
                    i += 5
                    if (0xDC00...0xDFFF).contains(unit) { return false }
                    if (0xD800...0xDBFF).contains(unit) {
                        guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u"),
                              let low = hex4(at: i + 2), (0xDC00...0xDFFF).contains(low) else { return false }
                        i += 6
                    }
                default: return false
                }
            } else {
                i += 1
            }
        }
        return false
    }

    /// The four hex digits at `at`, or nil.
    func hex4(at: Int) -> UInt32? {
        guard at + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 {
            guard let d = JSONScanner.hexValue(b[at + k]) else { return nil }
            v = v << 4 | d
        }
        return v
    }

    static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30...0x39: return UInt32(c - 0x30)
        case 0x41...0x46: return UInt32(c - 0x41 + 10)
        case 0x61...0x66: return UInt32(c - 0x61 + 10)
        default: return nil
        }
    }

    /// Decodes a JSON string token (with its quotes) at `range`; nil when invalid.
    static func decodeString(_ b: [UInt8], _ range: Range<Int>) -> String? {
        guard range.count >= 2 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(range.count)
        var i = range.lowerBound + 1
        let end = range.upperBound - 1
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= end else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 { guard let h = hexValue(b[at + k]) else { return nil }; v = v << 4 | h }
            return v
        }
        while i < end {
            let c = b[i]
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            switch b[i] {
            case UInt8(ascii: "b"): out.append(0x08); i += 1
            case UInt8(ascii: "f"): out.append(0x0C); i += 1
            case UInt8(ascii: "n"): out.append(0x0A); i += 1
            case UInt8(ascii: "r"): out.append(0x0D); i += 1
            case UInt8(ascii: "t"): out.append(0x09); i += 1
            case UInt8(ascii: "u"):
                guard var scalar = hex4(i + 1) else { return nil }
                i += 5
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    guard i + 1 < end, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u"),
                          let low = hex4(i + 2), low >= 0xDC00 && low < 0xE000 else { return nil }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
                }
                guard let u = Unicode.Scalar(scalar) else { return nil }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: out.append(b[i]); i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// Appends `s` as a JSON string literal (with quotes) to `out`.
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20:
                let digits = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, digits[Int(c >> 4)], digits[Int(c & 0xF)]])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// `s` as a JSON string literal.
    static func quoted(_ s: String) -> String {
        var out = [UInt8]()
        appendString(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
