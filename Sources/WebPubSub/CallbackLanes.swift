import Dispatch
import Foundation
import WebSocket

/// The threads behind the default callback queues.
///
/// A client made without ``WebPubSubClientOptions/callbackQueue`` gets a serial queue of its own that
/// targets one of a few shared serial "lanes", handed out in turn. Each lane runs on at most one thread
/// at a time, so 10,000 clients opening at once start at most ``count`` threads for their callbacks,
/// where a plain serial queue per client could start one thread each (Dispatch's overcommitting pool).
/// A callback may block on its own client (the client never needs a callback thread to make progress:
/// its socket and timers run on the I/O loop and its private queue); while it blocks, the clients
/// sharing its lane wait. A client whose callbacks block for long, or wait for another client's
/// callbacks, should have a `callbackQueue` of its own.
enum CallbackLanes {
    /// How many lanes there are: 8.
    static let count = 8

    private static let lanes: [DispatchQueue] = (0..<count).map {
        // A plain serial queue: overcommitting, so a lane blocked in a callback never waits for a
        // worker another lane holds.
        DispatchQueue(label: "WebPubSubClient.callbacks.lane\($0)")
    }

    private static let turn = LockedValue<Int>(0)

    /// A new serial callback queue on the next lane.
    static func makeQueue() -> DispatchQueue {
        let i = turn.withLock { n -> Int in
            defer { n &+= 1 }
            return n
        }
        return DispatchQueue(label: "WebPubSubClient.callbacks", target: lanes[i % count])
    }
}
