import NIOConcurrencyHelpers
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

/// Collects socket operations while the state lock is held, then hands them to each socket's ``ChannelMailbox``.
///
/// `submit()` must be called while the state lock is still held: mailboxes keep FIFO order, so operations
/// reach each socket in the order the state decided them (sequence ids stay in order even when two threads
/// fan out to the same connection).
struct Outbox {
    private var batches: [ObjectIdentifier: (channel: any Channel, ops: [SocketOp])] = [:]
    private var order: [ObjectIdentifier] = []

    mutating func add(_ channel: any Channel, _ op: SocketOp) {
        let key = ObjectIdentifier(channel)
        if batches[key] == nil {
            batches[key] = (channel, [])
            order.append(key)
        }
        batches[key]!.ops.append(op)
    }

    /// Posts every batch to its channel's mailbox (call with the state lock held).
    mutating func submit() {
        for key in order {
            let batch = batches[key]!
            ChannelMailbox.of(batch.channel).post(batch.ops)
        }
        batches.removeAll(keepingCapacity: true)
        order.removeAll(keepingCapacity: true)
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

/// The operations waiting for one socket, drained by at most one event-loop task at a time.
///
/// Posting a task per message would let a busy publisher flood a receiver's event loop with tasks: the loop
/// then runs thousands of write tasks before it reads the socket again, so a reliable client's `sequenceAck`s
/// sit unread and its buffer overflows (1008) although the client acked in time. With a mailbox, everything
/// posted since the last drain goes out in one task, and the loop gets back to reading.
///
/// `@unchecked Sendable`: `ops` and `scheduled` are guarded by `lock`; `channel` is immutable.
final class ChannelMailbox: @unchecked Sendable {
    private static let registry = NIOLockedValueBox<[ObjectIdentifier: ChannelMailbox]>([:])

    private let channel: any Channel
    private let lock = NIOLock()
    private var ops: [SocketOp] = []
    private var scheduled = false

    private init(_ channel: any Channel) { self.channel = channel }

    /// The mailbox of `channel`, made on first use and forgotten when the channel closes.
    static func of(_ channel: any Channel) -> ChannelMailbox {
        let key = ObjectIdentifier(channel)
        let (mailbox, isNew) = registry.withLockedValue { boxes -> (ChannelMailbox, Bool) in
            if let existing = boxes[key] { return (existing, false) }
            let made = ChannelMailbox(channel)
            boxes[key] = made
            return (made, true)
        }
        if isNew {
            channel.closeFuture.whenComplete { _ in
                // Drain what is left (close frames run their own guards), then forget the mailbox.
                mailbox.drain()
                registry.withLockedValue { boxes in
                    if boxes[key] === mailbox { boxes[key] = nil }
                }
            }
        }
        return mailbox
    }

    /// Appends `new` in order and schedules a drain unless one is pending.
    func post(_ new: [SocketOp]) {
        let schedule = lock.withLock { () -> Bool in
            ops.append(contentsOf: new)
            if scheduled { return false }
            scheduled = true
            return true
        }
        if schedule { channel.eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let batch = lock.withLock { () -> [SocketOp] in
            scheduled = false
            defer { ops.removeAll(keepingCapacity: true) }
            return ops
        }
        guard !batch.isEmpty else { return }
        Outbox.run(batch.map { (channel, $0) })
    }
}

extension TimeAmount {
    /// `seconds` as a time amount, clamped to 0...10^9 s, so that no configured or requested duration
    /// (NaN, negative, or huge) traps when it is converted to nanoseconds.
    static func clamped(seconds: Double) -> TimeAmount {
        guard seconds.isFinite, seconds > 0 else { return .zero }
        return .nanoseconds(Int64(min(seconds, 1e9) * 1e9))
    }
}
