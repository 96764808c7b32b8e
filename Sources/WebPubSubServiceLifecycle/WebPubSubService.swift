#if ServiceLifecycle
import ServiceLifecycle
import WebPubSub

/// A ``WebPubSubClient`` as a swift-service-lifecycle `Service`: ``run()`` opens the client, keeps it
/// up until the service group shuts down gracefully (or the task is cancelled), then closes it.
///
/// ```swift
/// let client = WebPubSubClient(credential: credential)
/// let group = ServiceGroup(services: [WebPubSubService(client: client)],
///                          gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
///
/// If the client stops by itself (a finite reconnect policy ran out), ``run()`` closes it and throws
/// ``WebPubSubServiceError``, so the group learns that its service ended.
public struct WebPubSubService: Service {
    /// The client this service runs.
    public let client: WebPubSubClient

    /// Wraps `client`; it must be stopped (never opened, or closed) when ``run()`` starts.
    public init(client: WebPubSubClient) {
        self.client = client
    }

    /// Opens the client, waits for graceful shutdown or cancellation, then closes the client.
    /// - Throws: the client's `open()` error; ``WebPubSubServiceError`` when the client stopped by itself.
    public func run() async throws {
        let client = self.client
        // Subscribed before opening, so no stop is missed.
        let stopped = client.events(.stopped).makeAsyncIterator()
        try await client.open()
        // Graceful shutdown cancels the wait (as postgres-nio's PostgresClient does).
        let stoppedByItself = await cancelWhenGracefulShutdown {
            var iterator = stopped
            return await iterator.next() != nil
        }
        await client.close()
        if stoppedByItself { throw WebPubSubServiceError(message: "the client stopped by itself (its reconnect policy ran out)") }
    }
}

/// The client of a ``WebPubSubService`` stopped without a graceful shutdown.
public struct WebPubSubServiceError: Error, Sendable, CustomStringConvertible {
    /// Why.
    public let message: String
    /// The message.
    public var description: String { message }
}
#else
#error("WebPubSubServiceLifecycle needs the package trait \"ServiceLifecycle\" (on by default): depend on swift-webpubsub with traits: [\"ServiceLifecycle\"]")
#endif
