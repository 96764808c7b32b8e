//===----------------------------------------------------------------------===//
// swift-webpubsub: the RFC 6455 protocol logic as a pure value type.
//===----------------------------------------------------------------------===//

/// The protocol logic of an open WebSocket connection, without I/O: feed it frames (or framing errors)
/// and local requests; it answers with the action the I/O shell must perform.
struct WebSocketStateMachine: Sendable {
    enum State: Equatable, Sendable {
        /// Messages flow both ways.
        case open
        /// We sent a close frame (a close request or a failure) and wait for the peer's.
        case closeSent
        /// The peer sent a close frame and we answered; waiting for the TCP close.
        case closeReceived
        /// Both close frames were exchanged.
        case closed
    }

    /// What the I/O shell must do.
    enum Action: Equatable, Sendable {
        /// Nothing.
        case none
        /// Hand a complete message to the application.
        case deliver(WebSocketMessage)
        /// Send a pong with this payload.
        case sendPong([UInt8])
        /// Tell the application a pong arrived.
        case pongReceived([UInt8])
        /// The peer started the close handshake: send this close frame back, then wait for the TCP close.
        case replyClose(code: WebSocketCloseCode?, reason: String)
        /// The peer answered our close frame: the handshake is complete; wait for the TCP close.
        case closeHandshakeCompleted
        /// Fail the connection: send a close frame with this code, then close (RFC 6455 §7.1.7).
        case fail(WebSocketCloseCode, WebSocketError)
    }

    private(set) var state: State = .open
    let maximumMessageSize: Int
    /// The peer's close code and reason, once its close frame arrived (code nil: the frame had none).
    private(set) var peerClose: (code: WebSocketCloseCode?, reason: String)?

    private var fragmentOpcode: WebSocketOpcode?
    private var fragments: [UInt8] = []
    private var validator = UTF8Validator()
    /// Validation of the text frame still arriving (``inspectPartial(_:_:)``), and how many bytes it covers.
    private var partialValidator: UTF8Validator?
    private var partialChecked = 0

    init(maximumMessageSize: Int) {
        self.maximumMessageSize = maximumMessageSize
    }

    /// Whether data frames may be sent.
    var canSend: Bool { state == .open }

    /// Part of a text frame arrived (the frame is not complete yet): validate the new bytes now, so that
    /// invalid UTF-8 fails the connection at the offending bytes rather than at the end of the frame.
    mutating func inspectPartial(_ opcode: WebSocketOpcode, _ payloadSoFar: ArraySlice<UInt8>) -> Action {
        guard state == .open else { return .none }
        let isText = (opcode == .text && fragmentOpcode == nil) || (opcode == .continuation && fragmentOpcode == .text)
        guard isText else { return .none }
        if partialValidator == nil {
            partialValidator = opcode == .continuation ? validator : UTF8Validator()
            partialChecked = 0
        }
        let fresh = payloadSoFar.dropFirst(partialChecked)
        partialChecked = payloadSoFar.count
        if !partialValidator!.feed(fresh) {
            return fail(.invalidFramePayloadData, .invalidUTF8, "text message is not valid UTF-8")
        }
        return .none
    }

