//===----------------------------------------------------------------------===//
// swift-webpubsub emulator: server-side TLS on SwiftNIO through the system
// OpenSSL (CSSL), with a pair of memory BIOs per connection.
//
// NIO reads ciphertext from the socket and hands it to `channelRead`; it goes
// into OpenSSL's read BIO, plaintext comes out of SSL_read and travels up the
// pipeline; plaintext written by the HTTP/WebSocket handlers goes through
// SSL_write and the write BIO's ciphertext is written to the socket by NIO.
// OpenSSL never touches the socket, so NIO keeps its I/O, backpressure and
// write promises. The client side (Sources/WebSocket/TLSSession.swift) uses the
// same pattern; the two share no code, so each checks the other.
//===----------------------------------------------------------------------===//
import CSSL
import Foundation
import Logging
import NIOCore
import NIOPosix

/// Why the TLS listener could not be set up: a certificate or key file that is missing, unreadable or
/// invalid, or a key that does not match the certificate. ``WebPubSubEmulator/start()`` throws it before
/// anything is bound; the message names the file.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file the problem is with.
    public var file: String
    /// What is wrong with it (including OpenSSL's reason when OpenSSL refused it).
    public var reason: String

    /// Creates an error about `file`.
    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }

    public var description: String { "TLS: \(file): \(reason)" }
}

/// One server `SSL_CTX`: the certificate chain and key, TLS 1.2 or later, ALPN `http/1.1`.
///
/// `@unchecked Sendable`: the context is configured once in `init` and never changed afterwards; OpenSSL
/// allows `SSL_new` on one `SSL_CTX` from many threads at once (it is reference counted and locks itself).
final class TLSServerContext: @unchecked Sendable {
    let ctx: OpaquePointer

    init(certificateFile: String, privateKeyFile: String) throws(TLSSetupError) {
        for (file, what) in [(certificateFile, "certificate"), (privateKeyFile, "private key")] {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else {
                throw TLSSetupError(file: file, reason: "the \(what) file does not exist")
            }
            guard !isDirectory.boolValue, FileManager.default.isReadableFile(atPath: file) else {
                throw TLSSetupError(file: file, reason: "the \(what) file cannot be read")
            }
        }
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSSetupError(file: certificateFile, reason: "SSL_CTX_new failed: \(Self.drainErrors())")
        }
        ERR_clear_error()
        _ = cssl_SSL_CTX_set_min_proto_version(ctx, cssl_TLS1_2_VERSION())
        _ = SSL_CTX_set_options(ctx, cssl_SSL_OP_NO_COMPRESSION() | cssl_SSL_OP_NO_RENEGOTIATION()
                                    | cssl_SSL_OP_IGNORE_UNEXPECTED_EOF())
        _ = cssl_SSL_CTX_set_mode(ctx, cssl_SSL_MODE_RELEASE_BUFFERS())
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateFile) == 1 else {
            let why = Self.drainErrors()
            SSL_CTX_free(ctx)
            throw TLSSetupError(file: certificateFile, reason: "not a PEM certificate chain (\(why))")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, privateKeyFile, cssl_SSL_FILETYPE_PEM()) == 1 else {
            let why = Self.drainErrors()
            SSL_CTX_free(ctx)
            throw TLSSetupError(file: privateKeyFile, reason: why.contains("mismatch")
                ? "the key does not match the certificate \(certificateFile) (\(why))" : "not a PEM private key (\(why))")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            let why = Self.drainErrors()
            SSL_CTX_free(ctx)
            throw TLSSetupError(file: privateKeyFile, reason: "the key does not match the certificate \(certificateFile) (\(why))")
        }
        cssl_SSL_CTX_select_alpn_http11(ctx)
        // No TLS 1.3 session tickets (nothing resumes sessions here). A ticket arrives after the handshake,
        // just when a client sends its first request; clients that read and write one SSL object from two
        // threads (Python's websockets sync client does) can then hang.
        _ = SSL_CTX_set_num_tickets(ctx, 0)
        self.ctx = ctx
    }

    deinit { SSL_CTX_free(ctx) }

    /// The OpenSSL error queue of this thread as text (and empties it).
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

