import ArgumentParser
import Dispatch
import Foundation
import Logging
import WebPubSubEmulator

@main
struct EmulatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpubsub-emulator",
        abstract: "A local Azure Web PubSub service (client WebSocket endpoint, REST API, event handlers).",
        subcommands: [Serve.self, Token.self, Load.self],
        defaultSubcommand: Serve.self)
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the emulator (the default). Prints its connection string when ready.")

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind (0 picks a free port; the real one is printed).") var port = 8080
    @Option(name: .customLong("access-key"), help: "Access key (at least 32 characters).")
    var accessKey = WebPubSubEmulator.defaultAccessKey
    @Option(name: .customLong("event-handler"), help: "HUB=URL_TEMPLATE ({hub}, {event}); HUB may be * for every hub.")
    var eventHandlers: [String] = []
    @Option(name: .customLong("recovery-window"), help: "Seconds a dropped reliable connection may be recovered.")
    var recoveryWindow: Double = 30
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"
    @Option(help: "Event-loop threads (0 = cores). One keeps every socket's reads and fan-out writes interleaved.")
    var threads = 1
    @Option(name: .customLong("reliable-buffer-messages"),
            help: "Unacknowledged messages a reliable connection may hold before it is closed with 1008 (the service: 1000).")
    var reliableBufferMessages = 1000
    @Option(name: .customLong("outbound-buffer-bytes"),
            help: "Bytes that may wait for a client that does not read before it is closed with 1008 SlowClient.")
    var outboundBufferBytes = 16 << 20
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain (leaf first): serve https:// and wss://.")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key of --tls-cert.")
    var tlsKey: String?
    @Option(name: .customLong("tls-port"),
            help: "Serve TLS on this port and plain http on --port; without it, --port serves TLS only (0 picks a free port).")
    var tlsPort: Int?
    @Option(name: .customLong("entra-id"),
            help: "off, or accept-unvalidated: REST calls accept Microsoft Entra ID bearer tokens (audience and lifetime checked, signature NOT).")
    var entraID = "off"

    @Option(name: .customLong("max-connections"),
            help: "Most open sockets; beyond it a socket gets 503 and is closed (default: the descriptor limit less 64).")
    var maxConnections: Int?
    @Option(name: .customLong("header-timeout"), help: "Seconds a socket may take to send a whole HTTP request.")
    var headerTimeout: Double = 10
    @Option(name: .customLong("idle-timeout"), help: "Seconds a kept-alive HTTP connection may idle between requests.")
    var idleTimeout: Double = 60
    @Option(name: .customLong("max-groups-per-connection"), help: "Most groups one connection may be in.")
    var maxGroupsPerConnection = 1000
    @Option(name: .customLong("test-hooks"),
            help: "automatic (on for loopback binds only), enabled (bearer token needed off loopback), disabled.")
    var testHooks = "automatic"

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together.") }
        guard tlsPort == nil || tlsCert != nil else { throw ValidationError("--tls-port needs --tls-cert and --tls-key.") }
        guard WebPubSubEmulator.EntraIDMode(rawValue: entraID) != nil else {
            throw ValidationError("--entra-id must be off or accept-unvalidated, got '\(entraID)'.")
        }
        guard WebPubSubEmulator.TestHooks(rawValue: testHooks) != nil else {
            throw ValidationError("--test-hooks must be automatic, enabled or disabled.")
        }
        guard (maxConnections ?? 1) >= 1, maxGroupsPerConnection >= 1 else {
            throw ValidationError("--max-connections and --max-groups-per-connection must be at least 1.")
        }
        guard headerTimeout.isFinite, idleTimeout.isFinite, headerTimeout >= 0, idleTimeout >= 0 else {
            throw ValidationError("--header-timeout and --idle-timeout must be seconds ≥ 0 (0 = none).")
        }
        guard outboundBufferBytes >= 1024 else { throw ValidationError("--outbound-buffer-bytes must be at least 1024.") }
        guard accessKey.utf8.count >= 32, !accessKey.contains(";"), !accessKey.contains(where: { $0.isASCII && $0.asciiValue! < 32 }) else {
            throw ValidationError("--access-key must be at least 32 bytes, without ';' or control characters.")
        }
        for h in eventHandlers where WebPubSubEmulator.EventHandler(argument: h) == nil {
            throw ValidationError("--event-handler must be HUB=http(s)://…, got '\(h)'.")
        }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var config = WebPubSubEmulator.Configuration(host: host, port: port, accessKey: accessKey,
                                                     eventHandlers: eventHandlers.compactMap(WebPubSubEmulator.EventHandler.init(argument:)))
        config.recoveryWindow = recoveryWindow
        config.threads = threads
        config.reliableBufferLimits.maxMessages = reliableBufferMessages
        config.outboundBufferLimit = outboundBufferBytes
        if let tlsCert, let tlsKey {
            config.tls = .init(certificateFile: tlsCert, privateKeyFile: tlsKey, port: tlsPort)
        }
        config.entraID = WebPubSubEmulator.EntraIDMode(rawValue: entraID) ?? .off
        config.maxConnections = maxConnections
        config.headerTimeout = headerTimeout
        config.idleTimeout = idleTimeout
        config.maxGroupsPerConnection = maxGroupsPerConnection
        config.testHooks = WebPubSubEmulator.TestHooks(rawValue: testHooks) ?? .automatic
        let emulator = WebPubSubEmulator(configuration: config)
        do {
            try emulator.start()
        } catch let error as TLSSetupError {
            // A bad certificate or key: one clear line naming the file, exit 1 (no usage text).
            FileHandle.standardError.write(Data("webpubsub-emulator: \(error)\n".utf8))
            throw ExitCode.failure
        }

        let done = DispatchSemaphore(value: 0)
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { done.signal() }
            source.resume()
            sources.append(source)
        }
        // The ready line, written straight to fd 1 so it is never stuck in a buffer.
        FileHandle.standardOutput.write(Data((emulator.connectionString + "\n").utf8))
        done.wait()
        emulator.stop()
        _ = sources
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "Print a client access URL.")

    @Option(help: "Hub name.") var hub: String
    @Option(help: "User id (sub).") var user: String?
    @Option(help: "Role, e.g. webpubsub.joinLeaveGroup (repeatable).") var role: [String] = []
    @Option(help: "Group joined at connect (repeatable).") var group: [String] = []
    @Option(help: "Lifetime in minutes.") var minutes = 60
    @Option(name: .customLong("connection-string"), help: "Connection string of the service.")
    var connectionString = "Endpoint=http://localhost:8080;AccessKey=\(WebPubSubEmulator.defaultAccessKey);Version=1.0;"

    func run() throws {
        var endpoint: String?, key: String?, port: String?
        for part in connectionString.split(separator: ";") {
            guard let eq = part.firstIndex(of: "=") else { throw ValidationError("Malformed connection string segment '\(part)'.") }
            let k = part[..<eq].lowercased(), v = String(part[part.index(after: eq)...])
            switch k {
            case "endpoint": endpoint = v
            case "accesskey": key = v
            case "port": port = v
            default: break
            }
        }
        guard var endpoint, let key else { throw ValidationError("The connection string needs Endpoint and AccessKey.") }
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        if let port { endpoint += ":\(port)" }
        print(WebPubSubEmulator.clientAccessURL(endpoint: endpoint, accessKey: key, hub: hub, userID: user, roles: role,
                                                groups: group, expiresIn: TimeInterval(minutes * 60)))
    }
}

