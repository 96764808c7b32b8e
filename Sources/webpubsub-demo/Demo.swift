//===----------------------------------------------------------------------===//
// webpubsub-demo: the main job of `make demo`.
//
// Starts the local emulator as a real server process, connects three clients
// (alice, bob, carol) to one hub, has them exchange text, json and binary
// messages in a group, drops carol's TCP connection abruptly in the middle of
// the stream through the emulator's test hook, and shows that she recovers
// the same connection without losing, duplicating or reordering a message.
// Prints a transcript and a summary; exits 0 only when nothing was lost.
//===----------------------------------------------------------------------===//
import ArgumentParser
import Dispatch
import EmulatorLauncher
import Foundation
import Logging
import WebPubSub

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@main
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpubsub-demo",
        abstract: "Runs the local emulator and a real client session against it, with an abrupt drop mid-stream.")

    @Option(help: "Path of the webpubsub-emulator executable (default: next to this one).")
    var emulator: String?

    @Option(help: "Messages each sender publishes.")
    var messages = 24

    @Option(help: "Milliseconds between two messages of one sender.")
    var interval = 40

    @Flag(help: "Print every received message, not only a sample.")
    var verbose = false

    @Option(help: "Chaos run: publish for this many seconds while faults hit random clients (make chaos, make soak).")
    var chaos: Double?

    @Option(help: "Resource check: this many client open/join/send/close cycles; descriptors, threads and resident memory of both processes before and after (make soak-resources).")
    var cycles: Int?

    func run() throws {
        let emulatorPath = emulator ?? EmulatorProcess.besideThisExecutable
        if let cycles {
            if !(try ResourceCycles.run(emulatorPath: emulatorPath, cycles: cycles)) { throw ExitCode(1) }
            return
        }
        let session = try DemoSession(emulatorPath: emulatorPath, messagesPerSender: messages,
                                      interval: .milliseconds(interval), verbose: verbose, chaos: chaos)
        defer { session.shutdown() }
        let ok = try session.run()
        if !ok { throw ExitCode(1) }
    }
}