    /// The peer sent `frame`.
    mutating func receive(_ frame: WebSocketFrame) -> Action {
        partialValidator = nil
        partialChecked = 0
        switch state {
        case .open:
            break
        case .closeSent:
            // After our close frame only the peer's close matters (RFC 6455 §5.5.1).
            guard frame.opcode == .close else { return .none }
            return receiveClose(frame.payload)
        case .closeReceived, .closed:
            return .none
        }
        switch frame.opcode {
        case .ping:
            return .sendPong(frame.payload)
        case .pong:
            return .pongReceived(frame.payload)
        case .close:
            return receiveClose(frame.payload)
        case .text, .binary:
            if fragmentOpcode != nil {
                return fail(.protocolError, .protocolViolation, "a new data frame inside a fragmented message")
            }
            if frame.payload.count > maximumMessageSize {
                return fail(.messageTooBig, .messageTooBig, "message exceeds \(maximumMessageSize) bytes")
            }
            if frame.fin {
                if frame.opcode == .text {
                    guard UTF8Validator.isValid(frame.payload) else {
                        return fail(.invalidFramePayloadData, .invalidUTF8, "text message is not valid UTF-8")
                    }
                    return .deliver(.text(String(decoding: frame.payload, as: UTF8.self)))
                }
                return .deliver(.binary(frame.payload))
            }
            fragmentOpcode = frame.opcode
            validator = UTF8Validator()
            fragments = frame.payload
            if frame.opcode == .text && !validator.feed(frame.payload) {
                return fail(.invalidFramePayloadData, .invalidUTF8, "text message is not valid UTF-8")
            }
            return .none
        case .continuation:
            guard let opcode = fragmentOpcode else {
                return fail(.protocolError, .protocolViolation, "continuation frame without a message to continue")
            }
            if fragments.count + frame.payload.count > maximumMessageSize {
                return fail(.messageTooBig, .messageTooBig, "message exceeds \(maximumMessageSize) bytes")
            }
            if opcode == .text && !validator.feed(frame.payload) {
                return fail(.invalidFramePayloadData, .invalidUTF8, "text message is not valid UTF-8")
            }
            fragments.append(contentsOf: frame.payload)
            guard frame.fin else { return .none }
            fragmentOpcode = nil
            let payload = fragments
            fragments = []
            if opcode == .text {
                guard validator.isComplete else {
                    return fail(.invalidFramePayloadData, .invalidUTF8, "text message ends inside a UTF-8 sequence")
                }
                return .deliver(.text(String(decoding: payload, as: UTF8.self)))
            }
            return .deliver(.binary(payload))
        }
    }

    /// The frame parser reported a violation.
    mutating func receive(_ error: FrameError) -> Action {
        guard state == .open else { return .none }
        let code: WebSocketError.Code = error.closeCode == .messageTooBig ? .messageTooBig : .protocolViolation
        return fail(error.closeCode, code, error.message)
    }

    /// The peer keeps sending frames that need an answer (pings) but does not read the answers: the
    /// unwritten replies passed their bound. Fails with 1008 (policy violation).
    mutating func peerNotReading(_ message: String) -> Action {
        guard state == .open else { return .none }
        return fail(.policyViolation, .peerNotReading, message)
    }

    /// The application asks to close. Returns true when a close frame must be sent.
    mutating func close() -> Bool {
        guard state == .open else { return false }
        state = .closeSent
        return true
    }

    private mutating func receiveClose(_ payload: [UInt8]) -> Action {
        var code: WebSocketCloseCode?
        var reason = ""
        if payload.count == 1 {
            return fail(.protocolError, .protocolViolation, "close frame with a 1-byte payload")
        }
        if payload.count >= 2 {
            let c = WebSocketCloseCode(UInt16(payload[0]) << 8 | UInt16(payload[1]))
            guard c.isValidOnWire else {
                return fail(.protocolError, .protocolViolation, "invalid close code \(c.rawValue)")
            }
            let reasonBytes = payload[2...]
            guard UTF8Validator.isValid(reasonBytes) else {
                return fail(.invalidFramePayloadData, .invalidUTF8, "close reason is not valid UTF-8")
            }
            code = c
            reason = String(decoding: reasonBytes, as: UTF8.self)
        }
        peerClose = (code, reason)
        switch state {
        case .open:
            state = .closeReceived
            fragments = []
            fragmentOpcode = nil
            return .replyClose(code: code, reason: "")
        case .closeSent:
            state = .closed
            return .closeHandshakeCompleted
        case .closeReceived, .closed:
            return .none
        }
    }

    private mutating func fail(_ close: WebSocketCloseCode, _ code: WebSocketError.Code, _ message: String) -> Action {
        let wasOpen = state == .open
        state = .closeSent
        fragments = []
        fragmentOpcode = nil
        guard wasOpen else { return .none }
        return .fail(close, WebSocketError(code, message, closeCode: close))
    }
}

extension WebSocketStateMachine.Action {
    static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case (.none, .none), (.closeHandshakeCompleted, .closeHandshakeCompleted): return true
        case (.deliver(let a), .deliver(let b)): return a == b
        case (.sendPong(let a), .sendPong(let b)), (.pongReceived(let a), .pongReceived(let b)): return a == b
        case (.replyClose(let a, let r1), .replyClose(let b, let r2)): return a == b && r1 == r2
        case (.fail(let a, let e1), .fail(let b, let e2)): return a == b && e1.code == e2.code
        default: return false
        }
    }
}
