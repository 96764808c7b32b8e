//===----------------------------------------------------------------------===//
// swift-webpubsub: the I/O shell of a WebSocket client connection.
//
// One serial queue owns the socket, the SSL* and every mutable field below.
// Readiness comes from DispatchSource read/write sources on that queue; no
// thread per connection, no blocking call on it (name resolution runs on a
// global queue, bounded by the connect timeout).
//===----------------------------------------------------------------------===//
import CSSL
import Dispatch
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
private func systemSend(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int, _ flags: Int32) -> Int { Glibc.send(fd, p, n, flags) }
#elseif canImport(Darwin)
import Darwin
private func systemSend(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int, _ flags: Int32) -> Int { Darwin.send(fd, p, n, flags) }
#endif

/// Marks a queue so that a connection can tell it is running on its own queue.
private final class QueueMarker: Sendable {}

/// Closes a socket once both of its dispatch sources have been cancelled (Dispatch requires that the
/// descriptor stays open until every source's cancel handler ran).
private final class SocketCloser: @unchecked Sendable {  // `remaining` guarded by the connection queue
    let fd: Int32
    private var remaining = 2
    init(fd: Int32) { self.fd = fd }
    func sourceCancelled() {
        remaining -= 1
        if remaining == 0 { WebSocketConnection.closeSocket(fd) }
    }
}

/// Byte counts read by any thread (``WebSocketConnection/bufferedAmount``).
private final class Backlog: @unchecked Sendable {  // fields guarded by `lock`
    private let lock = NSLock()
    private var enqueued = 0  // payload bytes handed to `send` but not yet encoded on the queue
    private var buffered = 0  // wire bytes encoded but not yet written to the socket

    func reserve(_ n: Int, limit: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        // A message always fits into an empty buffer, whatever its size.
        if enqueued + buffered > 0 && enqueued + buffered + n > limit { return false }
        enqueued += n
        return true
    }
    func release(_ n: Int) {
        lock.lock()
        enqueued -= n
        lock.unlock()
    }
    func setBuffered(_ n: Int) {
        lock.lock()
        buffered = n
        lock.unlock()
    }
    var total: Int {
        lock.lock()
        defer { lock.unlock() }
        return enqueued + buffered
    }
}

/// A WebSocket client connection (RFC 6455) over a non-blocking TCP socket, optionally TLS (OpenSSL).
///
/// Create it with a serial `queue`; that queue owns the socket and runs every handler. Call
/// ``connect(handlers:)`` once. ``send(_:)``, ``ping(_:)``, ``close(code:reason:)`` and ``abort()`` may be
/// called from any thread; from the queue itself they act immediately, from elsewhere they are queued.
///
/// The connection keeps itself alive while connecting or open; ``WebSocketHandlers/onClose`` is
/// called exactly once, after which it holds no resources.
public final class WebSocketConnection: @unchecked Sendable {  // mutable state confined to `queue`
    private enum Phase: Equatable {
        case idle, resolving, connecting, tlsHandshake, upgrading, collectingBody, open, closing, closed
    }

    /// The URL given at creation.
    public let url: URL
    /// The options given at creation.
    public let configuration: WebSocketConfiguration
    /// The serial queue that owns the connection and runs its handlers.
    public let queue: DispatchQueue
    private var logger: Logger

    private static let queueKey = DispatchSpecificKey<QueueMarker>()
    private let marker: QueueMarker
    private let backlog = Backlog()

    // Everything below is confined to `queue`.
    private var phase: Phase = .idle
    private var connectCalled = false
    private var handlers: WebSocketHandlers?
    private var endpoint: WebSocketEndpoint?
    private var addresses: [ResolvedAddress] = []
    private var nextAddress = 0
    private var lastConnectErrno: Int32 = 0
    private var fd: Int32 = -1
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    private var writeSuspended = false
    /// ``pauseReading()`` is in force (the read source is suspended while one is installed).
    private var readingPaused = false
    private var readSuspended = false
    private var tls: TLSSession?
    private var handshake: Handshake?
    private var responseBuffer: [UInt8] = []
    private var headScanned = 0
    private var rejection: (status: Int, headers: [(name: String, value: String)], body: [UInt8], wanted: Int)?
    private var parser: FrameParser
    private var machine: WebSocketStateMachine
    private var outbound: [UInt8] = []
    private var outboundStart = 0
    private var scratch: [UInt8] = []
    private var plaintext: [UInt8] = []
    private var earlyMessages: [(WebSocketMessage, Int)] = []
    private var pendingFragments: [PendingMessage] = []
    private var pendingBytes = 0
    private var connectTimer: (any DispatchSourceTimer)?
    private var closeTimer: (any DispatchSourceTimer)?
    private var bodyTimer: (any DispatchSourceTimer)?
    private var attemptTimer: (any DispatchSourceTimer)?
    private var pingTimer: (any DispatchSourceTimer)?
    private var watchdogTimer: (any DispatchSourceTimer)?
    private var failure: WebSocketError?
    private var lastInbound: UInt64 = 0
    /// Wire bytes of pongs appended to `outbound` since it was last written out completely.
    private var unwrittenControlBytes = 0
    private var maskPool = [UInt8](repeating: 0, count: 256)
    private var maskPoolIndex = 256

