/// Sequence-id bookkeeping of the reliable protocol (CLIENT_PROTOCOL.md §4.3).
///
/// Tracks the highest sequence id delivered, drops duplicates and old ids, and says when a
/// `sequenceAck` is due: on the periodic tick when something arrived since the last ack, and at
/// once when the id moved more than ``quickAckDistance`` past the last id acked.
struct SequenceTracker: Sendable {
    /// A jump past the last acked id that asks for an ack at once (JS `_quickSequenceAckDiff`).
    static let quickAckDistance: UInt64 = 300

    private(set) var lastSequenceID: UInt64 = 0
    private(set) var lastAckedSequenceID: UInt64 = 0
    /// Something arrived (a duplicate included, so the service is re-acked) since the last ack.
    private(set) var needsAck = false

    /// What to do with a received message.
    struct Verdict: Equatable {
        /// Deliver it to the user (false: duplicate or old).
        var deliver: Bool
        /// Send a sequence ack now.
        var ackNow: Bool
    }

    mutating func receive(_ id: UInt64) -> Verdict {
        needsAck = true
        guard id > lastSequenceID else { return Verdict(deliver: false, ackNow: false) }
        lastSequenceID = id
        return Verdict(deliver: true, ackNow: id - lastAckedSequenceID > SequenceTracker.quickAckDistance)
    }

    /// The id to ack now, if an ack is due; marks it as sent.
    mutating func takeAck() -> UInt64? {
        guard needsAck else { return nil }
        needsAck = false
        lastAckedSequenceID = lastSequenceID
        return lastSequenceID
    }

    /// The ack could not be written: try again on the next tick.
    mutating func ackFailed() { needsAck = true }

    /// A new connection (not a recovery) starts from zero.
    mutating func reset() { self = SequenceTracker() }
}
