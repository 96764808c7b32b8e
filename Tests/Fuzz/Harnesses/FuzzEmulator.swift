//===----------------------------------------------------------------------===//
// libFuzzer harnesses of the emulator's parsers (built into the WebPubSubEmulator
// module's pure files by Tests/Fuzz/fuzz.sh). WPS_FUZZ_TARGET picks one:
//   client-message  ClientMessage.parse: every parsed request re-encodes to valid JSON
//                   that parses to the same request; `json` data is valid JSON.
//   json-scanner    JSONScanner: what it accepts Foundation accepts too; every field
//                   range is a valid value of the reported kind; strings round-trip.
//   odata           ODataFilter: parsing and evaluation never trap; `(F)` and
//                   `not (not (F))` parse whenever F does and match the same subjects.
//   token           AccessTokenCodec: tokens signed over fuzzed claims are accepted
//                   exactly when exp/nbf/iat allow it; a changed signature never is.
//===----------------------------------------------------------------------===//
import Foundation

private let fuzzTarget = ProcessInfo.processInfo.environment["WPS_FUZZ_TARGET"] ?? "client-message"

@_cdecl("LLVMFuzzerTestOneInput")
public func wpsFuzzEmulator(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch fuzzTarget {
    case "client-message": FuzzClientMessage.run(bytes)
    case "json-scanner": FuzzJSONScanner.run(bytes)
    case "odata": FuzzOData.run(bytes)
    case "token": FuzzToken.run(bytes)
    default: fatalError("unknown WPS_FUZZ_TARGET \(fuzzTarget)")
    }
    return 0
}

enum FuzzClientMessage {
    static func q(_ s: String) -> String { JSONScanner.quoted(s) }
    static func ack(_ a: UInt64?) -> String { a.map { ",\"ackId\":\($0)" } ?? "" }
    static func data(_ d: MessageData) -> String {
        if d.dataType == .json, !JSONScanner.isValid(d.rawJSON) { fatalError("json data that is not JSON") }
        return ",\"dataType\":\"\(d.dataType.rawValue)\",\"data\":" + String(decoding: d.rawJSON, as: UTF8.self)
    }

    static func encode(_ m: ClientMessage) -> String {
        switch m {
        case .joinGroup(let g, let a): return "{\"type\":\"joinGroup\",\"group\":\(q(g))\(ack(a))}"
        case .leaveGroup(let g, let a): return "{\"type\":\"leaveGroup\",\"group\":\(q(g))\(ack(a))}"
        case .sendToGroup(let g, let a, let noEcho, let d):
            return "{\"type\":\"sendToGroup\",\"group\":\(q(g))\(ack(a)),\"noEcho\":\(noEcho)\(data(d))}"
        case .event(let n, let a, let d): return "{\"type\":\"event\",\"event\":\(q(n))\(ack(a))\(data(d))}"
        case .sequenceAck(let n): return "{\"type\":\"sequenceAck\",\"sequenceId\":\(n)}"
        case .ping: return "{\"type\":\"ping\"}"
        case .invoke(let id, let e, let d):
            return "{\"type\":\"invoke\",\"invocationId\":\(q(id)),\"target\":\"event\",\"event\":\(q(e))\(d.map(data) ?? "")}"
        case .cancelInvocation(let id): return "{\"type\":\"cancelInvocation\",\"invocationId\":\(q(id))}"
        }
    }

    static func run(_ bytes: [UInt8]) {
        guard let m = try? ClientMessage.parse(bytes) else { return }
        let text = encode(m)
        let again = Array(text.utf8)
        guard JSONScanner.isValid(again), (try? JSONSerialization.jsonObject(with: Data(again))) != nil else {
            fatalError("re-encoded request is not valid JSON: \(text)")
        }
        guard let m2 = try? ClientMessage.parse(again), m2 == m else {
            fatalError("re-encoded request parses differently:\n\(m)\n\(text)")
        }
    }
}