/// Server-side TLS for one connection, first in its pipeline: ciphertext below, plaintext above.
///
/// - A handshake that fails (a client offering only TLS 1.0/1.1, plain HTTP sent to the TLS port, garbage)
///   is logged at warning level with OpenSSL's reason and closes this connection only. Plain HTTP gets a
///   plain-text `400` first, so `curl http://` on the TLS port says what is wrong.
/// - Plaintext written before the handshake completes is held and written after it, in order.
/// - A client that does not finish the handshake within ``WebPubSubEmulator/Configuration/TLS/handshakeTimeout``
///   (10 s) is logged and closed.
/// - A graceful close sends `close_notify` first; a reset (the `drop` hook's `SO_LINGER` 0) does not.
///
/// Confined to its channel's event loop (NIO calls every method there), so it needs no lock.
final class TLSServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case handshaking
        case open
        case closed
    }

    private let context: TLSServerContext  // keeps the SSL_CTX alive as long as the SSL
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer
    private let logger: Logger
    private var state = State.handshaking
    /// Plaintext written while the handshake runs, with its promises.
    private var held: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var sawCiphertext = false
    private let handshakeTimeout: TimeAmount
    private var handshakeTimer: Scheduled<Void>?

    /// How much plaintext one `SSL_read` may produce at most (a TLS record).
    private static let readChunk = 16 * 1024

    /// Out of memory in OpenSSL: the connection is refused (the channel initializer fails and closes it).
    struct SessionError: Error, CustomStringConvertible {
        var description: String
    }

    init(context: TLSServerContext, handshakeTimeout: TimeInterval, logger: Logger) throws(SessionError) {
        guard let ssl = SSL_new(context.ctx) else {
            throw SessionError(description: "SSL_new failed: \(TLSServerContext.drainErrors())")
        }
        guard let rbio = cssl_BIO_new_mem() else {
            SSL_free(ssl)
            throw SessionError(description: "BIO_new failed")
        }
        guard let wbio = cssl_BIO_new_mem() else {
            BIO_free(rbio)
            SSL_free(ssl)
            throw SessionError(description: "BIO_new failed")
        }
        SSL_set_bio(ssl, rbio, wbio)  // the SSL owns both BIOs now
        SSL_set_accept_state(ssl)
        self.context = context
        self.ssl = ssl
        self.rbio = rbio
        self.wbio = wbio
        self.logger = logger
        self.handshakeTimeout = .nanoseconds(Int64(max(0.001, handshakeTimeout) * 1e9))
    }

    deinit { SSL_free(ssl) }

    // MARK: Handshake timeout

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startHandshakeTimer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startHandshakeTimer(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
    }

    /// A client that connects and never finishes the handshake is closed after `handshakeTimeout`.
    private func startHandshakeTimer(_ context: ChannelHandlerContext) {
        guard handshakeTimer == nil, state == .handshaking else { return }
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) {
            guard self.state == .handshaking else { return }
            self.logger.warning("TLS handshake timed out; closing the connection", metadata: self.peer(context))
            self.state = .closed
            self.failHeld(ChannelError.ioOnClosedChannel)
            context.close(promise: nil)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state != .closed else { return }
        let buffer = unwrapInboundIn(data)
        if buffer.readableBytes > 0 { sawCiphertext = true }
        buffer.withUnsafeReadableBytes { bytes in
            if let base = bytes.baseAddress, bytes.count > 0 { _ = BIO_write(rbio, base, Int32(bytes.count)) }
        }
        if state == .handshaking { continueHandshake(context) }
        if state == .open { readPlaintext(context) }
        if state != .closed { writeCiphertext(context, promise: nil, flush: true) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if state == .open { context.fireChannelReadComplete() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if state == .handshaking && sawCiphertext {
            logger.debug("TLS handshake not completed: the client went away", metadata: peer(context))
        }
        state = .closed
        failHeld(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    private func continueHandshake(_ context: ChannelHandlerContext) {
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            state = .open
            handshakeTimer?.cancel()
            handshakeTimer = nil
            var metadata = peer(context)
            metadata["tls.version"] = "\(String(cString: SSL_get_version(ssl)))"
            logger.trace("TLS handshake done", metadata: metadata)
            let pending = held
            held = []
            for (buffer, promise) in pending { encrypt(context, buffer, promise) }  // channelRead flushes
            return
        }
        let err = SSL_get_error(ssl, r)
        if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { return }
        let reason = TLSServerContext.drainErrors()
        var metadata = peer(context)
        metadata["reason"] = "\(reason.isEmpty ? "unknown" : reason)"
        logger.warning("TLS handshake failed; closing the connection", metadata: metadata)
        state = .closed
        failHeld(ChannelError.ioOnClosedChannel)
        if reason.contains("http request") {
            // Plain HTTP on the TLS port: answer in plain HTTP, as web servers do, then close.
            let body = "This port speaks TLS: use https:// or wss://.\n"
            let text = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n" + body
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(string: text))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            // The alert OpenSSL queued (protocol_version, handshake_failure, ...), then close.
            let channel = context.channel
            var out = channel.allocator.buffer(capacity: 0)
            drain(into: &out)
            context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func readPlaintext(_ context: ChannelHandlerContext) {
        while state == .open {
            var buffer = context.channel.allocator.buffer(capacity: Self.readChunk)
            var result: Int32 = 0
            ERR_clear_error()
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readChunk) { out in
                result = SSL_read(ssl, out.baseAddress, Int32(min(out.count, Int(Int32.max))))
                return result > 0 ? Int(result) : 0
            }
            if result > 0 {
                context.fireChannelRead(wrapInboundOut(buffer))
                continue
            }
            let err = SSL_get_error(ssl, result)
            switch err {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return
            case SSL_ERROR_ZERO_RETURN:
                // close_notify from the client: answer it and close.
                logger.trace("TLS close_notify from the client", metadata: peer(context))
                context.close(promise: nil)
                return
            default:
                var metadata = peer(context)
                metadata["reason"] = "\(TLSServerContext.drainErrors())"
                logger.warning("TLS record error; closing the connection", metadata: metadata)
                state = .closed
                context.close(promise: nil)
                return
            }
        }
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        switch state {
        case .handshaking: held.append((buffer, promise))
        case .open: encrypt(context, buffer, promise)
        case .closed: promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush(context: ChannelHandlerContext) { context.flush() }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, state == .open, let provider = context.channel as? any SocketOptionProvider else {
            state = .closed
            context.close(mode: mode, promise: promise)
            return
        }
        // On the channel's loop the option is read at once; a reset (SO_LINGER 0) sends no close_notify.
        provider.getSoLinger().assumeIsolated().whenComplete { result in
            let resetting = (try? result.get()).map { $0.l_onoff != 0 && $0.l_linger == 0 } ?? false
            if !resetting && self.state == .open {
                ERR_clear_error()
                _ = SSL_shutdown(self.ssl)
                ERR_clear_error()
                self.writeCiphertext(context, promise: nil, flush: true)
            }
            self.state = .closed
            self.failHeld(ChannelError.ioOnClosedChannel)
            context.close(mode: mode, promise: promise)
        }
    }

    private func encrypt(_ context: ChannelHandlerContext, _ buffer: ByteBuffer, _ promise: EventLoopPromise<Void>?) {
        guard buffer.readableBytes > 0 else {
            context.write(wrapOutboundOut(buffer), promise: promise)
            return
        }
        ERR_clear_error()
        let written = buffer.withUnsafeReadableBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
        guard written == Int32(buffer.readableBytes) else {
            // Memory BIOs never push back, so this is a broken session.
            var metadata = peer(context)
            metadata["reason"] = "\(TLSServerContext.drainErrors())"
            logger.warning("TLS write failed; closing the connection", metadata: metadata)
            promise?.fail(ChannelError.ioOnClosedChannel)
            state = .closed
            context.close(promise: nil)
            return
        }
        writeCiphertext(context, promise: promise, flush: false)
    }

    /// Writes what OpenSSL produced (records, alerts, session tickets) to the socket.
    private func writeCiphertext(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>?, flush: Bool) {
        guard cssl_BIO_pending(wbio) > 0 else {
            if let promise { promise.succeed() }
            if flush { context.flush() }
            return
        }
        var out = context.channel.allocator.buffer(capacity: cssl_BIO_pending(wbio))
        drain(into: &out)
        if flush {
            context.writeAndFlush(wrapOutboundOut(out), promise: promise)
        } else {
            context.write(wrapOutboundOut(out), promise: promise)
        }
    }

    private func drain(into out: inout ByteBuffer) {
        while true {
            let pending = cssl_BIO_pending(wbio)
            if pending == 0 { return }
            let n = out.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { bytes in
                Int(max(0, BIO_read(wbio, bytes.baseAddress, Int32(pending))))
            }
            if n <= 0 { return }
        }
    }

    private func failHeld(_ error: any Error) {
        let pending = held
        held = []
        for (_, promise) in pending { promise?.fail(error) }
    }

    private func peer(_ context: ChannelHandlerContext) -> Logger.Metadata {
        ["peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"]
    }
}

extension WebPubSubEmulator {
    /// The start lines: every endpoint, and the Entra ID warning.
    func logStart(_ runtime: Runtime) {
        let logger = configuration.logger
        let tlsOnly = runtime.tlsPort == runtime.port
        logger.info("listening", metadata: ["endpoint": "\(Self.endpoint(configuration.host, runtime.port, secure: tlsOnly))"])
        if let tlsPort = runtime.tlsPort, !tlsOnly {
            logger.info("listening", metadata: ["endpoint": "\(Self.endpoint(configuration.host, tlsPort, secure: true))"])
        }
        guard configuration.entraID == .acceptUnvalidated else { return }
        logger.warning("""
            Entra ID mode accept-unvalidated: REST calls accept any bearer JWT whose audience is \
            \(EntraIDToken.audience) and whose lifetime fits, WITHOUT checking its signature, issuer, tenant or \
            roles: anyone who can reach this emulator can call its REST API. For local testing only.
            """)
        if runtime.tlsPort == nil {
            logger.warning("Entra ID mode without TLS: Azure SDKs send bearer tokens over https only (--tls-cert, --tls-key)")
        }
    }
}
