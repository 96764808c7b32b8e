/// Backpressure between the socket and the callbacks (Docs/Client.md, "Backpressure").
///
/// Counts the received messages (and their content bytes) that wait for their callbacks. Past either
/// limit, reading stops; it resumes once both counts are at or below half their limit. The shell
/// keeps one of these behind a lock, shared by the client's queue (which adds) and the callback
/// queue (which finishes).
struct DeliveryBacklog: Sendable, Hashable {
    let messageLimit: Int
    let byteLimit: Int
    private(set) var messages = 0
    private(set) var bytes = 0
    private(set) var paused = false
    /// The most messages that waited at once (for tests and metrics).
    private(set) var highWaterMark = 0

    init(messageLimit: Int, byteLimit: Int) {
        self.messageLimit = max(1, messageLimit)
        self.byteLimit = max(1, byteLimit)
    }

    /// A message was queued for its callbacks; true when reading must pause now.
    mutating func added(bytes n: Int) -> Bool {
        messages += 1
        bytes += n
        highWaterMark = max(highWaterMark, messages)
        guard !paused, messages >= messageLimit || bytes >= byteLimit else { return false }
        paused = true
        return true
    }

    /// A message's callbacks ran; true when reading must resume now.
    mutating func finished(bytes n: Int) -> Bool {
        messages -= 1
        bytes -= n
        guard paused, messages <= messageLimit / 2, bytes <= byteLimit / 2 else { return false }
        paused = false
        return true
    }
}
