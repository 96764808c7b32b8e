import Foundation

/// The data type of a message on the wire (`dataType`).
public enum WebPubSubDataType: String, Sendable, Hashable, CaseIterable {
    /// `"text"`: a JSON string on the wire.
    case text
    /// `"json"`: any JSON value on the wire.
    case json
    /// `"binary"`: base64 on the wire.
    case binary
    /// `"protobuf"`: base64 on the wire.
    case protobuf
}

/// The content of a message: what you send and what you receive.
///
/// `.json` holds JSON *text* (any JSON value: object, array, string, number, bool, null); it is
/// checked before sending and travels as a JSON value. `.binary` and `.protobuf` travel as base64.
public enum MessageContent: Sendable, Hashable {
    /// A string (`dataType: "text"`).
    case text(String)
    /// A JSON value, as JSON text (`dataType: "json"`), e.g. `.json(#"{"a":1}"#)`.
    case json(String)
    /// Bytes (`dataType: "binary"`, base64 on the wire).
    case binary(Data)
    /// Protobuf bytes (`dataType: "protobuf"`, base64 on the wire).
    case protobuf(Data)

    /// The wire data type of this content.
    public var dataType: WebPubSubDataType {
        switch self {
        case .text: return .text
        case .json: return .json
        case .binary: return .binary
        case .protobuf: return .protobuf
        }
    }

    /// JSON content made by encoding `value` with `encoder`.
    public static func json<T: Encodable>(encoding value: T, encoder: JSONEncoder = JSONEncoder()) throws -> MessageContent {
        let data = try encoder.encode(value)
        return .json(String(decoding: data, as: UTF8.self))
    }

    /// Decodes `.json` content (or `.text` holding JSON) into `type`.
    public func decodeJSON<T: Decodable>(_ type: T.Type, decoder: JSONDecoder = JSONDecoder()) throws -> T {
        switch self {
        case .json(let text), .text(let text):
            return try decoder.decode(type, from: Data(text.utf8))
        case .binary(let data), .protobuf(let data):
            return try decoder.decode(type, from: data)
        }
    }

    /// The text of `.text`, or nil.
    public var text: String? {
        if case .text(let s) = self { return s }
        return nil
    }

    /// The JSON text of `.json`, or nil.
    public var jsonText: String? {
        if case .json(let s) = self { return s }
        return nil
    }

    /// The bytes of `.binary` or `.protobuf`, or nil.
    public var bytes: Data? {
        switch self {
        case .binary(let d), .protobuf(let d): return d
        default: return nil
        }
    }
}

extension MessageContent: CustomStringConvertible {
    /// The data type and size, never the payload (safe to log).
    public var description: String {
        switch self {
        case .text(let s): return "text(\(s.count) chars)"
        case .json(let s): return "json(\(s.utf8.count) bytes)"
        case .binary(let d): return "binary(\(d.count) bytes)"
        case .protobuf(let d): return "protobuf(\(d.count) bytes)"
        }
    }
}
