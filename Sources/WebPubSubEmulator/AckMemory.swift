/// Per-connection memory of the most recent successfully processed ack ids (pure).
///
/// A count window like the service's LRU: once `capacity` ids are held, recording a new one forgets the oldest.
public struct AckMemory: Sendable {
    /// How many ids are remembered.
    public let capacity: Int
    private var ids: Set<UInt64> = []
    private var ring: [UInt64] = []
    private var head = 0

    /// Creates an empty memory holding up to `capacity` ids (the service keeps 1,000).
    public init(capacity: Int = 1000) {
        precondition(capacity > 0)
        self.capacity = capacity
        ring.reserveCapacity(capacity)
    }

    /// Whether `ackID` was processed and is still remembered.
    public func contains(_ ackID: UInt64) -> Bool { ids.contains(ackID) }

    /// How many ids are held.
    public var count: Int { ids.count }

    /// Records a processed id (no-op when already held).
    public mutating func record(_ ackID: UInt64) {
        guard ids.insert(ackID).inserted else { return }
        if ring.count < capacity {
            ring.append(ackID)
        } else {
            ids.remove(ring[head])
            ring[head] = ackID
            head = (head + 1) % capacity
        }
    }
}
