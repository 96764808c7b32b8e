import Foundation

/// How a message payload is typed on the JSON protocols.
public enum DataType: String, Sendable {
    case text, json, binary, protobuf
}

/// A message payload as it travels in the JSON protocols: its type and the raw JSON of `data`
/// (a JSON string for text, a base64 JSON string for binary/protobuf, any JSON value for json).
public struct MessageData: Sendable, Equatable {
    /// `text`, `json`, `binary` or `protobuf`.
    public var dataType: DataType
    /// The JSON text of the `data` field, forwarded verbatim.
    public var rawJSON: [UInt8]

    /// Creates a payload from its JSON form.
    public init(dataType: DataType, rawJSON: [UInt8]) {
        self.dataType = dataType
        self.rawJSON = rawJSON
    }

    /// A text payload.
    public static func text(_ s: String) -> MessageData { MessageData(dataType: .text, rawJSON: Array(JSONScanner.quoted(s).utf8)) }

    /// A binary payload.
    public static func binary(_ bytes: [UInt8]) -> MessageData {
        MessageData(dataType: .binary, rawJSON: Array(JSONScanner.quoted(Data(bytes).base64EncodedString()).utf8))
    }

    /// The payload bytes themselves: UTF-8 text, decoded base64, or the JSON text.
    public var decodedBytes: [UInt8] {
        switch dataType {
        case .json: return rawJSON
        case .text: return Array((JSONScanner.decodeString(rawJSON, 0..<rawJSON.count) ?? "").utf8)
        case .binary, .protobuf:
            let s = JSONScanner.decodeString(rawJSON, 0..<rawJSON.count) ?? ""
            return Data(base64Encoded: s).map { [UInt8]($0) } ?? []
        }
    }

    /// The payload for a raw WebSocket client: (isText, bytes).
    var rawFrame: (isText: Bool, bytes: [UInt8]) {
        switch dataType {
        case .json, .text: return (true, decodedBytes)
        case .binary, .protobuf: return (false, decodedBytes)
        }
    }

    /// The upstream/REST Content-Type of this payload.
    var contentType: String {
        switch dataType {
        case .text: return "text/plain"
        case .json: return "application/json"
        case .binary, .protobuf: return "application/octet-stream"
        }
    }

    /// Builds a payload from an HTTP body and its Content-Type (REST sends and upstream responses).
    /// `defaultType` applies when there is no Content-Type. Returns nil when a JSON body is invalid.
    static func fromHTTP(body: [UInt8], contentType: String?, defaultType: DataType) -> MessageData? {
        let ct = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        let type: DataType
        switch ct {
        case nil, "": type = defaultType
        case "text/plain": type = .text
        case "application/json": type = .json
        default: type = .binary
        }
        switch type {
        case .text: return .text(String(decoding: body, as: UTF8.self))
        case .json: return JSONScanner.isValid(body) ? MessageData(dataType: .json, rawJSON: body) : nil
        case .binary, .protobuf: return .binary(body)
        }
    }
}

/// A request from a client on the JSON protocols.
public enum ClientMessage: Sendable, Equatable {
    case joinGroup(group: String, ackID: UInt64?)
    case leaveGroup(group: String, ackID: UInt64?)
    case sendToGroup(group: String, ackID: UInt64?, noEcho: Bool, data: MessageData)
    case event(name: String, ackID: UInt64?, data: MessageData)
    case sequenceAck(UInt64)
    case ping
    /// `invoke` with `target:"event"`: the upstream's answer comes back as `invokeResponse`.
    case invoke(invocationID: String, event: String, data: MessageData?)
    /// `cancelInvocation` (accepted and ignored: the upstream call is not aborted).
    case cancelInvocation(invocationID: String)

    /// Why a frame is not a valid message (the service closes with 1007).
    public struct ParseError: Error, Equatable, Sendable {
        /// What was wrong (for the log).
        public var reason: String
    }

    /// The ack id, if any.
    public var ackID: UInt64? {
        switch self {
        case .joinGroup(_, let a), .leaveGroup(_, let a), .sendToGroup(_, let a, _, _), .event(_, let a, _): return a
        case .sequenceAck, .ping, .invoke, .cancelInvocation: return nil
        }
    }

