//===----------------------------------------------------------------------===//
// webpubsub: a terminal client for an Azure Web PubSub hub (the `wscat` habit).
// Exit codes (also in README.md):
//   0 ok · 1 unexpected failure · 2 could not connect or authenticate ·
//   3 an operation failed (join, send, event) · 4 the connection was lost for good ·
//   64 usage (argument-parser's own: a bad or missing option, a malformed connection string) ·
//   128 + N: signal N (SIGINT, SIGTERM) before the connection was up (`send`: at any time)
//===----------------------------------------------------------------------===//
import ArgumentParser
import Dispatch
import Foundation
import Logging
import WebPubSub

/// The exit codes that scripts can test.
enum Exit: Int32 {
    case ok = 0
    case connectFailed = 2
    case operationFailed = 3
    case connectionLost = 4

    var code: ExitCode { ExitCode(rawValue) }
}

@main
struct WebPubSubCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpubsub",
        abstract: "A terminal client for an Azure Web PubSub hub.",
        discussion: """
            Connect with --url (a client access URL) or with --connection-string and --hub (a token is \
            minted; WEBPUBSUB_CONNECTION_STRING is read when neither is given). Errors and logs go to \
            stderr and never show an access token or key.

            Exit codes: 0 ok, 1 unexpected failure, 2 could not connect or authenticate, 3 an operation \
            failed (join, send, event), 4 the connection was lost for good, 64 usage, 130 or 143 \
            interrupted (SIGINT, SIGTERM) before the connection was up.
            """,
        subcommands: [Connect.self, Send.self],
        defaultSubcommand: Connect.self)
}

