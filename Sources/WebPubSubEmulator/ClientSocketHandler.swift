import Logging
import NIOCore
import NIOWebSocket

/// Reads one client socket after the upgrade: reassembles messages, answers pings, handles close frames, and
/// hands requests to the state. Confined to its channel's event loop (NIO handler rules).
final class ClientSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let state: ServiceState
    /// nil when a recovery was refused (the socket is being closed with 1008).
    let session: Session?
    let maxMessageSize: Int
    private var fragments: ByteBuffer?
    private var fragmentOpcode: WebSocketOpcode = .text
    private var clientCloseCode: UInt16?
    private var closing = false
    /// The service sent its close frame: the peer's close frame only completes the handshake.
    private var serviceSentClose = false

    init(state: ServiceState, session: Session?, maxMessageSize: Int) {
        self.state = state
        self.session = session
        self.maxMessageSize = maxMessageSize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.opcode == .connectionClose && serviceSentClose {
            context.close(promise: nil)
            return
        }
        guard let session, !closing else { return }
        switch frame.opcode {
        case .connectionClose:
            var d = frame.unmaskedData
            let code = d.readInteger(as: UInt16.self) ?? 1005
            clientCloseCode = code
            closing = true
            var reply = context.channel.allocator.buffer(capacity: 2)
            reply.writeInteger(code == 1005 ? 1000 : code)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
                .whenComplete { _ in channel.close(promise: nil) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                                  promise: nil)
        case .pong:
            break
        case .text, .binary:
            guard fragments == nil else { return fail(session, .protocolError, "Unexpected new message in a fragmented message.") }
            if frame.fin {
                message(session, frame.opcode, frame.unmaskedData)
            } else {
                fragments = frame.unmaskedData
                fragmentOpcode = frame.opcode
            }
        case .continuation:
            guard var buffer = fragments else { return fail(session, .protocolError, "Unexpected continuation frame.") }
            var piece = frame.unmaskedData
            guard buffer.readableBytes + piece.readableBytes <= maxMessageSize else {
                fragments = nil
                return fail(session, .messageTooLarge, "The client message is too large.")
            }
            buffer.writeBuffer(&piece)
            if frame.fin {
                fragments = nil
                message(session, fragmentOpcode, buffer)
            } else {
                fragments = buffer
            }
        default:
            fail(session, .protocolError, "Unknown opcode.")
        }
    }

    private func message(_ s: Session, _ opcode: WebSocketOpcode, _ buffer: ByteBuffer) {
        guard buffer.readableBytes <= maxMessageSize else {
            return fail(s, .messageTooLarge, "The client message is too large.")
        }
        let bytes = Array(buffer.readableBytesView)
        if s.kind == .raw {
            state.handleRaw(s, text: opcode == .text, bytes: bytes)
            return
        }
        guard opcode == .text else {
            return fail(s, .unacceptableData, "Binary frames are not supported by the JSON subprotocols.")
        }
        do {
            state.handle(s, try ClientMessage.parse(bytes))
        } catch {
            state.logger.warning("invalid client message", metadata: ["connectionId": "\(s.id)", "error": "\(error.reason)"])
            fail(s, .dataInconsistentWithMessage, "The client message is not a valid JSON protocol message.")
        }
    }

    /// Service-initiated close for bad input: `disconnected`, close frame with `code`, the session ends.
    private func fail(_ s: Session, _ code: WebSocketErrorCode, _ reason: String) {
        state.logger.warning("closing connection for bad input",
                             metadata: ["connectionId": "\(s.id)", "code": "\(code)", "reason": "\(reason)"])
        closing = true
        state.countBadRequest()
        state.mutate { fx in state.close(s, code: code, reason: reason, &fx) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ServiceClosing {
            serviceSentClose = true
            closing = true
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// More than ``WebPubSubEmulator/Configuration/outboundBufferLimit`` bytes wait for a peer that does not
    /// read: close it with 1008 `SlowClient` rather than buffer without bound. The close frame queues behind
    /// what the peer never read, so the socket is closed after a grace period whether or not it gets through.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        defer { context.fireChannelWritabilityChanged() }
        guard !context.channel.isWritable, let session, !closing else { return }
        let waiting = (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
        state.logger.warning("slow client; closing connection",
                             metadata: ["connectionId": "\(session.id)", "bufferedBytes": "\(waiting)"])
        closing = true
        state.countSlowClient()
        state.mutate { fx in state.close(session, code: .policyViolation, reason: "SlowClient", &fx) }
        let channel = context.channel
        channel.eventLoop.scheduleTask(in: .seconds(2)) { Outbox.abort(channel) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let session { state.detached(session, channel: context.channel, clientClosed: clientCloseCode) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let session else { context.close(promise: nil); return }
        // After a decoder error, more input only reports that the decoder is in its error state; the close we
        // already started (close frame, then the socket) must not be cut short by a reset.
        if closing || error is ByteToMessageDecoderError { return }
        if let ws = error as? NIOWebSocketError {
            switch ws {
            case .invalidFrameLength: fail(session, .messageTooLarge, "The client message is too large.")
            default: fail(session, .protocolError, "Invalid WebSocket frame.")
            }
        } else {
            state.logger.debug("socket error", metadata: ["connectionId": "\(session.id)", "error": "\(error)"])
            context.close(promise: nil)
        }
    }
}
