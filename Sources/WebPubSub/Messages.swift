import Foundation

//===----------------------------------------------------------------------===//
// The JSON subprotocol messages (Docs/Protocol.md): what the client writes
// and what it reads.
//===----------------------------------------------------------------------===//

/// A message the client sends (§2.1).
enum UpstreamMessage: Equatable {
    case joinGroup(group: String, ackID: UInt64?)
    case leaveGroup(group: String, ackID: UInt64?)
    case sendToGroup(group: String, content: MessageContent, ackID: UInt64?, noEcho: Bool)
    case event(name: String, content: MessageContent, ackID: UInt64?)
    case sequenceAck(UInt64)
    case ping
    case invoke(invocationID: String, event: String, content: MessageContent)
    case cancelInvocation(invocationID: String)

    /// The JSON text, with fields in the Python SDK's order.
    func encoded() -> String {
        var w = JSONWriter()
        switch self {
        case .joinGroup(let group, let ackID), .leaveGroup(let group, let ackID):
            if case .joinGroup = self { w.raw(#"{"type":"joinGroup","group":"#) } else { w.raw(#"{"type":"leaveGroup","group":"#) }
            w.string(group)
            if let ackID { w.raw(#","ackId":"#); w.number(ackID) }
            w.raw("}")
        case .sendToGroup(let group, let content, let ackID, let noEcho):
            w = JSONWriter(capacity: 96 + content.estimatedWireSize)
            w.raw(#"{"type":"sendToGroup","group":"#)
            w.string(group)
            if let ackID { w.raw(#","ackId":"#); w.number(ackID) }
            w.writeContent(content)
            w.raw(#","noEcho":"#)
            w.bool(noEcho)
            w.raw("}")
        case .event(let name, let content, let ackID):
            w = JSONWriter(capacity: 80 + content.estimatedWireSize)
            w.raw(#"{"type":"event","event":"#)
            w.string(name)
            if let ackID { w.raw(#","ackId":"#); w.number(ackID) }
            w.writeContent(content)
            w.raw("}")
        case .sequenceAck(let id):
            w.raw(#"{"type":"sequenceAck","sequenceId":"#)
            w.number(id)
            w.raw("}")
        case .ping:
            w.raw(#"{"type":"ping"}"#)
        case .invoke(let invocationID, let event, let content):
            w.raw(#"{"type":"invoke","invocationId":"#)
            w.string(invocationID)
            w.raw(#","target":"event","event":"#)
            w.string(event)
            w.writeContent(content)
            w.raw("}")
        case .cancelInvocation(let invocationID):
            w.raw(#"{"type":"cancelInvocation","invocationId":"#)
            w.string(invocationID)
            w.raw("}")
        }
        return w.text
    }
}

extension MessageContent {
    var estimatedWireSize: Int {
        switch self {
        case .text(let s), .json(let s): return s.utf8.count + 8
        case .binary(let d), .protobuf(let d): return (d.count + 2) / 3 * 4 + 2
        }
    }

    /// Checks that the content fits its data type (before anything is sent).
    func validate() -> WebPubSubError? {
        if case .json(let text) = self, !JSONScanner.isValidJSON(text) {
            return WebPubSubError(.invalidContent, "content of data type json is not valid JSON text")
        }
        return nil
    }
}

extension JSONWriter {
    mutating func writeContent(_ content: MessageContent) {
        raw(#","dataType":"#)
        switch content {
        case .text(let s):
            raw(#""text","data":"#)
            string(s)
        case .json(let s):
            raw(#""json","data":"#)
            rawText(s)
        case .binary(let d):
            raw(#""binary","data":""#)
            rawText(d.base64EncodedString())
            raw("\"")
        case .protobuf(let d):
            raw(#""protobuf","data":""#)
            rawText(d.base64EncodedString())
            raw("\"")
        }
    }
}

/// The error object of an `ack` or `invokeResponse`.
struct ServiceErrorDetail: Equatable, Sendable {
    var name: String
    var message: String
}

/// A message the service sends (§2.2).
enum DownstreamMessage: Equatable {
    case connected(connectionID: String, userID: String?, reconnectionToken: String?)
    case disconnected(message: String?)
    case ack(ackID: UInt64, success: Bool, error: ServiceErrorDetail?)
    case groupMessage(group: String, fromUserID: String?, content: MessageContent, sequenceID: UInt64?)
    case serverMessage(content: MessageContent, sequenceID: UInt64?)
    case pong
    case invokeResponse(invocationID: String, success: Bool?, content: MessageContent?, error: ServiceErrorDetail?)
    /// A well-formed message this client does not know (skipped).
    case unknown(type: String)
    /// A message that could not be read. `sequenceID` is set when it could still be read (so it is acked).
    case malformed(reason: String, sequenceID: UInt64?)

    /// Reads one text frame. Never throws: garbage becomes `.malformed`.
    static func decode(_ text: String) -> DownstreamMessage {
        var text = text
        // The frame's own bytes, not a copy (a received message is a native, contiguous String).
        return text.withUTF8 { decode(utf8: $0) }
    }

    private static func decode(utf8 bytes: UnsafeBufferPointer<UInt8>) -> DownstreamMessage {
        let fields: [String: JSONField]
        do {
            fields = try JSONScanner.topLevelFields(bytes)
        } catch let e as JSONSyntaxError {
            return .malformed(reason: "invalid JSON at offset \(e.offset): \(e.reason)", sequenceID: nil)
        } catch {
            return .malformed(reason: "invalid JSON", sequenceID: nil)
        }
        func string(_ key: String) -> String? {
            if case .string(let s)? = fields[key]?.node { return s }
            return nil
        }
        func uint(_ key: String) -> UInt64? {
            if case .number(let n)? = fields[key]?.node { return UInt64(n) }
            return nil
        }
        func bool(_ key: String) -> Bool? {
            if case .bool(let b)? = fields[key]?.node { return b }
            return nil
        }
        func errorDetail() -> ServiceErrorDetail? {
            guard case .object(let o)? = fields["error"]?.node else { return nil }
            var name = "", message = ""
            if case .string(let s)? = o["name"] { name = s }
            if case .string(let s)? = o["message"] { message = s }
            return ServiceErrorDetail(name: name, message: message)
        }
        /// nil content with a reason when `dataType`/`data` do not fit.
        func content() -> Result<MessageContent, DecodeFailure> {
            let dataType = string("dataType") ?? "json"  // missing dataType means json (§2.1)
            guard let field = fields["data"] else { return .failure(DecodeFailure("missing data")) }
            switch dataType {
            case "text":
                guard case .string(let s) = field.node else { return .failure(DecodeFailure("text data is not a string")) }
                return .success(.text(s))
            case "json":
                return .success(.json(String(decoding: UnsafeBufferPointer(rebasing: bytes[field.range]), as: UTF8.self)))
            case "binary", "protobuf":
                guard case .string(let s) = field.node, let data = Data(base64Encoded: s) else {
                    return .failure(DecodeFailure("\(dataType) data is not base64"))
                }
                return .success(dataType == "binary" ? .binary(data) : .protobuf(data))
            default:
                return .failure(DecodeFailure("unknown dataType '\(dataType)'"))
            }
        }

        guard let type = string("type") else { return .malformed(reason: "no type", sequenceID: uint("sequenceId")) }
        switch type {
        case "system":
            switch string("event") {
            case "connected":
                guard let id = string("connectionId") else { return .malformed(reason: "connected without connectionId", sequenceID: nil) }
                return .connected(connectionID: id, userID: string("userId"), reconnectionToken: string("reconnectionToken"))
            case "disconnected":
                return .disconnected(message: string("message"))
            case let other:
                return .unknown(type: "system/\(other ?? "?")")
            }
        case "ack":
            guard let ackID = uint("ackId"), let success = bool("success") else {
                return .malformed(reason: "ack without ackId or success", sequenceID: nil)
            }
            return .ack(ackID: ackID, success: success, error: success ? nil : errorDetail())
        case "message":
            let sequenceID = uint("sequenceId")
            if fields["sequenceId"] != nil && sequenceID == nil {
                return .malformed(reason: "sequenceId is not an unsigned integer", sequenceID: nil)
            }
            let c: MessageContent
            switch content() {
            case .success(let v): c = v
            case .failure(let f): return .malformed(reason: f.reason, sequenceID: sequenceID)
            }
            switch string("from") {
            case "group":
                guard let group = string("group") else { return .malformed(reason: "group message without group", sequenceID: sequenceID) }
                return .groupMessage(group: group, fromUserID: string("fromUserId"), content: c, sequenceID: sequenceID)
            case "server":
                return .serverMessage(content: c, sequenceID: sequenceID)
            default:
                return .malformed(reason: "message from unknown source", sequenceID: sequenceID)
            }
        case "pong":
            return .pong
        case "invokeResponse":
            guard let id = string("invocationId") else { return .malformed(reason: "invokeResponse without invocationId", sequenceID: nil) }
            var c: MessageContent?
            if fields["data"] != nil, case .success(let v) = content() { c = v }
            let success = bool("success")
            return .invokeResponse(invocationID: id, success: success, content: c, error: success == false ? errorDetail() : nil)
        default:
            return .unknown(type: type)
        }
    }
}

struct DecodeFailure: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}