enum FuzzJSONScanner {
    static func run(_ bytes: [UInt8]) {
        let valid = JSONScanner.isValid(bytes)
        if valid {
            // Differential: Foundation must accept what the scanner accepts (at the scanner's depth limit).
            if (try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])) == nil {
                fatalError("scanner accepted what Foundation rejects")
            }
        }
        guard let fields = JSONScanner.objectFields(bytes) else { return }
        guard valid else { fatalError("objectFields accepted an invalid document") }
        for (key, field) in fields {
            let value = Array(bytes[field.range])
            guard JSONScanner.isValid(value) else { fatalError("field \(key) is not a valid value") }
            let first = value.first ?? 0
            let expected: JSONScanner.Kind
            switch first {
            case UInt8(ascii: "{"): expected = .object
            case UInt8(ascii: "["): expected = .array
            case UInt8(ascii: "\""): expected = .string
            case UInt8(ascii: "t"), UInt8(ascii: "f"): expected = .bool
            case UInt8(ascii: "n"): expected = .null
            default: expected = .number
            }
            guard field.kind == expected else { fatalError("field \(key) has kind \(field.kind), not \(expected)") }
            if field.kind == .string {
                guard let s = JSONScanner.decodeString(bytes, field.range) else { fatalError("undecodable string") }
                let quoted = Array(JSONScanner.quoted(s).utf8)
                guard JSONScanner.isValid(quoted), JSONScanner.decodeString(quoted, 0..<quoted.count) == s else {
                    fatalError("string does not round-trip")
                }
            }
        }
    }
}

enum FuzzOData {
    static let subjects = [
        ODataFilter.Subject(connectionID: "c1", userID: "alice", groups: ["g1", "g2"]),
        ODataFilter.Subject(connectionID: "C2", userID: nil, groups: []),
        ODataFilter.Subject(connectionID: "c'3", userID: "Bob O'Neil", groups: ["a b", ""]),
    ]

    static func isLimit(_ e: ODataFilter.SyntaxError) -> Bool {
        ["nested deeper", "longer than", "tokens"].contains { e.message.contains($0) }
    }

    static func run(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let f: ODataFilter
        do { f = try ODataFilter(text) } catch { return }
        let base = subjects.map(f.matches)
        for wrapped in ["(" + text + ")", "not (not (" + text + "))"] {
            do {
                let g = try ODataFilter(wrapped)
                guard subjects.map(g.matches) == base else { fatalError("\(wrapped) matches differently from \(text)") }
            } catch {
                guard isLimit(error) else { fatalError("\(wrapped) does not parse (\(error.message)) but \(text) does") }
            }
        }
    }
}

enum FuzzToken {
    static let codec = AccessTokenCodec(accessKey: "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH")
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func date(_ v: Any?) -> Double? {
        if let n = v as? NSNumber { return n.doubleValue.isFinite ? n.doubleValue : nil }
        if let s = v as? String, let d = Double(s), d.isFinite { return d }
        return nil
    }

    static func run(_ bytes: [UInt8]) {
        guard let mode = bytes.first else { return }
        let rest = Array(bytes.dropFirst())
        if mode & 1 == 0 {
            // Any text as a token: never traps; never accepted (the fuzzer cannot forge the HMAC).
            let token = String(decoding: rest, as: UTF8.self)
            if (try? codec.verify(token, now: now) { _ in true }) != nil { fatalError("forged token accepted") }
            return
        }
        // Fuzzed claims, correctly signed.
        guard let object = (try? JSONSerialization.jsonObject(with: Data(rest))) as? [String: Any] else { return }
        let token = codec.sign(object: object)
        let skew = Double(codec.clockSkew), t = now.timeIntervalSince1970
        var expected: AccessTokenError?
        if let exp = date(object["exp"]) {
            if exp + skew < t { expected = .expired }
            for claim in ["nbf", "iat"] where expected == nil && object[claim] != nil {
                guard let v = date(object[claim]) else { expected = .malformed; break }
                if v - skew > t { expected = .notYetValid }
            }
        } else {
            expected = .malformed
        }
        var got: AccessTokenError?
        do { _ = try codec.verifiedPayload(token, now: now) } catch { got = error }
        // The signed JSON may not be what was parsed (re-serialized), so a malformed verdict on either side
        // is only compared for the date rules.
        if got != expected && !(got == .malformed || expected == .malformed) {
            fatalError("token with \(object) verified as \(String(describing: got)), expected \(String(describing: expected))")
        }
        // One changed signature byte is never accepted.
        var forged = Array(token.utf8)
        forged[forged.count - 2] = forged[forged.count - 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        if (try? codec.verifiedPayload(String(decoding: forged, as: UTF8.self), now: now)) != nil {
            fatalError("token with a changed signature accepted")
        }
    }
}
