//===----------------------------------------------------------------------===//
// libFuzzer harnesses of the WebSocket module (built by Tests/Fuzz/fuzz.sh into the
// module itself, so internal types are reachable). WPS_FUZZ_TARGET picks one:
//   frames     FrameParser + WebSocketStateMachine: the actions of a whole-buffer parse
//              equal those of the same bytes fed in pieces; delivered text is UTF-8 and
//              no message exceeds the limit.
//   handshake  Handshake.parse: the answer decided from a prefix agrees with the whole
//              answer; bodies are capped; leftover bytes are exactly those after the head.
// A broken oracle calls fatalError, which libFuzzer reports as a crash with the input.
//===----------------------------------------------------------------------===//
import Foundation

private let fuzzTarget = ProcessInfo.processInfo.environment["WPS_FUZZ_TARGET"] ?? "frames"

@_cdecl("LLVMFuzzerTestOneInput")
public func wpsFuzzWebSocket(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch fuzzTarget {
    case "frames": FuzzFrames.run(bytes)
    case "handshake": FuzzHandshake.run(bytes)
    default: fatalError("unknown WPS_FUZZ_TARGET \(fuzzTarget)")
    }
    return 0
}

/// Split points from the input itself, so that libFuzzer explores them too.
func fuzzSplits(_ seed: UInt8, count: Int) -> [Int] {
    var cuts: [Int] = []
    var state = UInt32(seed) &* 2_654_435_761 &+ 1
    var at = 0
    while at < count {
        state = state &* 1_103_515_245 &+ 12_345
        at += 1 + Int((state >> 16) % 7)
        cuts.append(min(at, count))
    }
    return cuts
}

enum FuzzFrames {
    static let limit = 4096

    static func actions(_ input: ArraySlice<UInt8>, cuts: [Int]) -> [String] {
        var parser = FrameParser(maximumFrameSize: limit)
        var machine = WebSocketStateMachine(maximumMessageSize: limit)
        var out: [String] = []
        var last = input.startIndex
        func record(_ a: WebSocketStateMachine.Action) -> Bool {
            switch a {
            case .none: return true
            case .deliver(let m):
                switch m {
                case .text(let s):
                    guard s.utf8.count <= limit, String(validating: Array(s.utf8), as: UTF8.self) == s else {
                        fatalError("delivered text is not the UTF-8 it claims")
                    }
                    out.append("text \(Array(s.utf8))")
                case .binary(let b):
                    guard b.count <= limit else { fatalError("message over the limit delivered") }
                    out.append("binary \(b)")
                }
            case .sendPong(let p): out.append("pong \(p)")
            case .pongReceived(let p): out.append("pongReceived \(p)")
            case .replyClose(let c, _): out.append("replyClose \(c?.rawValue ?? 0)")
            case .closeHandshakeCompleted: out.append("closed")
            case .fail(let c, let e): out.append("fail \(c.rawValue) \(e.code)"); return false
            }
            return true
        }
        for cut in cuts + [input.count] {
            let end = input.startIndex + cut
            guard end > last else { continue }
            parser.append(input[last..<end])
            last = end
            while true {
                do {
                    guard let frame = try parser.next() else {
                        if let partial = parser.partialFrame() {
                            if !record(machine.inspectPartial(partial.opcode, partial.payload)) { return out }
                        }
                        break
                    }
                    if !record(machine.receive(frame)) { return out }
                } catch {
                    _ = record(machine.receive(error))
                    return out
                }
            }
        }
        return out
    }

    static func run(_ bytes: [UInt8]) {
        guard let seed = bytes.first else { return }
        let input = bytes[1...]
        let whole = actions(input, cuts: [])
        let split = actions(input, cuts: fuzzSplits(seed, count: input.count))
        let byteWise = actions(input, cuts: Array(0..<input.count))
        guard whole == split, whole == byteWise else {
            fatalError("split input gave other actions:\nwhole \(whole)\nsplit \(split)\nbytes \(byteWise)")
        }
    }
}

enum FuzzHandshake {
    static let handshake = Handshake(key: "dGhlIHNhbXBsZSBub25jZQ==", subprotocols: ["json.webpubsub.azure.v1"])

    static func describe(_ o: Handshake.Outcome) -> String {
        switch o {
        case .needMore: return "needMore"
        case .upgraded(let r, _): return "upgraded \(r.status) \(r.subprotocol ?? "-") \(r.headers.map { "\($0.name)=\($0.value)" })"
        case .rejected(let s, let h, _, let l): return "rejected \(s) \(h.map { "\($0.name)=\($0.value)" }) \(l ?? -1)"
        case .failed(let e): return "failed \(e.code)"
        }
    }

    static func check(_ o: Handshake.Outcome, _ buffer: [UInt8]) {
        switch o {
        case .rejected(_, _, let body, let length):
            guard body.count <= Handshake.maximumBodySize, (length ?? 0) >= 0 else { fatalError("body not capped") }
            if let length, body.count > length { fatalError("more body than Content-Length") }
        case .upgraded(_, let leftover):
            guard let head = Handshake.findHeadEnd(buffer), Array(buffer[(head + 4)...]) == leftover else {
                fatalError("leftover is not the bytes after the head")
            }
        default: break
        }
    }

    static func run(_ bytes: [UInt8]) {
        let whole = handshake.parse(bytes)
        check(whole, bytes)
        // The shell feeds growing prefixes with the scan position of the previous call.
        var scanned = 0
        for cut in fuzzSplits(bytes.first ?? 0, count: bytes.count) {
            let prefix = Array(bytes[0..<cut])
            let o = handshake.parse(prefix, scannedUpTo: scanned)
            scanned = prefix.count
            check(o, prefix)
            if case .needMore = o { continue }
            // Decided early: the whole buffer must give the same decision (bodies/leftovers may be longer).
            guard describe(o) == describe(whole) else {
                fatalError("prefix of \(cut) decided \(describe(o)), the whole answer \(describe(whole))")
            }
            return
        }
    }
}
