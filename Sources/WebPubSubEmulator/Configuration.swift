import Foundation
import Logging

extension WebPubSubEmulator {
    /// The default access key of Microsoft's emulator (and of this one).
    public static let defaultAccessKey = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"

    /// An upstream event handler: where CloudEvents for a hub go.
    public struct EventHandler: Sendable, Equatable {
        /// The hub name (case-insensitive), or `*` for every hub.
        public var hub: String
        /// The URL template; `{hub}` and `{event}` are substituted.
        public var urlTemplate: String
        /// The user events sent there: `*` for all, or a comma-separated list of names.
        public var userEventPattern: String
        /// The system events sent there (`connect`, `connected`, `disconnected`).
        public var systemEvents: Set<String>

        /// Creates a handler. By default every user event and every system event goes to `urlTemplate`.
        public init(hub: String, urlTemplate: String, userEventPattern: String = "*",
                    systemEvents: Set<String> = ["connect", "connected", "disconnected"]) {
            self.hub = hub
            self.urlTemplate = urlTemplate
            self.userEventPattern = userEventPattern
            self.systemEvents = systemEvents
        }

        /// Parses the command-line form `HUB=URL_TEMPLATE`.
        public init?(argument: String) {
            guard let eq = argument.firstIndex(of: "="), eq != argument.startIndex else { return nil }
            let url = String(argument[argument.index(after: eq)...])
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else { return nil }
            self.init(hub: String(argument[..<eq]), urlTemplate: url)
        }

        func handles(hub: String) -> Bool { self.hub == "*" || self.hub.lowercased() == hub.lowercased() }