    /// Creates a connection; nothing happens until ``connect(handlers:)``.
    ///
    /// - Parameters:
    ///   - url: `ws://` or `wss://` URL. Its query string is never logged.
    ///   - configuration: options.
    ///   - queue: a serial queue that owns the socket and runs every handler; by default a new one from
    ///     ``makeQueue(label:)``. Pass your own to share it with your state (make it with
    ///     ``makeQueue(label:)`` or give it a non-overcommitting target when you have many connections).
    ///   - logger: where to log (connect, open, close at debug level; never headers or query strings).
    public init(
        url: URL, configuration: WebSocketConfiguration = .init(),
        queue: DispatchQueue = WebSocketConnection.makeQueue(label: "websocket"),
        logger: Logger = Logger(label: "WebSocket")
    ) {
        self.url = url
        self.configuration = configuration
        self.queue = queue
        self.logger = logger
        let frameLimit = configuration.maximumFrameSize ?? configuration.maximumMessageSize
        parser = FrameParser(maximumFrameSize: frameLimit)
        machine = WebSocketStateMachine(maximumMessageSize: configuration.maximumMessageSize)
        if let existing = queue.getSpecific(key: Self.queueKey) {
            marker = existing
        } else {
            let m = QueueMarker()
            queue.setSpecific(key: Self.queueKey, value: m)
            marker = m
        }
    }

    /// A serial queue suited to own a connection: it targets the shared, non-overcommitting global
    /// queue, so thousands of connections (and their handlers) run on a few threads.
    ///
    /// A queue made with plain `DispatchQueue(label:)` is overcommitting: when many are busy at once,
    /// Dispatch may give each its own thread (1,000 such connections reached 261 threads in a test,
    /// against 9 with queues from this method).
    public static func makeQueue(label: String) -> DispatchQueue {
        DispatchQueue(label: label, target: .global())
    }

    /// Sockets this module has open right now, process-wide (for leak tests).
    static let openSockets = LockedValue<Int>(0)

    static func closeSocket(_ fd: Int32) {
        _ = Foundation.close(fd)
        openSockets.modify { $0 -= 1 }
    }

    private var isOnQueue: Bool { DispatchQueue.getSpecific(key: Self.queueKey) === marker }

    private func onQueue(_ body: @escaping @Sendable () -> Void) {
        if isOnQueue { body() } else { queue.async(execute: body) }
    }

    // MARK: Public API

    /// Starts connecting: resolve, TCP connect, TLS, HTTP upgrade. Call once; the outcome arrives through
    /// `handlers` (``WebSocketHandlers/onOpen`` or ``WebSocketHandlers/onClose``), on ``queue``.
    public func connect(handlers: WebSocketHandlers) {
        onQueue { self.start(handlers) }
    }

    /// Sends a message. Any thread; messages go out in the order of the calls. Messages sent before the
    /// connection opens are held until it does; after close they are dropped.
    ///
    /// - Returns: false (and drops the message) when it would take ``bufferedAmount`` beyond
    ///   ``WebSocketConfiguration/maximumBufferedAmount`` (a message always fits into an empty buffer);
    ///   wait for ``bufferedAmount`` to drop and retry. True does not mean delivered: a message accepted
    ///   here is dropped if the connection closes first.
    @discardableResult
    public func send(_ message: WebSocketMessage) -> Bool {
        let size: Int
        switch message {
        case .text(let s): size = s.utf8.count
        case .binary(let b): size = b.count
        }
        guard backlog.reserve(size, limit: configuration.maximumBufferedAmount) else { return false }
        onQueue { self.sendOnQueue(message, reserved: size) }
        return true
    }

    /// Sends a text message (see ``send(_:)``).
    @discardableResult
    public func send(text: String) -> Bool { send(.text(text)) }

    /// Sends a binary message (see ``send(_:)``).
    @discardableResult
    public func send(binary: [UInt8]) -> Bool { send(.binary(binary)) }