/// How to reach the hub, shared by the subcommands.
struct ConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A client access URL (ws:// or wss://…/client/hubs/HUB?access_token=…).", valueName: "url"))
    var url: String?

    @Option(name: .customLong("connection-string"),
            help: ArgumentHelp("The service's connection string (Endpoint=…;AccessKey=…); mints a token.", valueName: "s"))
    var connectionString: String?

    @Option(help: ArgumentHelp("The hub (with --connection-string).", valueName: "h"))
    var hub: String?

    @Option(name: .customLong("user-id"), help: ArgumentHelp("The user id of the minted token.", valueName: "u"))
    var userID: String?

    @Option(help: ArgumentHelp("A role of the minted token, e.g. webpubsub.sendToGroup (repeatable).", valueName: "r"))
    var role: [String] = []

    @Option(name: .customLong("protocol"), help: ArgumentHelp("json or json.reliable.", valueName: "p"))
    var protocolName: String = "json.reliable"

    @Flag(help: "Print events as JSON lines.")
    var json = false

    @Option(help: ArgumentHelp("Seconds to wait for the connection and for each ack.", valueName: "seconds"))
    var timeout: Double = 30

    @Option(name: .customLong("reconnect-attempts"),
            help: ArgumentHelp("New connection attempts after the connection is lost for good, before exiting 4 (-1: no limit).", valueName: "n"))
    var reconnectAttempts: Int = 3

    @Option(name: .customLong("log-level"), help: ArgumentHelp("The client's log level on stderr (trace … critical).", valueName: "level"))
    var logLevel: String = "error"

    static let environmentKey = "WEBPUBSUB_CONNECTION_STRING"

    var effectiveConnectionString: String? {
        connectionString ?? (url == nil ? ProcessInfo.processInfo.environment[Self.environmentKey] : nil)
    }

    mutating func validate() throws {
        guard WebPubSubProtocol(cliName: protocolName) != nil else {
            throw ValidationError("--protocol must be json or json.reliable, got '\(protocolName)'.")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'.") }
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be positive.") }
        if let url {
            guard connectionString == nil else { throw ValidationError("Give --url or --connection-string, not both.") }
            guard hub == nil, userID == nil, role.isEmpty else {
                throw ValidationError("--hub, --user-id and --role go with --connection-string, not --url.")
            }
            guard let u = URL(string: url), ["ws", "wss"].contains(u.scheme?.lowercased() ?? ""), u.host != nil else {
                throw ValidationError("--url must be a ws:// or wss:// URL.")
            }
        } else {
            guard effectiveConnectionString != nil else {
                throw ValidationError("Give --url, or --connection-string (or \(Self.environmentKey)) with --hub.")
            }
            guard hub != nil else { throw ValidationError("--connection-string needs --hub.") }
            _ = try makeCredential()
        }
    }

    func makeCredential() throws -> WebPubSubClient.Credential {
        if let url, let u = URL(string: url) { return { u } }
        do {
            let credential = try WebPubSubClientCredential(
                connectionString: effectiveConnectionString ?? "", hub: hub ?? "", userID: userID, roles: role)
            return { credential.clientAccessURL() }
        } catch {
            throw ValidationError(Redaction.redact(error.message))
        }
    }

    func makeClient(_ output: Output) throws -> WebPubSubClient {
        let level = Logger.Level(rawValue: logLevel) ?? .error
        var options = WebPubSubClientOptions()
        options.protocolType = WebPubSubProtocol(cliName: protocolName) ?? .jsonReliable
        options.startTimeout = timeout
        options.ackTimeout = timeout
        options.reconnectRetryPolicy.maxRetries = reconnectAttempts < 0 ? .max : reconnectAttempts
        options.logger = Logger(label: "webpubsub") { label in RedactingStderrLogHandler(logLevel: level, label: label) }
        options.logger.logLevel = level
        options.userAgent = "webpubsub-cli"
        options.callbackQueue = output.queue
        return WebPubSubClient(credential: try makeCredential(), options: options)
    }
}

/// What `--data-type` may be.
enum DataTypeOption: String, ExpressibleByArgument, CaseIterable {
    case text, json

    func content(_ s: String) -> MessageContent { self == .json ? .json(s) : .text(s) }
}

extension WebPubSubProtocol {
    init?(cliName: String) {
        switch cliName.lowercased() {
        case "json", WebPubSubProtocol.json.rawValue: self = .json
        case "json.reliable", "reliable", WebPubSubProtocol.jsonReliable.rawValue: self = .jsonReliable
        default: return nil
        }
    }
}

// MARK: connect

struct Connect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect, join groups, print every event, and send each line of stdin (the default).",
        discussion: """
            Each non-empty stdin line is published to the first --group (or sent as event --event). \
            The command ends at the end of stdin, on SIGINT or SIGTERM, or once --count messages \
            arrived. With --count the end of stdin does not end it; with --listen, or with neither \
            --group nor --event, stdin is not read.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("A group to join (repeatable); stdin lines go to the first.", valueName: "g"))
    var group: [String] = []

    @Option(help: ArgumentHelp("Send stdin lines as this event instead of to a group.", valueName: "name"))
    var event: String?

    @Option(name: .customLong("data-type"), help: "How stdin lines are sent: text or json.")
    var dataType: DataTypeOption = .text

    @Flag(name: .customLong("no-echo"), help: "Do not deliver this client's own group messages back to it.")
    var noEcho = false

    @Flag(help: "Do not read stdin; only print events.")
    var listen = false

    @Option(help: ArgumentHelp("Exit 0 once this many group or server messages arrived.", valueName: "n"))
    var count: Int?

    mutating func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1.") }
    }

    func run() throws {
        let output = Output(json: connection.json)
        let client = try connection.makeClient(output)
        let session = Session()
        client.subscribe(.connected) {
            session.markRunning()
            output.connected($0)
        }
        client.subscribe(.disconnected) { output.disconnected($0) }
        client.subscribe(.rejoinGroupFailed) { output.rejoinFailed($0) }
        client.subscribe(.stopped) { _ in
            output.stopped()
            session.finish(.connectionLost, "the connection was lost and could not be re-established")
        }
        let received = ReceivedCounter(limit: count) { session.finish(.ok) }
        client.subscribe(.groupMessage) { output.groupMessage($0); received.increment() }
        client.subscribe(.serverMessage) { output.serverMessage($0); received.increment() }
        session.onSignal()

        do {
            try client.open()
        } catch {
            output.error("could not connect: \(error.message)")
            throw Exit.connectFailed.code
        }
        for g in group {
            do {
                output.ack("joinGroup", target: g, try client.joinGroup(g))
            } catch {
                output.error("could not join group \(g): \(Self.describe(error))")
                client.close()
                output.drain()
                throw Exit.operationFailed.code
            }
        }
        // Without a group or an event, stdin lines have nowhere to go: listen only.
        if let target = event.map(Target.event) ?? group.first.map(Target.group), !listen {
            let keepGoingAtEnd = count != nil
            Thread.detachNewThread { [dataType, noEcho] in
                while let line = readLine(strippingNewline: true) {
                    if line.isEmpty { continue }
                    do {
                        switch target {
                        case .group(let g):
                            output.ack("sendToGroup", target: g, try client.sendToGroup(g, dataType.content(line), noEcho: noEcho))
                        case .event(let e):
                            output.ack("sendEvent", target: e, try client.sendEvent(e, dataType.content(line)))
                        }
                    } catch {
                        output.error("could not send: \(Self.describe(error))")
                        session.finish(.operationFailed)
                        return
                    }
                }
                if !keepGoingAtEnd { session.finish(.ok) }
            }
        }
        let (exit, message) = session.wait()
        if let message { output.error(message) }
        client.close()
        output.drain()
        if exit != .ok { throw exit.code }
    }

    enum Target: Sendable {
        case group(String), event(String)
    }

    static func describe(_ error: any Error) -> String {
        guard let error = error as? WebPubSubError else { return "\(error)" }
        var s = error.message
        if let detail = error.errorMessage, !s.contains(detail) { s += ": " + detail }
        if let ackID = error.ackID { s += " (ackId \(ackID))" }
        return s
    }
}

// MARK: send

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect, send a message to a group or as an event, wait for the ack, and exit.",
        discussion: """
            The TEXT arguments, joined by spaces, make one message; without them each non-empty stdin \
            line is one message. With --json an ack line is printed for each message.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("The group to publish to.", valueName: "g"))
    var group: String?

    @Option(help: ArgumentHelp("Send as this event (to the service's event handler) instead.", valueName: "name"))
    var event: String?

    @Option(name: .customLong("data-type"), help: "text or json.")
    var dataType: DataTypeOption = .text

    @Flag(name: .customLong("no-echo"), help: "Do not deliver the message back to this connection.")
    var noEcho = false

    @Flag(name: .customLong("fire-and-forget"), help: "Send without an ack id and do not wait for an ack.")
    var fireAndForget = false

    @Argument(help: "The message (the words are joined by spaces); none: read stdin lines.")
    var text: [String] = []

    mutating func validate() throws {
        guard (group == nil) != (event == nil) else { throw ValidationError("Give exactly one of --group and --event.") }
    }

    func run() throws {
        let output = Output(json: connection.json)
        let client = try connection.makeClient(output)
        do {
            try client.open()
        } catch {
            output.error("could not connect: \(error.message)")
            throw Exit.connectFailed.code
        }
        defer {
            client.close()
            output.drain()
        }
        func send(_ message: String) throws(WebPubSubError) {
            let content = dataType.content(message)
            if let group {
                output.ack("sendToGroup", target: group,
                           try client.sendToGroup(group, content, noEcho: noEcho, fireAndForget: fireAndForget))
            } else if let event {
                output.ack("sendEvent", target: event, try client.sendEvent(event, content, fireAndForget: fireAndForget))
            }
        }
        do {
            if !text.isEmpty {
                try send(text.joined(separator: " "))
            } else {
                while let line = readLine(strippingNewline: true) {
                    if !line.isEmpty { try send(line) }
                }
            }
        } catch {
            output.error("could not send: \(Connect.describe(error))")
            throw Exit.operationFailed.code
        }
    }
}

