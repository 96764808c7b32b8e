import Dispatch
import Foundation
import Logging
import WebPubSub

/// Removes secrets from text before the CLI prints it: the values of `access_token=`,
/// `awps_reconnection_token=` and `AccessKey=`, and anything shaped like a JWT.
enum Redaction {
    static let placeholder = "<redacted>"

    static func redact(_ text: String) -> String {
        var s = text
        s.replace(/(?i)(access_token|awps_reconnection_token)=[^&\s"';]+/) { "\($0.output.1)=\(placeholder)" }
        s.replace(/(?i)(accesskey)\s*=[^;\s"']*/) { "\($0.output.1)=\(placeholder)" }
        s.replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/) { _ in placeholder }
        return s
    }
}

/// Where the CLI writes: event lines on stdout, errors on stderr (redacted), each line whole.
///
/// Event lines keep the client's order: the client's callbacks run on ``queue`` (its callback queue),
/// and the acks that the blocking calls return are printed through the same queue.
final class Output: @unchecked Sendable {  // `lock` guards every write; `queue` is serial
    let json: Bool
    /// The client's callback queue.
    let queue = DispatchQueue(label: "webpubsub.output")
    private let lock = NSLock()

    init(json: Bool) { self.json = json }

    /// Waits until every line queued so far is written.
    func drain() { queue.sync {} }

    /// Writes one line to stdout (unbuffered, so a reader sees it at once). Event lines hold what the
    /// service sent, which the CLI prints as it is; only errors and logs (stderr) can hold a URL or a key.
    func line(_ text: String) {
        let data = Data((text + "\n").utf8)
        lock.withLock { FileHandle.standardOutput.write(data) }
    }

    /// Writes `webpubsub: error: MESSAGE` to stderr.
    func error(_ message: String) {
        let data = Data(("webpubsub: error: " + Redaction.redact(message) + "\n").utf8)
        lock.withLock { FileHandle.standardError.write(data) }
    }

    // MARK: Events

    func connected(_ e: ConnectedEvent) {
        if json {
            line(object(["type": .string("connected"), "connectionId": .string(e.connectionID), "userId": .optional(e.userID)]))
        } else {
            line("* connected connection=\(e.connectionID)" + (e.userID.map { " user=\($0)" } ?? ""))
        }
    }

    func disconnected(_ e: DisconnectedEvent) {
        if json {
            line(object(["type": .string("disconnected"), "connectionId": .optional(e.connectionID), "message": .optional(e.message)]))
        } else {
            line("* disconnected" + (e.connectionID.map { " connection=\($0)" } ?? "") + (e.message.map { " message=\($0)" } ?? ""))
        }
    }

    func stopped() {
        line(json ? object(["type": .string("stopped")]) : "* stopped")
    }

    func rejoinFailed(_ e: RejoinGroupFailedEvent) {
        if json {
            line(object(["type": .string("rejoinGroupFailed"), "group": .string(e.group),
                         "error": .optional(e.error.errorName), "message": .string(e.error.message)]))
        } else {
            line("* rejoin failed group=\(e.group) error=\(e.error.errorName ?? "\(e.error.code)")")
        }
    }

    func groupMessage(_ e: GroupMessageEvent) {
        if json {
            var fields = content(e.content)
            fields["type"] = .string("groupMessage")
            fields["group"] = .string(e.group)
            fields["fromUserId"] = .optional(e.fromUserID)
            fields["sequenceId"] = e.sequenceID.map { .raw(String($0)) } ?? .null
            line(object(fields))
        } else {
            line("[\(e.group)] \(e.fromUserID ?? "-"): \(text(e.content))")
        }
    }

    func serverMessage(_ e: ServerMessageEvent) {
        if json {
            var fields = content(e.content)
            fields["type"] = .string("serverMessage")
            fields["sequenceId"] = e.sequenceID.map { .raw(String($0)) } ?? .null
            line(object(fields))
        } else {
            line("[server] \(text(e.content))")
        }
    }

    /// An operation's ack: JSON lines always; text only for joins (`* joined GROUP`).
    func ack(_ operation: String, target: String, _ result: WebPubSubResult) {
        queue.async { self.printAck(operation, target: target, result) }
    }

    private func printAck(_ operation: String, target: String, _ result: WebPubSubResult) {
        if json {
            line(object(["type": .string("ack"), "operation": .string(operation), "target": .string(target),
                         "ackId": result.ackID.map { .raw(String($0)) } ?? .null,
                         "isDuplicated": .raw(result.isDuplicated ? "true" : "false")]))
        } else if operation == "joinGroup" {
            line("* joined \(target)")
        }
    }

    // MARK: Formatting

    enum Value {
        case string(String)
        case raw(String)
        case null
        static func optional(_ s: String?) -> Value { s.map(Value.string) ?? .null }
    }

    private func text(_ c: MessageContent) -> String {
        switch c {
        case .text(let s), .json(let s): return s
        case .binary(let d): return "(binary) " + d.base64EncodedString()
        case .protobuf(let d): return "(protobuf) " + d.base64EncodedString()
        }
    }

    private func content(_ c: MessageContent) -> [String: Value] {
        switch c {
        case .text(let s): return ["dataType": .string("text"), "data": .string(s)]
        case .json(let s): return ["dataType": .string("json"), "data": .raw(s)]
        case .binary(let d): return ["dataType": .string("binary"), "data": .string(d.base64EncodedString())]
        case .protobuf(let d): return ["dataType": .string("protobuf"), "data": .string(d.base64EncodedString())]
        }
    }

    /// A JSON object with `type` first and the other keys sorted, on one line.
    func object(_ fields: [String: Value]) -> String {
        let keys = fields.keys.sorted { a, b in a == "type" ? b != "type" : (b == "type" ? false : a < b) }
        let body = keys.map { key -> String in
            let value: String
            switch fields[key]! {
            case .string(let s): value = Self.quoted(s)
            case .raw(let r): value = r
            case .null: value = "null"
            }
            return Self.quoted(key) + ":" + value
        }
        return "{" + body.joined(separator: ",") + "}"
    }

    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

/// swift-log to stderr, one line per record, redacted (the client never logs tokens; this makes sure).
struct RedactingStderrLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let label: String

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let meta = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = "\(event.level) \(label): \(event.message)\(meta)"
        FileHandle.standardError.write(Data((Redaction.redact(text) + "\n").utf8))
    }
}
