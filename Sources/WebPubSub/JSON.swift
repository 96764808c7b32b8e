//===----------------------------------------------------------------------===//
// A small purpose-built JSON writer for the few outgoing message shapes, and a
// small validating scanner for incoming messages. The scanner reads the
// top-level object's fields; nested values are validated and kept as byte
// ranges (the raw JSON text of `data` is handed to the user as is).
//===----------------------------------------------------------------------===//

/// Appends JSON text to a byte buffer.
struct JSONWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 128) { bytes.reserveCapacity(capacity) }

    mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func rawText(_ s: String) { bytes.append(contentsOf: s.utf8) }

    mutating func number(_ n: UInt64) { rawText(String(n)) }

    mutating func bool(_ b: Bool) { b ? raw("true") : raw("false") }

    /// Writes `s` as a JSON string literal.
    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0x08: raw("\\b")
            case 0x0C: raw("\\f")
            case 0..<0x20:
                raw("\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0xF)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// A JSON syntax error (internal; the decoder turns it into a "malformed message").
struct JSONSyntaxError: Error, Equatable {
    var offset: Int
    var reason: String
}

/// A scalar or container read from JSON. Containers are only materialized where asked.
enum JSONNode: Equatable {
    case null
    case bool(Bool)
    /// The number's text, exactly as written.
    case number(String)
    case string(String)
    /// An object whose fields were read (one level).
    case object([String: JSONNode])
    /// An array or object that was validated but not read.
    case container
}

/// A field of the top-level object: its value and where the value's text is.
struct JSONField {
    var node: JSONNode
    var range: Range<Int>
}

/// A validating JSON scanner over UTF-8 bytes.
struct JSONScanner {
    /// The document; valid only while the scanner is used (inside the `withUTF8` of the text it reads).
    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0
    /// The bytes are a Swift `String`'s UTF-8, valid by construction (the WebSocket layer validated a
    /// received frame before making it one): string values are then taken without validating them
    /// again. A slice between two ASCII quotes of valid UTF-8 is valid UTF-8.
    private let knownValidUTF8: Bool
    /// Nesting limit: deeper input is rejected, never a stack overflow.
    static let maximumDepth = 256

    init(_ bytes: UnsafeBufferPointer<UInt8>, knownValidUTF8: Bool = false) {
        self.bytes = bytes
        self.knownValidUTF8 = knownValidUTF8
    }

    /// Whether `text` is exactly one JSON value (surrounding whitespace allowed).
    static func isValidJSON(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { utf8 in
            var s = JSONScanner(utf8, knownValidUTF8: true)
            do {
                s.skipWhitespace()
                _ = try s.value(depth: 0, materialize: 0)
                s.skipWhitespace()
                return s.i == s.bytes.count
            } catch {
                return false
            }
        }
    }

    /// Reads the UTF-8 of `text`, a document that must be an object; returns its fields (the last wins on repeats).
    /// `utf8` is the text's own storage (`String.withUTF8`): nothing is copied.
    static func topLevelFields(_ utf8: UnsafeBufferPointer<UInt8>) throws -> [String: JSONField] {
        var s = JSONScanner(utf8, knownValidUTF8: true)
        s.skipWhitespace()
        guard s.peek() == UInt8(ascii: "{") else { throw JSONSyntaxError(offset: s.i, reason: "not an object") }
        // A service message has up to 8 fields: one allocation, no rehashing.
        var fields = [String: JSONField](minimumCapacity: 8)
        try s.object(depth: 0) { key, scanner in
            let start = scanner.i
            // `error` (ack, invokeResponse) is read one level deep; everything else stays raw.
            let node = try scanner.value(depth: 1, materialize: key == "error" ? 1 : 0)
            fields[key] = JSONField(node: node, range: start..<scanner.i)
        }
        s.skipWhitespace()
        guard s.i == s.bytes.count else { throw JSONSyntaxError(offset: s.i, reason: "trailing characters") }
        return fields
    }

    private func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

    private mutating func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    private mutating func expect(_ c: UInt8) throws {
        guard peek() == c else {
            throw JSONSyntaxError(offset: i, reason: "expected '\(Character(Unicode.Scalar(c)))'")
        }
        i += 1
    }

    private mutating func literal(_ word: StaticString) throws {
        let ok = word.withUTF8Buffer { w in
            i + w.count <= bytes.count && bytes[i..<(i + w.count)].elementsEqual(w)
        }
        guard ok else { throw JSONSyntaxError(offset: i, reason: "bad literal") }
        i += word.utf8CodeUnitCount
    }

    /// Reads one value. `materialize` > 0 reads that many levels of objects into `.object`.
    private mutating func value(depth: Int, materialize: Int) throws -> JSONNode {
        guard depth <= JSONScanner.maximumDepth else { throw JSONSyntaxError(offset: i, reason: "nested too deep") }
        skipWhitespace()
        guard let c = peek() else { throw JSONSyntaxError(offset: i, reason: "unexpected end") }
        switch c {
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "{"):
            if materialize > 0 {
                var dict: [String: JSONNode] = [:]
                try object(depth: depth) { key, s in dict[key] = try s.value(depth: depth + 1, materialize: materialize - 1) }
                return .object(dict)
            }
            try object(depth: depth) { _, s in _ = try s.value(depth: depth + 1, materialize: 0) }
            return .container
        case UInt8(ascii: "["):
            i += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { i += 1; return .container }
            while true {
                _ = try value(depth: depth + 1, materialize: 0)
                skipWhitespace()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "]"))
                return .container
            }
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            return .number(try number())
        }
    }

    private mutating func object(depth: Int, _ field: (String, inout JSONScanner) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipWhitespace()
            let key = try string()
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            try field(key, &self)
            skipWhitespace()
            if peek() == UInt8(ascii: ",") { i += 1; continue }
            try expect(UInt8(ascii: "}"))
            return
        }
    }

    private mutating func number() throws -> String {
        let start = i
        if peek() == UInt8(ascii: "-") { i += 1 }
        guard let first = peek(), (0x30...0x39).contains(first) else {
            throw JSONSyntaxError(offset: i, reason: "unexpected character")
        }
        if first == 0x30 { i += 1 } else { while let d = peek(), (0x30...0x39).contains(d) { i += 1 } }
        if peek() == UInt8(ascii: ".") {
            i += 1
            guard let d = peek(), (0x30...0x39).contains(d) else { throw JSONSyntaxError(offset: i, reason: "bad number") }
            while let d = peek(), (0x30...0x39).contains(d) { i += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            i += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { i += 1 }
            guard let d = peek(), (0x30...0x39).contains(d) else { throw JSONSyntaxError(offset: i, reason: "bad number") }
            while let d = peek(), (0x30...0x39).contains(d) { i += 1 }
        }
        return String(decoding: bytes[start..<i], as: UTF8.self)
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw JSONSyntaxError(offset: i, reason: "bad escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw JSONSyntaxError(offset: i, reason: "bad escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func string() throws -> String {
        try expect(UInt8(ascii: "\""))
        let start = i
        // Fast path: no escapes.
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let s = knownValidUTF8
                    ? String(decoding: bytes[start..<i], as: UTF8.self) : String(validating: bytes[start..<i], as: UTF8.self)
                i += 1
                guard let s else { throw JSONSyntaxError(offset: start, reason: "invalid UTF-8") }
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw JSONSyntaxError(offset: i, reason: "control character in string") }
            i += 1
        }
        var out: [UInt8] = Array(bytes[start..<i])
        while true {
            guard i < bytes.count else { throw JSONSyntaxError(offset: i, reason: "unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            if c < 0x20 { throw JSONSyntaxError(offset: i, reason: "control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < bytes.count else { throw JSONSyntaxError(offset: i, reason: "bad escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    // A high surrogate must be followed by \u and a low surrogate.
                    guard i + 2 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                        throw JSONSyntaxError(offset: i, reason: "lone surrogate")
                    }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw JSONSyntaxError(offset: i, reason: "lone surrogate") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw JSONSyntaxError(offset: i, reason: "lone surrogate")
                }
                guard let u = Unicode.Scalar(scalar) else { throw JSONSyntaxError(offset: i, reason: "bad escape") }
                out.append(contentsOf: String(Character(u)).utf8)
            default:
                throw JSONSyntaxError(offset: i, reason: "bad escape")
            }
        }
        guard let s = knownValidUTF8 ? String(decoding: out, as: UTF8.self) : String(validating: out, as: UTF8.self) else {
            throw JSONSyntaxError(offset: start, reason: "invalid UTF-8")
        }
        return s
    }
}
