//===----------------------------------------------------------------------===//
// swift-webpubsub: name resolution, off the connection queue.
//===----------------------------------------------------------------------===//
import Dispatch
import Foundation

/// One address from getaddrinfo, copied out of the C list.
struct ResolvedAddress: Sendable {
    var family: Int32
    /// The raw `sockaddr` bytes.
    var sockaddr: [UInt8]

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        sockaddr.withUnsafeBytes { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: Foundation.sockaddr.self), socklen_t(raw.count))
        }
    }
}

enum Resolver {
    /// Resolves synchronously. Only numeric hosts are resolved this way on the connection queue
    /// (`numericOnly`: AI_NUMERICHOST never blocks); names go through ``resolve(host:port:completion:)``.
    static func resolveNow(host: String, port: Int, numericOnly: Bool) -> Result<[ResolvedAddress], WebSocketError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_TCP)
        // No AI_ADDRCONFIG: with only loopback configured it hides "localhost". Unusable addresses fail
        // fast at connect() and the next one is tried.
        hints.ai_flags = (numericOnly ? AI_NUMERICHOST : 0) | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0 else {
            let text = String(cString: gai_strerror(rc))
            return .failure(WebSocketError(.nameResolutionFailed, "cannot resolve host: \(text)", errno: rc))
        }
        defer { freeaddrinfo(list) }
        var out: [ResolvedAddress] = []
        var p = list
        while let ai = p {
            if let addr = ai.pointee.ai_addr, ai.pointee.ai_addrlen > 0 {
                let bytes = Array(UnsafeRawBufferPointer(start: addr, count: Int(ai.pointee.ai_addrlen)))
                out.append(ResolvedAddress(family: ai.pointee.ai_family, sockaddr: bytes))
            }
            p = ai.pointee.ai_next
        }
        if out.isEmpty { return .failure(WebSocketError(.nameResolutionFailed, "no addresses for host")) }
        return .success(out)
    }

    /// Resolves off the caller's queue (getaddrinfo blocks), then calls `completion` on `queue`.
    /// The caller bounds the wait with its own timer and ignores a late answer.
    ///
    /// Lookups of the same host and port that overlap are coalesced into one getaddrinfo call, and a
    /// successful answer is reused for ``cacheLifetime`` seconds, so thousands of connections to one
    /// service cost one lookup. Lookups run on a few serial lanes, so slow DNS parks at most
    /// ``laneCount`` threads.
    static func resolve(
        host: String, port: Int, queue: DispatchQueue,
        completion: @escaping @Sendable (Result<[ResolvedAddress], WebSocketError>) -> Void
    ) {
        shared.resolve(host: host, port: port, queue: queue, completion: completion)
    }

    static let laneCount = 4
    static let cacheLifetime: TimeInterval = 5
    private static let shared = CoalescingResolver()

    /// Tests only: replaces getaddrinfo for names (e.g. to simulate slow DNS). Set it back to nil after use.
    static let testHook = LockedValue<(@Sendable (String, Int) -> Result<[ResolvedAddress], WebSocketError>)?>(nil)

    /// getaddrinfo calls made so far (for tests).
    static var lookupCount: Int { shared.lookups }
}

private final class CoalescingResolver: @unchecked Sendable {  // all fields guarded by `lock`
    typealias Completion = @Sendable (Result<[ResolvedAddress], WebSocketError>) -> Void
    private let lock = NSLock()
    private var waiting: [String: [(DispatchQueue, Completion)]] = [:]
    private var cache: [String: (addresses: [ResolvedAddress], expires: Date)] = [:]
    private var nextLane = 0
    private(set) var lookupsUnlocked = 0
    private let lanes = (0..<Resolver.laneCount).map { DispatchQueue(label: "websocket.resolver.\($0)") }

    var lookups: Int {
        lock.lock()
        defer { lock.unlock() }
        return lookupsUnlocked
    }

    func resolve(host: String, port: Int, queue: DispatchQueue, completion: @escaping Completion) {
        let key = "\(host.lowercased())|\(port)"
        lock.lock()
        if let hit = cache[key], hit.expires > Date() {
            lock.unlock()
            queue.async { completion(.success(hit.addresses)) }
            return
        }
        if waiting[key] != nil {
            waiting[key]!.append((queue, completion))
            lock.unlock()
            return
        }
        waiting[key] = [(queue, completion)]
        lookupsUnlocked += 1
        let lane = lanes[nextLane % lanes.count]
        nextLane += 1
        lock.unlock()
        lane.async {
            let result = Resolver.testHook.value?(host, port) ?? Resolver.resolveNow(host: host, port: port, numericOnly: false)
            self.lock.lock()
            let waiters = self.waiting.removeValue(forKey: key) ?? []
            if case .success(let addresses) = result {
                self.cache[key] = (addresses, Date().addingTimeInterval(Resolver.cacheLifetime))
                if self.cache.count > 1024 { self.cache = self.cache.filter { $0.value.expires > Date() } }
            }
            self.lock.unlock()
            for (q, c) in waiters { q.async { c(result) } }
        }
    }
}

/// A value behind a lock: the package's one locked box (the other modules use it too).
package final class LockedValue<Value>: @unchecked Sendable {  // `stored` guarded by `lock`
    private let lock = NSLock()
    private var stored: Value
    package init(_ value: Value) { stored = value }
    /// Runs `body` on the value under the lock and returns its result.
    package func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&stored)
    }
    /// Changes the value under the lock (read-modify-write in one step).
    package func modify(_ body: (inout Value) -> Void) {
        lock.lock()
        body(&stored)
        lock.unlock()
    }
    package var value: Value {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            stored = newValue
            lock.unlock()
        }
    }
}
