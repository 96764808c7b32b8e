/// Sequence-id bookkeeping of the reliable protocol (Docs/Client.md, "Sequence ids").
///
/// The acceptance rule: the service numbers the messages of one session 1, 2, 3, … and resends the
/// unacknowledged ones after a recovery. So an id at or below the last one delivered is a duplicate
/// (dropped, but acknowledged again); the next ids are delivered; an id more than
/// ``maximumGap`` beyond the last one is more than the service can have sent (it holds at most
/// 1,000 unacknowledged messages per connection): a protocol violation. It is neither delivered
/// nor acknowledged, so one bad id can never mute the client or make the service drop its buffer.
///
/// A `sequenceAck` is due when something arrived since the last ack (on the next ack deadline),
/// and at once when the id moved more than ``quickAckDistance`` past the last id acked.
struct SequenceTracker: Sendable, Hashable {
    /// A jump past the last acked id that asks for an ack at once (JS `_quickSequenceAckDiff`).
    static let quickAckDistance: UInt64 = 300
    /// The largest step from one delivered id to the next that is accepted.
    static let maximumGap: UInt64 = 1000

    private(set) var lastSequenceID: UInt64 = 0
    private(set) var lastAckedSequenceID: UInt64 = 0
    /// Something arrived (a duplicate included, so the service is re-acked) since the last ack.
    private(set) var needsAck = false

    /// What to do with a received message.
    enum Verdict: Equatable, Sendable {
        /// Deliver it; `ackNow`: send a sequence ack at once.
        case deliver(ackNow: Bool)
        /// Already delivered: drop it (it is acknowledged again).
        case duplicate
        /// Further ahead than the service can be: drop it and the connection.
        case violation
    }

    mutating func receive(_ id: UInt64) -> Verdict {
        guard id > lastSequenceID else {
            needsAck = true
            return .duplicate
        }
        guard id - lastSequenceID <= SequenceTracker.maximumGap else { return .violation }
        needsAck = true
        lastSequenceID = id
        return .deliver(ackNow: id - lastAckedSequenceID > SequenceTracker.quickAckDistance)
    }

    /// The id to ack now, if an ack is due; marks it as sent.
    mutating func takeAck() -> UInt64? {
        guard needsAck else { return nil }
        needsAck = false
        lastAckedSequenceID = lastSequenceID
        return lastSequenceID
    }

    /// A new connection (not a recovery) starts from zero.
    mutating func reset() { self = SequenceTracker() }
}