        func handles(userEvent: String) -> Bool {
            userEventPattern == "*"
                || userEventPattern.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == userEvent.lowercased() }
        }
    }

    /// Whether the test hooks under `/_emulator/` (which can read every connection, inject frames and drop
    /// sessions) are served.
    public enum TestHooks: String, Sendable, CaseIterable {
        /// On when the emulator binds a loopback address (`127.0.0.0/8`, `::1`, `localhost`), off otherwise.
        case automatic
        /// On; when the bind address is not loopback, every hook request needs
        /// `Authorization: Bearer <JWT signed with the access key>` whose `aud` is the request URL (as for REST).
        case enabled
        /// Off: every hook path answers 404.
        case disabled
    }

    /// Whether `host` is a loopback bind address.
    static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        return h == "localhost" || h == "::1" || h == "[::1]" || h.hasPrefix("127.")
    }

    /// Emulator settings.
    public struct Configuration: Sendable {
        /// Address to bind.
        public var host: String = "127.0.0.1"
        /// Port to bind; 0 picks a free one (read ``WebPubSubEmulator/port`` after ``WebPubSubEmulator/start()``).
        public var port: Int = 8080
        /// The access key signing client and REST tokens (its UTF-8 bytes are the HMAC key).
        public var accessKey: String = WebPubSubEmulator.defaultAccessKey
        /// Upstream event handlers, first match wins.
        public var eventHandlers: [EventHandler] = []
        /// Logger (tokens are never logged).
        public var logger: Logger = Logger(label: "WebPubSubEmulator")
        /// How long a dropped reliable session waits for recovery (the service: 30 s).
        public var recoveryWindow: TimeInterval = 30
        /// Limits of the reliable protocol's unacknowledged buffer.
        public var reliableBufferLimits = ReliableBuffer<Int>.Limits()
        /// Largest client message (the service: 1 MB per frame; larger closes with 1009).
        public var maxMessageSize: Int = 1 << 20
        /// How many processed ack ids each connection remembers for `Duplicate` answers.
        public var ackMemoryCapacity: Int = 1000
        /// Timeout of upstream event-handler calls.
        public var eventHandlerTimeout: TimeInterval = 30
        /// Bytes that may wait in the emulator for one client socket (written by the service, not yet taken by
        /// the peer's TCP stack). A client that lets more pile up is a slow client: the service closes it with
        /// 1008 (`SlowClient`) instead of buffering without bound. Reliable sessions usually hit their
        /// 1,000-message buffer first; this bounds the plain JSON and raw protocols.
        public var outboundBufferLimit: Int = 16 << 20
        /// Interval of WebSocket ping frames sent to clients (the service: 20 s); nil sends none.
        public var keepAliveInterval: TimeInterval? = 20
        /// Event-loop threads; 0 uses the number of cores. The default is one: every socket on one loop, so a
        /// receiver's reads (its `sequenceAck`s) interleave with the writes that publishers fan out to it. With
        /// several loops, a publisher on one loop can keep a receiver's loop busy with writes long enough that
        /// the acks sit unread and a reliable connection that acked in time overflows its 1,000-message buffer.
        public var threads: Int = 1
        /// TLS for the client endpoint and the REST API (`https://`, `wss://`); nil serves plain `http://` only.
        public var tls: TLS?
        /// Whether REST calls accept Microsoft Entra ID bearer tokens (off by default).
        public var entraID: EntraIDMode = .off
        /// Most open sockets (HTTP and WebSocket); nil takes the process's soft descriptor limit less 64 (for
        /// the listener, upstream calls and the host process). A socket accepted beyond it gets
        /// `503 Service Unavailable` and is closed, with a warning in the log, so that health checks and new
        /// clients keep working while the limit is reached, and the descriptors never run out.
        public var maxConnections: Int?
        /// Seconds a new socket may take to send a whole HTTP request (head and body) before it is closed
        /// (logged at warning level); bounds slow and silent peers that never finish a request.
        public var headerTimeout: TimeInterval = 10
        /// Seconds a kept-alive HTTP connection may stay idle between requests before it is closed (logged).
        /// WebSocket connections are not idle-timed (keep-alive pings and the slow-client limit bound them).
        public var idleTimeout: TimeInterval = 60
        /// Most groups one connection may be in (token groups, joins and REST adds together). The service
        /// documents no such number; a join beyond it is answered `BadRequest`, a REST add with 400.
        public var maxGroupsPerConnection: Int = 1000
        /// Whether the `/_emulator/` test hooks answer. See ``TestHooks``.
        public var testHooks: TestHooks = .automatic

        /// Creates a configuration with the defaults of Microsoft's emulator.
        public init(host: String = "127.0.0.1", port: Int = 8080, accessKey: String = WebPubSubEmulator.defaultAccessKey,
                    eventHandlers: [EventHandler] = [], logger: Logger = Logger(label: "WebPubSubEmulator")) {
            self.host = host
            self.port = port
            self.accessKey = accessKey
            self.eventHandlers = eventHandlers
            self.logger = logger
        }
    }

    /// The TLS listener: a PEM certificate chain (leaf first) and its PEM private key.
    ///
    /// With ``port`` nil the emulator listens with TLS only, on ``Configuration/port``. With a port (0 picks a free
    /// one) it listens on both: plain on ``Configuration/port`` and TLS on this one. Either way
    /// ``WebPubSubEmulator/endpoint``, the connection string and the client access URLs it mints use
    /// `https://` / `wss://`.
    public struct TLS: Sendable, Equatable {
        /// The certificate chain file (PEM), leaf first.
        public var certificateFile: String
        /// The private key file (PEM) of the leaf.
        public var privateKeyFile: String
        /// A second listener's port for TLS (plain stays on ``Configuration/port``); nil: one TLS listener.
        public var port: Int?
        /// How long a client may take from connecting to finishing the TLS handshake before it is closed.
        public var handshakeTimeout: TimeInterval = 10

        /// Creates TLS settings.
        public init(certificateFile: String, privateKeyFile: String, port: Int? = nil) {
            self.certificateFile = certificateFile
            self.privateKeyFile = privateKeyFile
            self.port = port
        }
    }

    /// How REST calls (and so `:generateToken`) treat Microsoft Entra ID bearer tokens: JWTs whose `aud` is
    /// `https://webpubsub.azure.com`, the audience of the `https://webpubsub.azure.com/.default` scope that the
    /// Azure SDKs request.
    public enum EntraIDMode: String, Sendable, Equatable, CaseIterable {
        /// Refused with 401, like every token not signed with the access key (the default).
        case off
        /// Accepted from any issuer when the audience and lifetime fit (`exp` required, `nbf` honoured, 5 min
        /// skew), **without checking the signature**, the issuer, the tenant or any role: anyone who can reach
        /// the emulator can call its REST API. As Microsoft's emulator's `AllowUnvalidatedEntraTokens`. Logged
        /// as a warning at start.
        case acceptUnvalidated = "accept-unvalidated"
    }
}