    /// Parses one text frame.
    public static func parse(_ bytes: [UInt8]) throws(ParseError) -> ClientMessage {
        guard let fields = JSONScanner.objectFields(bytes) else { throw ParseError(reason: "invalid JSON") }
        func string(_ key: String) -> String? {
            guard let f = fields[key], f.kind == .string else { return nil }
            return JSONScanner.decodeString(bytes, f.range)
        }
        func uint(_ key: String) throws(ParseError) -> UInt64? {
            guard let f = fields[key] else { return nil }
            if f.kind == .null { return nil }
            guard f.kind == .number, let v = UInt64(String(decoding: bytes[f.range], as: UTF8.self)) else {
                throw ParseError(reason: "\(key) is not an unsigned integer")
            }
            return v
        }
        func group() throws(ParseError) -> String {
            guard let g = string("group"), !g.isEmpty, g.count <= 1024,
                  !g.allSatisfy({ $0.isWhitespace }) else { throw ParseError(reason: "invalid group") }
            return g
        }
        func payload() throws(ParseError) -> MessageData {
            var type = DataType.json
            if let f = fields["dataType"], f.kind != .null {
                guard let s = string("dataType"), let t = DataType(rawValue: s.lowercased()) else {
                    throw ParseError(reason: "invalid dataType")
                }
                type = t
            }
            guard let f = fields["data"] else { throw ParseError(reason: "missing data") }
            let raw = Array(bytes[f.range])
            switch type {
            case .json:
                guard f.kind != .null else { throw ParseError(reason: "json data is null") }
            case .text:
                guard f.kind == .string else { throw ParseError(reason: "text data is not a string") }
            case .binary, .protobuf:
                guard f.kind == .string, let s = JSONScanner.decodeString(bytes, f.range),
                      Data(base64Encoded: s) != nil else { throw ParseError(reason: "binary data is not base64") }
            }
            return MessageData(dataType: type, rawJSON: raw)
        }
        guard let type = string("type") else { throw ParseError(reason: "missing type") }
        switch type {
        case "joinGroup": return .joinGroup(group: try group(), ackID: try uint("ackId"))
        case "leaveGroup": return .leaveGroup(group: try group(), ackID: try uint("ackId"))
        case "sendToGroup":
            var noEcho = false
            if let f = fields["noEcho"], f.kind != .null {
                guard f.kind == .bool else { throw ParseError(reason: "noEcho is not a bool") }
                noEcho = bytes[f.range.lowerBound] == UInt8(ascii: "t")
            }
            if let ttl = fields["ttlSeconds"], ttl.kind != .null {
                guard ttl.kind == .number, let v = Int(String(decoding: bytes[ttl.range], as: UTF8.self)),
                      (0...300).contains(v) else { throw ParseError(reason: "invalid ttlSeconds") }
            }
            return .sendToGroup(group: try group(), ackID: try uint("ackId"), noEcho: noEcho, data: try payload())
        case "event":
            guard let name = string("event"), EventName.isValid(name) else { throw ParseError(reason: "invalid event name") }
            return .event(name: name, ackID: try uint("ackId"), data: try payload())
        case "sequenceAck":
            // The docs' example shows a string; accept both.
            if let s = string("sequenceId"), let v = UInt64(s) { return .sequenceAck(v) }
            guard let v = try uint("sequenceId") else { throw ParseError(reason: "missing sequenceId") }
            return .sequenceAck(v)
        case "ping": return .ping
        case "invoke":
            guard let id = string("invocationId"), !id.isEmpty else { throw ParseError(reason: "missing invocationId") }
            if let target = string("target"), target != "event" { throw ParseError(reason: "unsupported invoke target") }
            guard let name = string("event"), EventName.isValid(name) else { throw ParseError(reason: "invalid event name") }
            return .invoke(invocationID: id, event: name, data: fields["data"] == nil ? nil : try payload())
        case "cancelInvocation":
            guard let id = string("invocationId"), !id.isEmpty else { throw ParseError(reason: "missing invocationId") }
            return .cancelInvocation(invocationID: id)
        default: throw ParseError(reason: "unknown type '\(type)'")
        }
    }
}

/// Event name rule: `^[a-z][a-z0-9_.-]{0,127}$`, case-insensitive.
enum EventName {
    static func isValid(_ name: String) -> Bool {
        let u = Array(name.lowercased().utf8)
        guard let first = u.first, u.count <= 128, first >= 0x61 && first <= 0x7A else { return false }
        return u.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x2E || $0 == 0x2D }
    }
}

