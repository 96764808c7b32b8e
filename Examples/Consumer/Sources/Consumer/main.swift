// Creates a client as a daemon would, without connecting: this package exists to show which
// packages a consumer of the `WebPubSub` product resolves and builds.
import Foundation
import WebPubSub

let connectionString = ProcessInfo.processInfo.environment["WEBPUBSUB_CONNECTION_STRING"]
    ?? "Endpoint=http://127.0.0.1:8080;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;"
do {
    let credential = try WebPubSubClientCredential(connectionString: connectionString, hub: "chat", userID: "consumer")
    let client = WebPubSubClient(credential: credential)
    print("made a client in state \(client.state) for \(credential.baseURL)")
} catch {
    print("bad connection string: \(error)")
    exit(1)
}
