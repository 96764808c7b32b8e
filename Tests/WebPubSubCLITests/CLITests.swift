import EmulatorLauncher
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// The built `webpubsub` binary, end to end against a `webpubsub-emulator` process on loopback.
@Suite("webpubsub CLI against the emulator process", .timeLimit(.minutes(2)))
struct CLITests {
    static var binary: String { TestPaths.buildProducts.appendingPathComponent("webpubsub").path }
    static var emulatorBinary: String { TestPaths.buildProducts.appendingPathComponent("webpubsub-emulator").path }
    static let publisherRoles = ["--role", "webpubsub.joinLeaveGroup", "--role", "webpubsub.sendToGroup"]

    /// A listener that joins `room`, then `send` from arguments and from stdin; the listener prints both
    /// messages as JSON lines and exits 0 after the second (`--count 2`).
    @Test func sendReachesAListener() throws {
        let emulator = try EmulatorProcess(path: Self.emulatorBinary)
        defer { emulator.stop() }
        let cs = emulator.connectionString
        let listener = try PeerProcess(Self.binary, ["connect", "--connection-string", cs, "--hub", "chat", "--user-id", "alice",
                                                     "--group", "room", "--count", "2", "--json"] + Self.publisherRoles)
        defer { listener.stop() }
        try listener.waitForLine(containing: #""operation":"joinGroup""#, timeout: 30)

        let fromArguments = try CLIRun(Self.binary, ["send", "--connection-string", cs, "--hub", "chat", "--user-id", "bob",
                                                     "--role", "webpubsub.sendToGroup", "--group", "room", "hello", "world"])
        #expect(fromArguments.status == 0, "\(fromArguments)")
        #expect(fromArguments.stdout.isEmpty && fromArguments.stderr.isEmpty)

        // A fixed URL (minted by the emulator's own `token` command), JSON data from stdin, an ack line back.
        let url = try emulator.clientAccessURL(hub: "chat", user: "carol")
        let fromStdin = try CLIRun(Self.binary, ["send", "--url", url.absoluteString, "--group", "room", "--data-type", "json", "--json"],
                                   stdin: "\n{\"n\": 1}\n")
        #expect(fromStdin.status == 0, "\(fromStdin)")
        #expect(fromStdin.stdout == #"{"type":"ack","ackId":1,"isDuplicated":false,"operation":"sendToGroup","target":"room"}"# + "\n")

        #expect(listener.waitForExit(timeout: 30) == 0, "\(listener.output)")
        let lines = listener.output
        #expect(lines.first?.hasPrefix(#"{"type":"connected","connectionId":""#) == true && lines.first?.hasSuffix(#","userId":"alice"}"#) == true)
        #expect(lines.contains(#"{"type":"groupMessage","data":"hello world","dataType":"text","fromUserId":"bob","group":"room","sequenceId":1}"#))
        #expect(lines.contains(#"{"type":"groupMessage","data":{"n": 1},"dataType":"json","fromUserId":"carol","group":"room","sequenceId":2}"#))
        for line in lines { #expect(!line.contains("access_token") && !line.contains("eyJ"), "\(line)") }
    }

    /// `connect` sends each stdin line to the first group and prints (text) what comes back, as it is
    /// (message data is never redacted), then exits 0.
    @Test func connectSendsStdinLinesAndPrintsEvents() throws {
        let emulator = try EmulatorProcess(path: Self.emulatorBinary)
        defer { emulator.stop() }
        let run = try CLIRun(Self.binary, ["--connection-string", emulator.connectionString, "--hub", "chat", "--user-id", "dave",
                                           "--group", "room", "--group", "other", "--count", "2", "--protocol", "json"]
                             + Self.publisherRoles, stdin: "one\ntwo access_token=is data\n")
        #expect(run.status == 0, "\(run)")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("* connected connection=") == true && lines.first?.hasSuffix(" user=dave") == true)
        #expect(Array(lines.dropFirst().prefix(4)) == ["* joined room", "* joined other", "[room] dave: one", "[room] dave: two access_token=is data"], "\(run)")
        // Then only the close: disconnected and stopped.
        #expect(lines.dropFirst(5).allSatisfy { $0.hasPrefix("* disconnected connection=") || $0 == "* stopped" }, "\(run)")
    }

    @Test func aMalformedConnectionStringIsAUsageErrorThatNamesThePart() throws {
        let run = try CLIRun(Self.binary, ["send", "--connection-string", "Endpoint=http://127.0.0.1:1;Acesskey=TOPSECRET",
                                           "--hub", "chat", "--group", "g", "x"])
        #expect(run.status == 64, "\(run)")
        #expect(run.stderr.contains("AccessKey is missing") && run.stdout.isEmpty)
        #expect(!run.stderr.contains("TOPSECRET"))
    }

    /// A token signed with the wrong key: the upgrade is refused (401), exit 2, and the token is not printed.
    @Test func aRefusedConnectionExits2WithoutPrintingTheToken() throws {
        let emulator = try EmulatorProcess(path: Self.emulatorBinary)
        defer { emulator.stop() }
        let wrongKey = emulator.connectionString.replacingOccurrences(of: "AccessKey=A", with: "AccessKey=Z")
        let run = try CLIRun(Self.binary, ["send", "--connection-string", wrongKey, "--hub", "chat", "--group", "g", "x",
                                           "--log-level", "trace"])
        #expect(run.status == 2, "\(run)")
        #expect(run.stderr.contains("webpubsub: error: could not connect") && run.stderr.contains("401"), "\(run)")
        let secret = wrongKey.split(separator: ";").first { $0.hasPrefix("AccessKey=") }!.dropFirst("AccessKey=".count)
        for text in [run.stdout, run.stderr] {
            #expect(!text.contains(secret) && !text.contains("eyJ"), "\(text)")
            #expect(text.ranges(of: /access_token=(?!<redacted>)/).isEmpty, "\(text)")
        }
    }

    /// Operations the service refuses: exit 3, the service's error name on stderr.
    @Test func aRefusedOperationExits3() throws {
        let emulator = try EmulatorProcess(path: Self.emulatorBinary)
        defer { emulator.stop() }
        let cs = emulator.connectionString
        let send = try CLIRun(Self.binary, ["send", "--connection-string", cs, "--hub", "chat", "--group", "room", "x"])
        #expect(send.status == 3 && send.stderr.contains("Forbidden"), "\(send)")
        let join = try CLIRun(Self.binary, ["connect", "--connection-string", cs, "--hub", "chat", "--group", "room", "--listen"])
        #expect(join.status == 3 && join.stderr.contains("could not join group room") && join.stderr.contains("Forbidden"), "\(join)")
        // No event handler is configured: the service answers the event with an error.
        let event = try CLIRun(Self.binary, ["send", "--connection-string", cs, "--hub", "chat", "--event", "ping", "x"])
        #expect(event.status == 3 && event.stderr.contains("could not send"), "\(event)")
    }

    /// SIGTERM ends a listener with a clean close and exit 0.
    @Test func aListenerStopsOnSIGTERM() throws {
        let emulator = try EmulatorProcess(path: Self.emulatorBinary)
        defer { emulator.stop() }
        let listener = try PeerProcess(Self.binary, ["connect", "--connection-string", emulator.connectionString, "--hub", "chat",
                                                     "--listen"])
        defer { listener.stop() }
        try listener.waitForLine(containing: "* connected", timeout: 30)
        kill(listener.process.processIdentifier, SIGTERM)
        #expect(listener.waitForExit(timeout: 20) == 0, "\(listener.output)")
    }

    /// SIGINT while the upgrade hangs (a listener that never answers): exit 130 at once, not after the time-out.
    @Test func anInterruptBeforeTheConnectionIsUpExits130() throws {
        let server = try SilentListener()
        defer { server.close() }
        let client = try PeerProcess(Self.binary, ["connect", "--url", "ws://127.0.0.1:\(server.port)/client/hubs/chat?access_token=x",
                                                   "--listen", "--timeout", "600"])
        defer { client.stop() }
        // The client's TCP connection is waiting in the backlog: its upgrade will never be answered.
        #expect(server.waitForPendingConnection(timeout: 30))
        kill(client.process.processIdentifier, SIGINT)
        #expect(client.waitForExit(timeout: 60) == 130, "\(client.output)")
    }

    /// The service goes away (the emulator process stops): reconnect attempts fail, the client stops, exit 4.
    @Test func aConnectionLostForGoodExits4() throws {
        let emulator = try EmulatorProcess(path: Self.emulatorBinary)
        defer { emulator.stop() }
        let listener = try PeerProcess(Self.binary, ["connect", "--connection-string", emulator.connectionString, "--hub", "chat",
                                                     "--protocol", "json", "--listen", "--timeout", "5"])
        defer { listener.stop() }
        try listener.waitForLine(containing: "* connected", timeout: 30)
        emulator.stop()
        #expect(listener.waitForExit(timeout: 60) == 4, "\(listener.output)")
        #expect(listener.output.contains("* stopped"))
        #expect(listener.output.contains { $0.contains("webpubsub: error: the connection was lost") })
    }

    /// The README shows the real `--help` output.
    @Test func theREADMEShowsTheHelp() throws {
        let readme = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        for arguments in [["--help"], ["connect", "--help"], ["send", "--help"]] {
            let run = try CLIRun(Self.binary, arguments)
            #expect(run.status == 0)
            var help = run.stdout
            while help.hasSuffix("\n") { help.removeLast() }
            let shown = "```\n$ webpubsub \(arguments.joined(separator: " "))\n" + help + "\n```\n"
            #expect(readme.contains(shown), "README.md lacks the current output of webpubsub \(arguments.joined(separator: " "))")
        }
    }
}

/// Runs a command to its end (bounded): stdin from a string, stdout and stderr apart.
struct CLIRun: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    init(_ executable: String, _ arguments: [String], stdin: String = "", timeout: TimeInterval = 60) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["WEBPUBSUB_CONNECTION_STRING"] = nil
        environment["COLUMNS"] = nil
        process.environment = environment
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        try process.run()
        input.fileHandleForWriting.write(Data(stdin.utf8))
        try input.fileHandleForWriting.close()
        // Read both pipes to their end on their own threads (a full pipe would stall the child).
        let out = PipeReader(output.fileHandleForReading), err = PipeReader(errors.fileHandleForReading)
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            done.wait()
            throw CLITimeout(description: "\(arguments) did not end within \(timeout) s")
        }
        status = process.terminationStatus
        stdout = out.text()
        stderr = err.text()
    }

    var description: String { "status \(status)\nstdout:\n\(stdout)\nstderr:\n\(stderr)" }
}

struct CLITimeout: Error, CustomStringConvertible { var description: String }

/// Reads a pipe to its end on a thread of its own.
final class PipeReader: @unchecked Sendable {  // `data` is written once by the reading thread before `done` is signalled
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func text() -> String {
        done.wait()
        done.signal()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A loopback TCP listener that never accepts: connections complete in the kernel and then hear nothing.
final class SilentListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 8) == 0 else {
            Glibc.close(fd)
            throw CLITimeout(description: "could not listen on loopback")
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits until a connection is pending (the listening socket is readable).
    func waitForPendingConnection(timeout: TimeInterval) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, Int32(timeout * 1000)) == 1
    }

    func close() { Glibc.close(fd) }
}
