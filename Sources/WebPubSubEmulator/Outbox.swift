import NIOCore
import NIOPosix
import NIOWebSocket

/// One thing to do to a client socket, on its event loop.
enum SocketOp: Sendable {
    /// Write a frame (flushed at the end of the batch).
    case frame(WebSocketFrame)
    /// Send a close frame with this code and reason, then close the socket.
    case close(code: WebSocketErrorCode, reason: String)
    /// Drop the TCP connection now with a reset (SO_LINGER 0), no close frame.
    case abort
    /// Stop or restart reading (pause/resume hooks).
    case setReading(Bool)
}

/// Collects socket operations while the state lock is held, then hands them to the event loops.
///
/// `submit()` must be called while the state lock is still held: `EventLoop.execute` enqueues in FIFO order,
/// so operations reach each socket in the order the state decided them (sequence ids stay in order even
/// when two threads fan out to the same connection).
struct Outbox {
    // One batch per event loop; there are only a few loops, so a linear search beats hashing.
    private var batches: [(loop: any EventLoop, ops: [(any Channel, SocketOp)])] = []
    private var last = -1

    var isEmpty: Bool { batches.isEmpty }

    mutating func add(_ channel: any Channel, _ op: SocketOp) {
        let loop = channel.eventLoop
        if last >= 0, batches[last].loop === loop {
            batches[last].ops.append((channel, op))
            return
        }
        if let i = batches.firstIndex(where: { $0.loop === loop }) {
            last = i
        } else {
            batches.append((loop, []))
            last = batches.count - 1
        }
        batches[last].ops.append((channel, op))
    }

    /// Schedules every batch on its loop (call with the state lock held).
    mutating func submit() {
        for batch in batches {
            let ops = batch.ops
            batch.loop.execute { Outbox.run(ops) }
        }
        batches.removeAll()
        last = -1
    }

    /// Runs operations on the event loop that owns their channels.
    static func run(_ ops: [(any Channel, SocketOp)]) {
        var toFlush: [any Channel] = []
        for (channel, op) in ops {
            switch op {
            case .frame(let frame):
                guard channel.isActive else { continue }
                channel.write(frame, promise: nil)
                if toFlush.last.map({ $0 !== channel }) ?? true { toFlush.append(channel) }
            case .close(let code, let reason):
                guard channel.isActive else { continue }
                // Tell the socket's handler that the service started the close handshake.
                channel.pipeline.fireUserInboundEventTriggered(ServiceClosing())
                var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
                data.write(webSocketErrorCode: code)
                data.writeString(reason)
                let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
                channel.writeAndFlush(frame).whenComplete { _ in
                    // Give the peer a moment to answer the close frame, then close the socket.
                    channel.eventLoop.scheduleTask(in: .milliseconds(500)) { channel.close(promise: nil) }
                }
            case .abort:
                abort(channel)
            case .setReading(let on):
                channel.setOption(ChannelOptions.autoRead, value: on).whenSuccess {
                    if on { channel.read() }
                }
            }
        }
        for channel in toFlush { channel.flush() }
    }

    /// TCP reset: SO_LINGER {1, 0}, then close.
    static func abort(_ channel: any Channel) {
        guard channel.isActive else { return }
        guard let provider = channel as? any SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// The user event announcing a service-initiated close to ``ClientSocketHandler``.
struct ServiceClosing: Sendable {}