/// Encoders of the service → client JSON messages (pure, byte-level).
public enum Downstream {
    static func append(_ s: StaticString, _ out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// `{"type":"system","event":"connected",...}`.
    public static func connected(connectionID: String, userID: String?, reconnectionToken: String?) -> [UInt8] {
        var o = [UInt8]()
        append(#"{"type":"system","event":"connected","userId":"#, &o)
        if let userID { JSONScanner.appendString(userID, to: &o) } else { append("null", &o) }
        append(#","connectionId":"#, &o)
        JSONScanner.appendString(connectionID, to: &o)
        if let reconnectionToken {
            append(#","reconnectionToken":"#, &o)
            JSONScanner.appendString(reconnectionToken, to: &o)
        }
        o.append(UInt8(ascii: "}"))
        return o
    }

    /// `{"type":"system","event":"disconnected","message":...}`.
    public static func disconnected(_ message: String) -> [UInt8] {
        var o = [UInt8]()
        append(#"{"type":"system","event":"disconnected","message":"#, &o)
        JSONScanner.appendString(message, to: &o)
        o.append(UInt8(ascii: "}"))
        return o
    }

    /// An ack; `error` is (name, message) when it failed.
    public static func ack(_ ackID: UInt64, error: (name: String, message: String)? = nil) -> [UInt8] {
        var o = [UInt8]()
        append(#"{"type":"ack","ackId":"#, &o)
        o.append(contentsOf: Array(String(ackID).utf8))
        if let error {
            appendFailure(error, &o)
        } else {
            append(#","success":true}"#, &o)
        }
        return o
    }

    /// `,"success":false,"error":{"name":…,"message":…}}`: the end of a failed ack or invokeResponse.
    private static func appendFailure(_ error: (name: String, message: String), _ o: inout [UInt8]) {
        append(#","success":false,"error":{"name":"#, &o)
        JSONScanner.appendString(error.name, to: &o)
        append(#","message":"#, &o)
        JSONScanner.appendString(error.message, to: &o)
        append("}}", &o)
    }

    /// `invokeResponse`: success with optional data, or failure with an error.
    public static func invokeResponse(_ invocationID: String, data: MessageData?, error: (name: String, message: String)?)
        -> [UInt8]
    {
        var o = [UInt8]()
        append(#"{"type":"invokeResponse","invocationId":"#, &o)
        JSONScanner.appendString(invocationID, to: &o)
        if let error {
            appendFailure(error, &o)
            return o
        }
        append(#","success":true"#, &o)
        if let data {
            append(#","dataType":""#, &o)
            o.append(contentsOf: Array(data.dataType.rawValue.utf8))
            append(#"","data":"#, &o)
            o.append(contentsOf: data.rawJSON)
        }
        o.append(UInt8(ascii: "}"))
        return o
    }

    /// `{"type":"pong"}`.
    public static let pong: [UInt8] = Array(#"{"type":"pong"}"#.utf8)

    /// A group message without sequenceId (the reliable flavour splices it in front, see ``withSequenceID``).
    public static func groupMessage(group: String, data: MessageData, fromUserID: String?) -> [UInt8] {
        var o = [UInt8]()
        o.reserveCapacity(data.rawJSON.count + group.utf8.count + 96)
        append(#"{"type":"message","from":"group","group":"#, &o)
        JSONScanner.appendString(group, to: &o)
        append(#","dataType":""#, &o)
        o.append(contentsOf: Array(data.dataType.rawValue.utf8))
        append(#"","data":"#, &o)
        o.append(contentsOf: data.rawJSON)
        append(#","fromUserId":"#, &o)
        if let fromUserID { JSONScanner.appendString(fromUserID, to: &o) } else { append("null", &o) }
        o.append(UInt8(ascii: "}"))
        return o
    }

    /// A server message without sequenceId.
    public static func serverMessage(data: MessageData) -> [UInt8] {
        var o = [UInt8]()
        o.reserveCapacity(data.rawJSON.count + 64)
        append(#"{"type":"message","from":"server","dataType":""#, &o)
        o.append(contentsOf: Array(data.dataType.rawValue.utf8))
        append(#"","data":"#, &o)
        o.append(contentsOf: data.rawJSON)
        o.append(UInt8(ascii: "}"))
        return o
    }

    /// The prefix `{"sequenceId":N,` that turns a message body (minus its leading `{`) into the reliable form.
    public static func sequencePrefix(_ sequenceID: UInt64) -> [UInt8] {
        var o = [UInt8]()
        append(#"{"sequenceId":"#, &o)
        o.append(contentsOf: Array(String(sequenceID).utf8))
        o.append(UInt8(ascii: ","))
        return o
    }

    /// `body` (a JSON object) with `"sequenceId":N` spliced in first.
    public static func withSequenceID(_ sequenceID: UInt64, _ body: [UInt8]) -> [UInt8] {
        sequencePrefix(sequenceID) + body.dropFirst()
    }
}