struct Load: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Measure loopback fan-out: N receivers in a group, one publisher, messages delivered per second.")

    @Option(help: "Receivers in the group.") var receivers = 100
    @Option(help: "Messages to publish.") var messages = 2000
    @Option(help: "Payload bytes per message.") var size = 64
    @Flag(help: "Receivers use json.webpubsub.azure.v1 instead of the reliable protocol.") var nonReliable = false
    @Option(help: "Client event-loop threads.") var clientThreads = 1
    @Option(help: "Give up after this many seconds.") var timeout: Double = 120
    @Option(name: .customLong("reliable-buffer-messages"),
            help: "In-process emulator: unacknowledged messages per reliable connection before close 1008.")
    var reliableBufferMessages = 1000
    @Option(help: "Emulator event-loop threads (in-process emulator; 0 = cores).") var threads = 1
    @Option(help: "Use a running emulator (its connection string) instead of starting one in-process.")
    var connectionString: String?

    func run() throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .error
            return h
        }
        var options = FanOutLoad.Options()
        options.receivers = receivers
        options.messages = messages
        options.payloadSize = size
        options.reliable = !nonReliable
        options.clientThreads = clientThreads
        options.timeout = timeout
        var emulator: WebPubSubEmulator?
        var endpoint = "", key = WebPubSubEmulator.defaultAccessKey
        if let connectionString {
            for part in connectionString.split(separator: ";") {
                let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { continue }
                if kv[0].lowercased() == "endpoint" { endpoint = kv[1] }
                if kv[0].lowercased() == "accesskey" { key = kv[1] }
            }
        } else {
            var config = WebPubSubEmulator.Configuration(port: 0)
            config.threads = threads
            config.reliableBufferLimits.maxMessages = reliableBufferMessages
            config.reliableBufferLimits.maxBytes = max(config.reliableBufferLimits.maxBytes, reliableBufferMessages * 1024)
            let e = WebPubSubEmulator(configuration: config)
            try e.start()
            emulator = e
            endpoint = e.endpoint
        }
        defer { emulator?.stop() }
        let result = try FanOutLoad.run(endpoint: endpoint, accessKey: key, options: options)
        var report = "fan-out \(options.reliable ? "reliable" : "json") size=\(size): \(result)\n"
        if let emulator { report += "emulator stats: \(emulator.statsJSON())\n" }
        FileHandle.standardOutput.write(Data(report.utf8))
    }
}
