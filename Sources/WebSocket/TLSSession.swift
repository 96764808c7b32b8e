//===----------------------------------------------------------------------===//
// swift-webpubsub: TLS client over OpenSSL with a pair of memory BIOs.
//
// The socket is never handed to OpenSSL: ciphertext goes in through `feed` and
// comes out through `drainOutput`, and the connection writes it with
// send(MSG_NOSIGNAL). So no SIGPIPE, and non-blocking I/O stays in our hands.
//===----------------------------------------------------------------------===//
import CSSL
import Foundation

/// Shared `SSL_CTX` objects, one per (verify, CA file) pair. An `SSL_CTX` is reference counted and safe
/// to use from many threads for `SSL_new`, so contexts are created once (loading the trust store is slow).
final class TLSContextCache: @unchecked Sendable {  // `contexts` guarded by `lock`
    static let shared = TLSContextCache()
    private let lock = NSLock()
    private var contexts: [String: OpaquePointer] = [:]

    func context(for config: WebSocketConfiguration.TLSConfiguration) throws(WebSocketError) -> OpaquePointer {
        let key = "\(config.verifyPeer)|\(config.additionalCAFile ?? "")"
        lock.lock()
        defer { lock.unlock() }
        if let ctx = contexts[key] { return ctx }
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw WebSocketError(.tlsHandshakeFailed, "SSL_CTX_new failed: \(TLSSession.drainErrors())")
        }
        _ = cssl_SSL_CTX_set_min_proto_version(ctx, cssl_TLS1_2_VERSION())
        _ = SSL_CTX_set_options(ctx, cssl_SSL_OP_NO_COMPRESSION() | cssl_SSL_OP_NO_RENEGOTIATION())
        _ = cssl_SSL_CTX_set_mode(ctx, cssl_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER() | cssl_SSL_MODE_RELEASE_BUFFERS())
        if config.verifyPeer {
            SSL_CTX_set_verify(ctx, cssl_SSL_VERIFY_PEER(), nil)
            if SSL_CTX_set_default_verify_paths(ctx) != 1 {
                _ = TLSSession.drainErrors()  // a missing system store is not fatal when a CA file is given
            }
            if let file = config.additionalCAFile {
                if SSL_CTX_load_verify_locations(ctx, file, nil) != 1 {
                    let why = TLSSession.drainErrors()
                    SSL_CTX_free(ctx)
                    throw WebSocketError(.tlsHandshakeFailed, "cannot load CA file \(file): \(why)")
                }
            }
        } else {
            SSL_CTX_set_verify(ctx, cssl_SSL_VERIFY_NONE(), nil)
        }
        contexts[key] = ctx
        return ctx
    }
}

/// One TLS client session. Not thread-safe: owned by the connection's queue.
final class TLSSession {
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer
    private(set) var handshakeDone = false
    private var shutdownSent = false

    init(host: String, isIPAddress: Bool, config: WebSocketConfiguration.TLSConfiguration) throws(WebSocketError) {
        let ctx = try TLSContextCache.shared.context(for: config)
        guard let ssl = SSL_new(ctx) else {
            throw WebSocketError(.tlsHandshakeFailed, "SSL_new failed: \(Self.drainErrors())")
        }
        guard let rbio = cssl_BIO_new_mem(), let wbio = cssl_BIO_new_mem() else {
            SSL_free(ssl)
            throw WebSocketError(.tlsHandshakeFailed, "BIO_new failed")
        }
        SSL_set_bio(ssl, rbio, wbio)  // ssl owns both BIOs now
        self.ssl = ssl
        self.rbio = rbio
        self.wbio = wbio
        SSL_set_connect_state(ssl)
        let name = config.serverName ?? host
        let nameIsIP = config.serverName == nil ? isIPAddress : WebSocketEndpoint.isIPLiteral(name)
        if config.verifyPeer {
            if nameIsIP {
                guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 else {
                    throw WebSocketError(.tlsHandshakeFailed, "cannot set the IP address to verify")
                }
            } else {
                SSL_set_hostflags(ssl, UInt32(cssl_X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS()))
                guard SSL_set1_host(ssl, name) == 1 else {
                    throw WebSocketError(.tlsHandshakeFailed, "cannot set the host name to verify")
                }
            }
        }
        if !nameIsIP {
            var sni = name
            if sni.hasSuffix(".") { sni.removeLast() }
            _ = cssl_SSL_set_tlsext_host_name(ssl, sni)
        }
        let alpn: [UInt8] = [8] + Array("http/1.1".utf8)
        guard SSL_set_alpn_protos(ssl, alpn, UInt32(alpn.count)) == 0 else {  // 0 is success here
            throw WebSocketError(.tlsHandshakeFailed, "cannot set ALPN")
        }
    }

