// The Docs/Integrations.md example: a daemon that runs a WebPubSubClient under a ServiceGroup and
// stops gracefully on SIGTERM. Usage: webpubsub-lifecycle-example CONNECTION_STRING HUB
// (Tests/WebPubSubServiceLifecycleTests runs it against the emulator and sends it SIGTERM).
import Foundation
import Logging
import ServiceLifecycle
import WebPubSub
import WebPubSubServiceLifecycle

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: webpubsub-lifecycle-example CONNECTION_STRING HUB\n".utf8))
    exit(64)
}
let connectionString = arguments[1], hub = arguments[2]
/// Unbuffered lines on stdout (the test reads them through a pipe).
@Sendable func print(_ items: String...) {
    FileHandle.standardOutput.write(Data((items.joined(separator: " ") + "\n").utf8))
}

// snippet: lifecycle
var logger = Logger(label: "chat-daemon")
logger.logLevel = .notice
let credential = try WebPubSubClientCredential(connectionString: connectionString, hub: hub, userID: "daemon")
var options = WebPubSubClientOptions()
options.logger = logger
let client = WebPubSubClient(credential: credential, options: options)
client.subscribe(.connected) { event in print("connected", event.connectionID) }
client.subscribe(.stopped) { _ in print("stopped") }

let group = ServiceGroup(services: [WebPubSubService(client: client)],
                         gracefulShutdownSignals: [.sigterm], logger: logger)
try await group.run()  // returns after SIGTERM, once the client has closed
print("shut down")
// end snippet
