/// The reliable protocol's per-connection outbound bookkeeping (pure): sequence ids from 1, a buffer of
/// messages not yet acknowledged by a cumulative `sequenceAck`, and its limits.
public struct ReliableBuffer<Payload>: Sendable where Payload: Sendable {
    /// Limits of the unacknowledged buffer (the service: 1,000 messages or 16 MB).
    public struct Limits: Sendable, Equatable {
        /// Most unacknowledged messages.
        public var maxMessages: Int
        /// Most unacknowledged bytes.
        public var maxBytes: Int
        /// Creates limits.
        public init(maxMessages: Int = 1000, maxBytes: Int = 16 * 1024 * 1024) {
            self.maxMessages = maxMessages
            self.maxBytes = maxBytes
        }
    }

    /// One buffered message.
    public struct Entry: Sendable {
        /// Its sequence id.
        public var sequenceID: UInt64
        /// Its size in bytes (counted against `maxBytes`).
        public var size: Int
        /// The encoded message.
        public var payload: Payload
    }

    /// The limits.
    public let limits: Limits
    /// The last sequence id handed out (0 before the first message).
    public private(set) var lastSequenceID: UInt64 = 0
    /// The highest sequence id acknowledged.
    public private(set) var acknowledged: UInt64 = 0
    /// Unacknowledged messages, oldest first.
    public private(set) var entries: [Entry] = []
    private var start = 0  // index of the first live entry in `entries` (amortised removal)
    /// Bytes held.
    public private(set) var bytes = 0

    /// Creates an empty buffer.
    public init(limits: Limits = Limits()) { self.limits = limits }

    /// Messages held.
    public var count: Int { entries.count - start }

    /// The unacknowledged messages in order.
    public var pending: ArraySlice<Entry> { entries[start...] }

    /// Hands out the next sequence id and buffers the message built for it.
    /// Returns nil (and buffers nothing) when the buffer would overflow: the caller must end the session.
    public mutating func append(size: Int, _ makePayload: (UInt64) -> Payload) -> (UInt64, Payload)? {
        if count + 1 > limits.maxMessages || bytes + size > limits.maxBytes { return nil }
        lastSequenceID += 1
        let payload = makePayload(lastSequenceID)
        entries.append(Entry(sequenceID: lastSequenceID, size: size, payload: payload))
        bytes += size
        return (lastSequenceID, payload)
    }

    /// Cumulative acknowledgement: drops every message with id ≤ `sequenceID`.
    /// Zero, repeats and ids at or below an earlier ack are accepted silently; ids beyond the last sent are clamped.
    public mutating func acknowledge(_ sequenceID: UInt64) {
        let upTo = min(sequenceID, lastSequenceID)
        guard upTo > acknowledged else { return }
        acknowledged = upTo
        while start < entries.count, entries[start].sequenceID <= upTo {
            bytes -= entries[start].size
            start += 1
        }
        if start > 64 && start * 2 > entries.count {
            entries.removeFirst(start)
            start = 0
        }
    }
}
