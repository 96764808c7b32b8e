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
        hints.ai_flags = AI_ADDRCONFIG | (numericOnly ? AI_NUMERICHOST : 0) | AI_NUMERICSERV
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

    /// Resolves on a global queue (getaddrinfo blocks), then calls `completion` on `queue`.
    /// The caller bounds the wait with its own timer and ignores a late answer.
    static func resolve(
        host: String, port: Int, queue: DispatchQueue,
        completion: @escaping @Sendable (Result<[ResolvedAddress], WebSocketError>) -> Void
    ) {
        DispatchQueue.global().async {
            let result = resolveNow(host: host, port: port, numericOnly: false)
            queue.async { completion(result) }
        }
    }
}