    deinit { SSL_free(ssl) }

    /// Ciphertext received from the socket.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        _ = BIO_write(rbio, base, Int32(bytes.count))
    }

    /// Ciphertext to send, appended to `out`.
    func drainOutput(into out: inout [UInt8]) {
        while true {
            let pending = cssl_BIO_pending(wbio)
            if pending == 0 { return }
            let start = out.count
            out.append(contentsOf: repeatElement(0, count: pending))
            let n = out.withUnsafeMutableBytes { BIO_read(wbio, $0.baseAddress! + start, Int32(pending)) }
            if n <= 0 {
                out.removeSubrange(start...)
                return
            }
            if Int(n) < pending { out.removeSubrange((start + Int(n))...) }
        }
    }

    enum Progress {
        case done
        case wantMore
        case failed(WebSocketError)
    }

    /// Drives the handshake.
    func handshake() -> Progress {
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            handshakeDone = true
            return .done
        }
        let err = SSL_get_error(ssl, r)
        if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { return .wantMore }
        return .failed(handshakeError())
    }

    /// The error for a failed handshake: a verification failure when the chain or name did not verify.
    func handshakeError(eof: Bool = false) -> WebSocketError {
        let verify = SSL_get_verify_result(ssl)
        let why = Self.drainErrors()
        if verify != X509_V_OK {
            let text = String(cString: X509_verify_cert_error_string(verify))
            return WebSocketError(
                .certificateVerificationFailed, "certificate verification failed: \(text)", verifyResult: text)
        }
        if eof { return WebSocketError(.tlsHandshakeFailed, "connection closed during the TLS handshake") }
        return WebSocketError(.tlsHandshakeFailed, "TLS handshake failed: \(why.isEmpty ? "unknown" : why)")
    }

    enum ReadOutcome {
        case ok
        case closeNotify
        case failed(WebSocketError)
    }

    /// Decrypts everything available into `out`.
    func read(into out: inout [UInt8], scratch: UnsafeMutableRawBufferPointer) -> ReadOutcome {
        while true {
            ERR_clear_error()
            let n = SSL_read(ssl, scratch.baseAddress, Int32(scratch.count))
            if n > 0 {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<Int(n)]))
                continue
            }
            let err = SSL_get_error(ssl, n)
            switch err {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .ok
            case SSL_ERROR_ZERO_RETURN: return .closeNotify
            default: return .failed(WebSocketError(.ioError, "TLS read failed: \(Self.drainErrors())"))
            }
        }
    }

    /// Encrypts `bytes` (all of them: memory BIOs never push back).
    func write(_ bytes: UnsafeRawBufferPointer) -> WebSocketError? {
        guard bytes.count > 0 else { return nil }
        ERR_clear_error()
        let n = SSL_write(ssl, bytes.baseAddress, Int32(bytes.count))
        if n == Int32(bytes.count) { return nil }
        return WebSocketError(.ioError, "TLS write failed: \(Self.drainErrors())")
    }

    /// Queues a close_notify alert (once).
    func shutdown() {
        guard handshakeDone, !shutdownSent else { return }
        shutdownSent = true
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// The negotiated ALPN protocol, if any.
    var alpn: String? {
        var p: UnsafePointer<UInt8>?
        var len: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &p, &len)
        guard let p, len > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(len)), as: UTF8.self)
    }

    /// The OpenSSL error queue as text (and empties it).
    static func drainErrors() -> String {
        var parts: [String] = []
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.joined(separator: "; ")
    }
}