    /// Sends a ping (payload cut to 125 bytes). The answer arrives through ``WebSocketHandlers/onPong``.
    public func ping(_ payload: [UInt8] = []) {
        let p = Array(payload.prefix(125))
        onQueue {
            guard self.phase == .open, self.machine.canSend else { return }
            self.writeFrame(.ping, p)
            self.flush()
        }
    }

    /// Starts the close handshake: sends a close frame with `code` (1000 when `code` may not be sent)
    /// and `reason` (cut to 123 bytes), then waits up to ``WebSocketConfiguration/closeTimeout`` for the
    /// peer's close frame and TCP close. Before the connection is open, this cancels connecting.
    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        onQueue { self.closeOnQueue(code: code, reason: reason) }
    }

    /// Drops the TCP connection now, without a close frame. ``WebSocketHandlers/onClose`` reports 1006
    /// with ``WebSocketError/Code/cancelled`` (unless the connection had already ended).
    public func abort() {
        onQueue {
            guard self.phase != .closed else { return }
            if self.failure == nil && self.machine.peerClose == nil {
                self.failure = WebSocketError(.cancelled, "aborted by the application")
            }
            self.finish()
        }
    }

    /// Stops reading from the socket (inbound backpressure): no further message is delivered, and
    /// nothing more is read, until ``resumeReading()``. Called from a handler, it takes effect before
    /// the next message. Writes, pings and timers go on. The peer's data waits in the kernel, and then
    /// at the peer. Idempotent.
    public func pauseReading() {
        // The read source is suspended at its next event once the connection is open (the upgrade
        // is always read), see readable().
        onQueue { self.readingPaused = true }
    }

    /// Reads again after ``pauseReading()``. Idempotent.
    public func resumeReading() {
        onQueue {
            guard self.readingPaused else { return }
            self.readingPaused = false
            // Frames already read come first; they may pause reading again.
            self.processFrames()
            if !self.readingPaused, let r = self.readSource, self.readSuspended {
                self.readSuspended = false
                r.resume()
            }
        }
    }

    /// Outbound bytes accepted by ``send(_:)`` but not yet written to the socket (backpressure).
    /// With TLS, encrypted bytes are counted.
    public var bufferedAmount: Int { backlog.total }

    // MARK: Connecting

    private func start(_ handlers: WebSocketHandlers) {
        guard !connectCalled else { return }
        connectCalled = true
        guard phase == .idle else {
            // close() or abort() came before connect(): still report exactly once.
            handlers.onClose(makeReport())
            return
        }
        self.handlers = handlers
        let ep: WebSocketEndpoint
        do {
            ep = try WebSocketEndpoint(url: url)
        } catch {
            failConnect(error)
            return
        }
        endpoint = ep
        logger[metadataKey: "ws"] = "\(ep.redacted)"
        logger.debug("connecting")
        connectTimer = makeTimer(after: configuration.connectTimeout) { [self] in
            guard self.phase != .open && self.phase != .closing && self.phase != .closed else { return }
            if self.phase == .collectingBody {
                self.finishRejection()
                return
            }
            self.failConnect(WebSocketError(.timedOut, "connecting took longer than \(self.configuration.connectTimeout) s"))
        }
        phase = .resolving
        if ep.hostIsIPAddress {
            resolved(Resolver.resolveNow(host: ep.host, port: ep.port, numericOnly: true))
        } else {
            Resolver.resolve(host: ep.host, port: ep.port, queue: queue) { [self] result in
                guard self.phase == .resolving else { return }  // timed out or cancelled meanwhile
                self.resolved(result)
            }
        }
    }

    private func resolved(_ result: Result<[ResolvedAddress], WebSocketError>) {
        switch result {
        case .failure(let e):
            failConnect(e)
        case .success(let list):
            addresses = list
            nextAddress = 0
            phase = .connecting
            tryNextAddress()
        }
    }

    private func tryNextAddress() {
        while nextAddress < addresses.count {
            let address = addresses[nextAddress]
            nextAddress += 1
            let s = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
                | Int32(SOCK_CLOEXEC.rawValue), 0)
            if s < 0 {
                lastConnectErrno = errno
                continue
            }
            Self.openSockets.modify { $0 += 1 }
            var one: Int32 = 1
            _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let rc = address.withSockaddr { Foundation.connect(s, $0, $1) }
            if rc == 0 || errno == EINPROGRESS {
                fd = s
                installSources(fd: s)
                if rc == 0 {
                    tcpConnected()
                } else if addresses.count - nextAddress > 0 {
                    // More addresses to try: don't let one that drops SYNs eat the whole connect timeout.
                    let share = configuration.connectTimeout / Double(addresses.count)
                    attemptTimer = makeTimer(after: max(share, 1)) { [self] in
                        guard self.phase == .connecting, self.fd == s else { return }
                        self.lastConnectErrno = ETIMEDOUT
                        self.removeSources()
                        self.tryNextAddress()
                    }
                }
                return
            }
            lastConnectErrno = errno
            Self.closeSocket(s)
        }
        failConnect(
            WebSocketError(.connectionFailed, "TCP connect failed: \(String(cString: strerror(lastConnectErrno)))",
                errno: lastConnectErrno))
    }

    private func installSources(fd: Int32) {
        let closer = SocketCloser(fd: fd)
        let r = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        let w = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        r.setEventHandler { [self] in self.readable() }
        w.setEventHandler { [self] in self.writable() }
        r.setCancelHandler { closer.sourceCancelled() }
        w.setCancelHandler { closer.sourceCancelled() }
        readSource = r
        writeSource = w
        writeSuspended = false
        r.activate()
        w.activate()
    }

    /// Cancels the sources (the descriptor closes when both cancel handlers ran).
    private func removeSources() {
        if let w = writeSource {
            w.cancel()
            if writeSuspended { w.resume() }
        }
        if let r = readSource {
            r.cancel()
            if readSuspended { r.resume() }
        }
        readSuspended = false
        readSource = nil
        writeSource = nil
        writeSuspended = false
        fd = -1
    }

    private func checkConnectResult() {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { err = errno }
        if err == 0 {
            // Not yet connected (spurious wakeup) if getpeername fails.
            var addr = sockaddr_storage()
            var alen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let ok = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &alen) == 0 }
            }
            if ok { tcpConnected() }
            return
        }
        lastConnectErrno = err
        attemptTimer?.cancel()
        attemptTimer = nil
        removeSources()
        tryNextAddress()
    }

    private func tcpConnected() {
        guard let ep = endpoint else { return }
        attemptTimer?.cancel()
        attemptTimer = nil
        handshake = Handshake.random(subprotocols: configuration.subprotocols)
        if ep.secure {
            do {
                tls = try TLSSession(host: ep.host, isIPAddress: ep.hostIsIPAddress, config: configuration.tls)
            } catch {
                failConnect(error)
                return
            }
            phase = .tlsHandshake
            driveTLSHandshake()
        } else {
            sendUpgradeRequest()
        }
        flush()
    }

    private func driveTLSHandshake() {
        guard let tls else { return }
        switch tls.handshake() {
        case .wantMore:
            tls.drainOutput(into: &outbound)
        case .done:
            tls.drainOutput(into: &outbound)
            logger.trace("TLS established", metadata: ["alpn": "\(tls.alpn ?? "-")"])
            sendUpgradeRequest()
        case .failed(let e):
            tls.drainOutput(into: &outbound)  // the alert, best effort
            flush()
            failConnect(e)
        }
    }

    private func sendUpgradeRequest() {
        guard let ep = endpoint, let handshake else { return }
        phase = .upgrading
        var headers = configuration.additionalHeaders
        headers.removeAll { h in
            ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol"]
                .contains(h.name.lowercased())
        }
        let request = handshake.request(endpoint: ep, userAgent: configuration.userAgent, headers: headers)
        writePlain(request)
    }

    private func failConnect(_ error: WebSocketError) {
        guard phase != .closed else { return }
        logger.debug("connect failed", metadata: ["error": "\(error.code)"])
        failure = error
        finish()
    }

    // MARK: Reading

    private func writable() {
        switch phase {
        case .connecting: checkConnectResult()
        case .closed: return
        default: flush()
        }
    }

    private func readable() {
        if phase == .connecting {
            checkConnectResult()
            return
        }
        if readingPaused, phase == .open || phase == .closing, let r = readSource {
            if !readSuspended {
                r.suspend()
                readSuspended = true
            }
            return
        }
        var budget = 16
        withUnsafeTemporaryAllocation(byteCount: 32 * 1024, alignment: 16) { buf in
            while budget > 0 && phase != .closed && fd >= 0 && !(readingPaused && (phase == .open || phase == .closing)) {
                budget -= 1
                let n = recv(fd, buf.baseAddress, buf.count, 0)
                if n > 0 {
                    lastInbound = DispatchTime.now().uptimeNanoseconds
                    ingest(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                    if n < buf.count { return }
                } else if n == 0 {
                    peerClosedTCP()
                    return
                } else {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { return }
                    connectionLost(WebSocketError(.connectionReset, "recv failed: \(String(cString: strerror(e)))", errno: e))
                    return
                }
            }
        }
    }

    private func ingest(_ bytes: UnsafeRawBufferPointer) {
        guard let tls else {
            ingestPlain(bytes)
            return
        }
        tls.feed(bytes)
        if !tls.handshakeDone {
            driveTLSHandshake()
            flush()
            guard tls.handshakeDone, phase != .closed else { return }
        }
        plaintext.removeAll(keepingCapacity: true)
        var outcome: TLSSession.ReadOutcome = .ok
        withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 16) { s in
            outcome = tls.read(into: &plaintext, scratch: s)
        }
        tls.drainOutput(into: &outbound)  // e.g. TLS 1.3 key update answers
        if !plaintext.isEmpty {
            let chunk = plaintext
            chunk.withUnsafeBytes { ingestPlain($0) }
        }
        switch outcome {
        case .ok: break
        case .closeNotify: if phase != .closed { peerClosedTCP() }
        case .failed(let e): if phase != .closed { connectionLost(e) }
        }
        if phase != .closed { flush() }
    }

    private func ingestPlain(_ bytes: UnsafeRawBufferPointer) {
        switch phase {
        case .upgrading:
            responseBuffer.append(contentsOf: bytes)
            parseUpgradeResponse()
        case .collectingBody:
            guard var r = rejection else { return }
            r.body.append(contentsOf: bytes.prefix(r.wanted - r.body.count))
            rejection = r
            if r.body.count >= r.wanted { finishRejection() }
        case .open, .closing:
            parser.append(bytes)
            processFrames()
        default:
            break
        }
    }

    private func parseUpgradeResponse() {
        guard let handshake else { return }
        let outcome = handshake.parse(responseBuffer, scannedUpTo: headScanned)
        headScanned = responseBuffer.count
        switch outcome {
        case .needMore:
            return
        case .failed(let e):
            failConnect(e)
        case .rejected(let status, let headers, let body, let length):
            let wanted = min(length ?? Handshake.maximumBodySize, Handshake.maximumBodySize)
            rejection = (status, headers, body, wanted)
            responseBuffer = []
            if body.count >= wanted {
                finishRejection()
            } else {
                phase = .collectingBody
                if length == nil {
                    // No Content-Length (chunked, or a keep-alive answer): take what arrives in a short
                    // grace period rather than waiting for an end that may never come.
                    bodyTimer = makeTimer(after: min(0.25, configuration.connectTimeout)) { [self] in
                        guard self.phase == .collectingBody else { return }
                        self.finishRejection()
                    }
                }
            }
        case .upgraded(let response, let leftover):
            responseBuffer = []
            phase = .open
            connectTimer?.cancel()
            connectTimer = nil
            logger.debug("open", metadata: ["subprotocol": "\(response.subprotocol ?? "-")"])
            startKeepAlive()
            let early = earlyMessages
            earlyMessages = []
            for (m, reserved) in early { sendOnQueue(m, reserved: reserved) }
            flush()
            handlers?.onOpen(response)
            guard phase == .open || phase == .closing else { return }
            if !leftover.isEmpty {
                parser.append(leftover)
                processFrames()
            }
        }
    }

    private func finishRejection() {
        guard let r = rejection else { return }
        rejection = nil
        failConnect(
            WebSocketError(
                .upgradeRejected, "the server answered the upgrade with HTTP \(r.status)", httpStatus: r.status,
                httpHeaders: r.headers, httpBody: r.body))
    }

    private func processFrames() {
        // Paused: what is parsed stays in the parser until resumeReading().
        while (phase == .open || phase == .closing) && !readingPaused {
            let action: WebSocketStateMachine.Action
            do {
                guard let frame = try parser.next() else {
                    if let partial = parser.partialFrame() { perform(machine.inspectPartial(partial.opcode, partial.payload)) }
                    return
                }
                action = machine.receive(frame)
            } catch {
                action = machine.receive(error)
                perform(action)
                return
            }
            perform(action)
        }
    }

    private func perform(_ action: WebSocketStateMachine.Action) {
        switch action {
        case .none:
            break
        case .deliver(let message):
            handlers?.onMessage(message)
        case .sendPong(let payload):
            // Every ping is answered, but a peer that floods pings without reading must not make us
            // buffer pongs without bound: past the cap it is closed with 1008, like a slow client.
            let before = outbound.count
            writeFrame(.pong, payload)
            unwrittenControlBytes += max(0, outbound.count - before)
            if unwrittenControlBytes > Self.maximumUnwrittenControlBytes && outboundStart < outbound.count {
                logger.info("peer floods pings without reading the pongs; closing with 1008",
                               metadata: ["ws.unwritten_pong_bytes": "\(unwrittenControlBytes)"])
                perform(machine.peerNotReading(
                    "more than \(Self.maximumUnwrittenControlBytes) bytes of pongs wait for a peer that does not read"))
                return
            }
            flush()
        case .pongReceived(let payload):
            handlers?.onPong(payload)
        case .replyClose(let code, let reason):
            logger.debug("peer closed", metadata: ["code": "\(code?.rawValue ?? 1005)"])
            dropPendingFragments()  // no data after our close frame
            writeFrame(.close, FrameEncoder.closePayload(code: code, reason: reason))
            enterClosing()
        case .closeHandshakeCompleted:
            logger.debug("close handshake complete")
            enterClosing()
        case .fail(let code, let error):
            logger.debug("failing connection", metadata: ["code": "\(code.rawValue)", "error": "\(error.code)"])
            failure = error
            dropPendingFragments()
            writeFrame(.close, FrameEncoder.closePayload(code: code, reason: ""))
            enterClosing()
        }
    }

    /// A close frame went out (ours or our answer): stop keep-alive, start the close timer, and when both
    /// close frames have been exchanged send TLS close_notify. Then wait for the server to close TCP.
    private func enterClosing() {
        phase = .closing
        stopKeepAlive()
        if machine.state == .closed || machine.state == .closeReceived {
            tls?.shutdown()
            tls?.drainOutput(into: &outbound)
        }
        flush()
        guard phase == .closing, closeTimer == nil else { return }
        closeTimer = makeTimer(after: configuration.closeTimeout) { [self] in
            guard self.phase == .closing else { return }
            if self.failure == nil && self.machine.peerClose == nil {
                self.failure = WebSocketError(.closeTimeout, "the close handshake did not finish in time")
            }
            self.finish()
        }
    }

    private func peerClosedTCP() {
        switch phase {
        case .closing, .closed:
            finish()
        case .collectingBody:
            finishRejection()
        case .open:
            connectionLost(WebSocketError(.connectionReset, "the connection closed without a close frame"))
        case .tlsHandshake:
            failConnect(tls?.handshakeError(eof: true) ?? WebSocketError(.tlsHandshakeFailed, "closed during TLS"))
        default:
            failConnect(WebSocketError(.connectionReset, "the connection closed during the handshake"))
        }
    }

    private func connectionLost(_ error: WebSocketError) {
        guard phase != .closed else { return }
        if phase == .open || phase == .closing {
            if failure == nil && machine.peerClose == nil { failure = error }
            finish()
        } else {
            failConnect(error)
        }
    }

    // MARK: Writing

    private func sendOnQueue(_ message: WebSocketMessage, reserved: Int) {
        switch phase {
        case .idle, .resolving, .connecting, .tlsHandshake, .upgrading:
            earlyMessages.append((message, reserved))
            return
        default:
            break
        }
        backlog.release(reserved)
        guard phase == .open, machine.canSend else { return }
        let opcode: WebSocketOpcode
        let bytes: [UInt8]
        switch message {
        case .text(let s):
            let fragmented = configuration.outgoingFragmentSize.map { s.utf8.count > $0 } ?? false
            guard fragmented || !pendingFragments.isEmpty else {
                var s = s
                s.withUTF8 { writeFrame(.text, UnsafeRawBufferPointer($0), fin: true) }
                flush()
                return
            }
            opcode = .text
            bytes = Array(s.utf8)
        case .binary(let b):
            let fragmented = configuration.outgoingFragmentSize.map { b.count > $0 } ?? false
            guard fragmented || !pendingFragments.isEmpty else {
                b.withUnsafeBytes { writeFrame(.binary, $0, fin: true) }
                flush()
                return
            }
            opcode = .binary
            bytes = b
        }
        // Fragmented (or queued behind a fragmented one): frames are encoded as the socket drains, so
        // control frames (pongs, pings, close) go out between fragments instead of after the message.
        pendingFragments.append(PendingMessage(opcode: opcode, payload: bytes))
        pendingBytes += bytes.count
        flush()
    }

    /// A data message not yet fully encoded (outgoing fragmentation).
    private struct PendingMessage {
        var opcode: WebSocketOpcode
        var payload: [UInt8]
        var offset = 0
    }

    /// The most bytes of pong frames that may wait for a peer that does not read them (counted since the
    /// output buffer was last written out completely). A peer that makes more pile up by flooding pings is
    /// closed with 1008 and ``WebSocketError/Code/peerNotReading``.
    public static let maximumUnwrittenControlBytes = 256 * 1024

    /// Wire bytes kept encoded ahead of the socket while fragments wait.
    private static let fragmentLowWater = 64 * 1024

    /// Encodes waiting fragments while the encoded output is short. Returns true if it encoded any.
    private func encodeFragments(all: Bool = false) -> Bool {
        var encoded = false
        let size = max(configuration.outgoingFragmentSize ?? Int.max, 1)
        while let head = pendingFragments.first,
            all || outbound.count - outboundStart < Self.fragmentLowWater,
            phase == .open || phase == .closing
        {
            let end = head.payload.count - head.offset > size ? head.offset + size : head.payload.count
            let first = head.offset == 0
            head.payload.withUnsafeBytes { raw in
                let part = UnsafeRawBufferPointer(rebasing: raw[head.offset..<end])
                writeFrame(first ? head.opcode : .continuation, part, fin: end == head.payload.count)
            }
            guard phase != .closed, !pendingFragments.isEmpty else { return encoded }  // lost while writing
            pendingBytes -= end - head.offset
            if end == head.payload.count {
                pendingFragments.removeFirst()
            } else {
                pendingFragments[0].offset = end
            }
            encoded = true
        }
        return encoded
    }

    private func writeFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8]) {
        payload.withUnsafeBytes { writeFrame(opcode, $0, fin: true) }
    }

    private func writeFrame(_ opcode: WebSocketOpcode, _ payload: UnsafeRawBufferPointer, fin: Bool) {
        let key = nextMaskKey()
        if let tls {
            scratch.removeAll(keepingCapacity: true)
            FrameEncoder.encode(opcode: opcode, fin: fin, payload: payload, maskKey: key, into: &scratch)
            let error = scratch.withUnsafeBytes { tls.write($0) }
            if scratch.capacity > 1 << 20 { scratch = [] }  // don't keep a large message's buffer around
            if let error {
                connectionLost(error)
                return
            }
            tls.drainOutput(into: &outbound)
        } else {
            FrameEncoder.encode(opcode: opcode, fin: fin, payload: payload, maskKey: key, into: &outbound)
        }
    }

    private func writePlain(_ bytes: [UInt8]) {
        if let tls {
            if let e = bytes.withUnsafeBytes({ tls.write($0) }) {
                connectionLost(e)
                return
            }
            tls.drainOutput(into: &outbound)
        } else {
            outbound.append(contentsOf: bytes)
        }
    }

    private func nextMaskKey() -> UInt32 {
        if maskPoolIndex + 4 > maskPool.count {
            if RAND_bytes(&maskPool, Int32(maskPool.count)) != 1 {
                var g = SystemRandomNumberGenerator()
                for i in maskPool.indices { maskPool[i] = g.next() }
            }
            maskPoolIndex = 0
        }
        var key: UInt32 = 0
        withUnsafeMutableBytes(of: &key) { k in
            for i in 0..<4 { k[i] = maskPool[maskPoolIndex + i] }
        }
        maskPoolIndex += 4
        return key
    }

    /// Writes as much of `outbound` as the socket takes (send with MSG_NOSIGNAL: no SIGPIPE).
    private func flush() {
        guard fd >= 0, phase != .connecting, phase != .closed else { return }
        repeat {
            guard writeOut() else { return }
        } while !pendingFragments.isEmpty && outbound.count - outboundStart < Self.fragmentLowWater
            && encodeFragments()
        if outboundStart == outbound.count {
            outbound.removeAll(keepingCapacity: outbound.capacity <= 1 << 20)
            outboundStart = 0
            unwrittenControlBytes = 0
            if !writeSuspended, let w = writeSource {
                w.suspend()
                writeSuspended = true
            }
        } else {
            if outboundStart > 1 << 20 && outboundStart > outbound.count / 2 {
                outbound.removeSubrange(0..<outboundStart)
                outboundStart = 0
            }
            if writeSuspended, let w = writeSource {
                w.resume()
                writeSuspended = false
            }
        }
        backlog.setBuffered(outbound.count - outboundStart + pendingBytes)
    }

    /// Writes encoded bytes until the socket would block. False when the connection was lost.
    private func writeOut() -> Bool {
        while outboundStart < outbound.count {
            let n = outbound.withUnsafeBytes { all in
                systemSend(fd, all.baseAddress! + outboundStart, all.count - outboundStart, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                outboundStart += n
                continue
            }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { break }
            backlog.setBuffered(0)
            connectionLost(WebSocketError(.connectionReset, "send failed: \(String(cString: strerror(e)))", errno: e))
            return false
        }
        return true
    }

    private func dropPendingFragments() {
        pendingFragments = []
        pendingBytes = 0
    }

    // MARK: Closing

    private func closeOnQueue(code: WebSocketCloseCode, reason: String) {
        switch phase {
        case .closed, .closing:
            return
        case .open:
            guard machine.canSend else { return }
            _ = encodeFragments(all: true)  // messages sent before close() go out before the close frame
            guard phase == .open, machine.close() else { return }
            let c = code.isValidOnWire ? code : .normalClosure
            logger.debug("closing", metadata: ["code": "\(c.rawValue)"])
            writeFrame(.close, FrameEncoder.closePayload(code: c, reason: reason))
            enterClosing()
        default:
            failure = WebSocketError(.cancelled, "closed before the connection opened")
            finish()
        }
    }

    /// Ends the connection: timers, sources, socket, TLS; then the one onClose.
    private func finish() {
        guard phase != .closed else { return }
        let report = makeReport()
        if let tls, tls.handshakeDone, fd >= 0 {
            // Best effort close_notify (if not sent yet) before closing.
            tls.shutdown()
            tls.drainOutput(into: &outbound)
            if outboundStart < outbound.count {
                _ = outbound.withUnsafeBytes { all in
                    systemSend(fd, all.baseAddress! + outboundStart, all.count - outboundStart, Int32(MSG_NOSIGNAL))
                }
            }
        }
        phase = .closed
        for t in [connectTimer, closeTimer, bodyTimer, attemptTimer, pingTimer, watchdogTimer] { t?.cancel() }
        connectTimer = nil
        closeTimer = nil
        bodyTimer = nil
        attemptTimer = nil
        pingTimer = nil
        watchdogTimer = nil
        removeSources()
        tls = nil
        outbound = []
        outboundStart = 0
        unwrittenControlBytes = 0
        dropPendingFragments()
        parser = FrameParser(maximumFrameSize: parser.maximumFrameSize)
        for (_, reserved) in earlyMessages { backlog.release(reserved) }
        earlyMessages = []
        backlog.setBuffered(0)
        let h = handlers
        handlers = nil
        logger.debug("closed", metadata: ["code": "\(report.code.rawValue)", "clean": "\(report.wasClean)"])
        h?.onClose(report)
    }

    private func makeReport() -> WebSocketCloseReport {
        let peer = machine.peerClose
        if let failure {
            return WebSocketCloseReport(
                code: failure.closeCode ?? .abnormalClosure, reason: "", error: failure, wasClean: peer != nil)
        }
        if let peer {
            return WebSocketCloseReport(code: peer.code ?? .noStatusReceived, reason: peer.reason, wasClean: true)
        }
        return WebSocketCloseReport(
            code: .abnormalClosure, error: WebSocketError(.connectionReset, "connection lost"), wasClean: false)
    }

    // MARK: Timers

    private func makeTimer(
        after seconds: TimeInterval, repeating: TimeInterval? = nil, _ handler: @escaping @Sendable () -> Void
    ) -> any DispatchSourceTimer {
        let t = DispatchSource.makeTimerSource(queue: queue)
        let ns = Int(max(0, seconds) * 1e9)
        if let repeating {
            t.schedule(
                deadline: .now() + .nanoseconds(ns), repeating: .nanoseconds(Int(repeating * 1e9)),
                leeway: .milliseconds(10))
        } else {
            t.schedule(deadline: .now() + .nanoseconds(ns), leeway: .milliseconds(10))
        }
        t.setEventHandler(handler: handler)
        t.activate()
        return t
    }

    private func startKeepAlive() {
        guard let ka = configuration.keepAlive, ka.interval > 0, ka.timeout > 0 else { return }
        lastInbound = DispatchTime.now().uptimeNanoseconds
        pingTimer = makeTimer(after: ka.interval, repeating: ka.interval) { [self] in
            guard self.phase == .open, self.machine.canSend else { return }
            self.writeFrame(.ping, [])
            self.flush()
        }
        let check = min(ka.timeout / 4, ka.interval)
        watchdogTimer = makeTimer(after: check, repeating: check) { [self] in
            guard self.phase == .open else { return }
            let idle = Double(DispatchTime.now().uptimeNanoseconds - self.lastInbound) / 1e9
            if idle >= ka.timeout {
                self.failure = WebSocketError(.pongTimeout, "nothing received for \(ka.timeout) s")
                self.finish()
            }
        }
    }

    private func stopKeepAlive() {
        pingTimer?.cancel()
        pingTimer = nil
        watchdogTimer?.cancel()
        watchdogTimer = nil
    }
}
