#if Metrics
import Metrics
import WebPubSub

/// Records a client's activity as swift-metrics counters and timers.
///
/// ```swift
/// var options = WebPubSubClientOptions()
/// options.instrumentation = WebPubSubMetrics(dimensions: [("service", "chat")])
/// ```
///
/// The metrics, each with the given dimensions plus those listed (Docs/Integrations.md):
///
/// | label | kind | dimensions |
/// |---|---|---|
/// | `webpubsub_client_connections_opened_total` | counter | `kind`: `new`, `recovery` |
/// | `webpubsub_client_reconnects_total` | counter | |
/// | `webpubsub_client_recoveries_total` | counter | |
/// | `webpubsub_client_messages_sent_total` | counter | `operation` |
/// | `webpubsub_client_messages_received_total` | counter | `source`: `group`, `server` |
/// | `webpubsub_client_retries_total` | counter | `operation` |
/// | `webpubsub_client_operation_duration_seconds` | timer | `operation`, `outcome`: `success`, `failure` |
///
/// `operation` is one of `joinGroup`, `leaveGroup`, `rejoinGroup`, `sendToGroup`, `sendEvent`,
/// `invokeEvent`. The duration runs from the call to the outcome: for acked operations, the ack
/// latency including retries.
public struct WebPubSubMetrics: WebPubSubInstrumentation {
    private let connectionsNew: Counter
    private let connectionsRecovered: Counter
    private let reconnects: Counter
    private let recoveries: Counter
    private let sent: [WebPubSubOperationKind: Counter]
    private let retries: [WebPubSubOperationKind: Counter]
    private let received: [WebPubSubMessageSource: Counter]
    private let succeeded: [WebPubSubOperationKind: Metrics.Timer]
    private let failed: [WebPubSubOperationKind: Metrics.Timer]

    /// Creates the metrics up front (nothing is allocated per event).
    /// - Parameters:
    ///   - prefix: the start of every label; default `webpubsub_client`.
    ///   - dimensions: added to every metric, e.g. `[("service", "chat")]`.
    ///   - factory: the metrics backend; default the bootstrapped `MetricsSystem.factory`.
    public init(prefix: String = "webpubsub_client", dimensions: [(String, String)] = [],
                factory: any MetricsFactory = MetricsSystem.factory) {
        func counter(_ name: String, _ extra: [(String, String)] = []) -> Counter {
            Counter(label: "\(prefix)_\(name)", dimensions: dimensions + extra, factory: factory)
        }
        func timer(_ kind: WebPubSubOperationKind, _ outcome: String) -> Metrics.Timer {
            Metrics.Timer(label: "\(prefix)_operation_duration_seconds",
                          dimensions: dimensions + [("operation", kind.rawValue), ("outcome", outcome)],
                          preferredDisplayUnit: .seconds, factory: factory)
        }
        connectionsNew = counter("connections_opened_total", [("kind", "new")])
        connectionsRecovered = counter("connections_opened_total", [("kind", "recovery")])
        reconnects = counter("reconnects_total")
        recoveries = counter("recoveries_total")
        var sent: [WebPubSubOperationKind: Counter] = [:]
        var retries: [WebPubSubOperationKind: Counter] = [:]
        var succeeded: [WebPubSubOperationKind: Metrics.Timer] = [:]
        var failed: [WebPubSubOperationKind: Metrics.Timer] = [:]
        for kind in WebPubSubOperationKind.allCases {
            sent[kind] = counter("messages_sent_total", [("operation", kind.rawValue)])
            retries[kind] = counter("retries_total", [("operation", kind.rawValue)])
            succeeded[kind] = timer(kind, "success")
            failed[kind] = timer(kind, "failure")
        }
        var received: [WebPubSubMessageSource: Counter] = [:]
        for source in WebPubSubMessageSource.allCases {
            received[source] = counter("messages_received_total", [("source", source.rawValue)])
        }
        (self.sent, self.retries, self.succeeded, self.failed, self.received) = (sent, retries, succeeded, failed, received)
    }

    /// Records one event.
    public func record(_ event: WebPubSubInstrumentationEvent) {
        switch event {
        case .connectionOpened(let recovery): (recovery ? connectionsRecovered : connectionsNew).increment()
        case .reconnecting: reconnects.increment()
        case .recovering: recoveries.increment()
        case .messageSent(let kind): sent[kind]?.increment()
        case .messageReceived(let source): received[source]?.increment()
        case .retried(let kind): retries[kind]?.increment()
        case .finished(let kind, let latency, let failure):
            let nanoseconds = Int64(min(max(0, latency), 1e9) * 1e9)
            (failure == nil ? succeeded : failed)[kind]?.recordNanoseconds(nanoseconds)
        }
    }
}
#else
#error("WebPubSubMetrics needs the package trait \"Metrics\" (on by default): depend on swift-webpubsub with traits: [\"Metrics\"]")
#endif