// MARK: Coordination

/// The first reason to end wins; `wait()` returns it (thread-safe).
final class Session: @unchecked Sendable {  // `state` guarded by `condition`
    private let condition = NSCondition()
    private var state: (Exit, String?)?
    private var signalSources: [any DispatchSourceSignal] = []  // guarded by `condition`

    func finish(_ exit: Exit, _ message: String? = nil) {
        condition.lock()
        if state == nil { state = (exit, message) }
        condition.broadcast()
        condition.unlock()
    }

    func wait() -> (Exit, String?) {
        condition.lock()
        defer { condition.unlock() }
        while state == nil { condition.wait() }
        return state!
    }

    /// Set once the client is connected, from the `connected` callback, before that event is
    /// printed (guarded by `condition`): a signal after the `* connected` line always ends cleanly.
    private var running = false

    /// From now on a signal ends the session cleanly instead of exiting at once.
    func markRunning() { condition.withLock { running = true } }

    /// SIGINT and SIGTERM end a running session with 0 (a clean close first, after the groups of
    /// the command line were joined); before the client is connected, they exit at once with 128 +
    /// the signal number.
    func onSignal() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in
                guard let self else { return }
                if self.condition.withLock({ self.running }) {
                    self.finish(.ok)
                } else {
                    exit(128 + sig)
                }
            }
            source.resume()
            condition.withLock { signalSources.append(source) }
        }
    }
}

/// Counts received messages and calls `reached` once when `limit` is hit (thread-safe).
final class ReceivedCounter: @unchecked Sendable {  // `count` guarded by `lock`
    private let lock = NSLock()
    private var count = 0
    private let limit: Int?
    private let reached: @Sendable () -> Void

    init(limit: Int?, reached: @escaping @Sendable () -> Void) {
        self.limit = limit
        self.reached = reached
    }

    func increment() {
        let hit = lock.withLock { () -> Bool in
            count += 1
            return count == limit
        }
        if hit { reached() }
    }
}
