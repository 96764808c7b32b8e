//===----------------------------------------------------------------------===//
// libFuzzer harness of the client's service-message decoder (built into the
// WebPubSub module by Tests/Fuzz/fuzz.sh). Target `downstream`:
//   DownstreamMessage.decode never traps; what it accepts as `.json` content is
//   valid JSON; every message it reads re-encodes to JSON that decodes to the
//   same message.
//===----------------------------------------------------------------------===//
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func wpsFuzzClient(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let message = DownstreamMessage.decode(text)
    if let json = FuzzDownstream.encode(message) {
        guard JSONScanner.isValidJSON(json) else { fatalError("re-encoded message is not JSON: \(json)") }
        let again = DownstreamMessage.decode(json)
        guard again == message else { fatalError("round trip changed the message:\n\(message)\n\(again)\n\(json)") }
    }
    return 0
}

enum FuzzDownstream {
    static func content(_ c: MessageContent, _ w: inout JSONWriter) {
        switch c {
        case .json(let s):
            guard JSONScanner.isValidJSON(s) else { fatalError("accepted as json, but not JSON: \(s)") }
        default: break
        }
        w.writeContent(c)
    }

    static func sequence(_ id: UInt64?, _ w: inout JSONWriter) {
        if let id { w.raw(#","sequenceId":"#); w.number(id) }
    }

    static func optionalString(_ key: StaticString, _ value: String?, _ w: inout JSONWriter) {
        guard let value else { return }
        w.raw(key)
        w.string(value)
    }

    static func error(_ e: ServiceErrorDetail?, _ w: inout JSONWriter) {
        guard let e else { return }
        w.raw(#","error":{"name":"#)
        w.string(e.name)
        w.raw(#","message":"#)
        w.string(e.message)
        w.raw("}")
    }

    /// The message as the service would write it; nil for `.unknown` and `.malformed`.
    static func encode(_ m: DownstreamMessage) -> String? {
        var w = JSONWriter()
        switch m {
        case .connected(let id, let user, let token):
            w.raw(#"{"type":"system","event":"connected","connectionId":"#)
            w.string(id)
            optionalString(#","userId":"#, user, &w)
            optionalString(#","reconnectionToken":"#, token, &w)
        case .disconnected(let message):
            w.raw(#"{"type":"system","event":"disconnected""#)
            optionalString(#","message":"#, message, &w)
        case .ack(let id, let success, let e):
            w.raw(#"{"type":"ack","ackId":"#)
            w.number(id)
            w.raw(#","success":"#)
            w.bool(success)
            error(e, &w)
        case .groupMessage(let group, let from, let c, let seq):
            w.raw(#"{"type":"message","from":"group","group":"#)
            w.string(group)
            optionalString(#","fromUserId":"#, from, &w)
            content(c, &w)
            sequence(seq, &w)
        case .serverMessage(let c, let seq):
            w.raw(#"{"type":"message","from":"server""#)
            content(c, &w)
            sequence(seq, &w)
        case .pong:
            w.raw(#"{"type":"pong""#)
        case .invokeResponse(let id, let success, let c, let e):
            w.raw(#"{"type":"invokeResponse","invocationId":"#)
            w.string(id)
            if let success { w.raw(#","success":"#); w.bool(success) }
            if let c { content(c, &w) }
            error(e, &w)
        case .unknown, .malformed:
            return nil
        }
        w.raw("}")
        return w.text
    }
}
