import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Delivers CloudEvents to the configured event handlers (HTTP binary mode) with abuse protection and signatures.
///
/// `Sendable`: immutable apart from `validated`, which is a NIOLockedValueBox. `state` is unowned: the state owns
/// this object and outlives it.
final class Upstream: Sendable {
    let handlers: [WebPubSubEmulator.EventHandler]
    let client: MiniHTTPClient
    let accessKey: [UInt8]
    let origin: String
    let timeout: TimeAmount
    let logger: Logger
    unowned let state: ServiceState
    private let validated = NIOLockedValueBox<[String: EventLoopFuture<Void>]>([:])

    init(handlers: [WebPubSubEmulator.EventHandler], group: any EventLoopGroup, accessKey: String, origin: String,
         timeout: TimeInterval, logger: Logger, state: ServiceState) {
        self.handlers = handlers
        self.client = MiniHTTPClient(group: group)
        self.accessKey = Array(accessKey.utf8)
        self.origin = origin
        self.timeout = .clamped(seconds: timeout)
        self.logger = logger
        self.state = state
    }

    func handler(hub: String, userEvent: String) -> WebPubSubEmulator.EventHandler? {
        handlers.first { $0.handles(hub: hub) && $0.handles(userEvent: userEvent) }
    }

    func handler(hub: String, systemEvent: String) -> WebPubSubEmulator.EventHandler? {
        handlers.first { $0.handles(hub: hub) && $0.systemEvents.contains(systemEvent) }
    }

    static func url(_ template: String, hub: String, event: String) -> String {
        template.replacingOccurrences(of: "{hub}", with: hub).replacingOccurrences(of: "{event}", with: event)
    }

    /// Abuse protection: OPTIONS (then GET on 404) with `WebHook-Request-Origin`; needs `WebHook-Allowed-Origin`.
    /// Success is cached per URL; failure is retried on the next event.
    func validate(_ url: String) -> EventLoopFuture<Void> {
        let loop = self.client.group.next()
        let (future, promise): (EventLoopFuture<Void>?, EventLoopPromise<Void>?) = validated.withLockedValue { cache in
            if let f = cache[url] { return (f, nil) }
            let promise = loop.makePromise(of: Void.self)
            cache[url] = promise.futureResult
            return (nil, promise)
        }
        guard let promise else { return future! }
        let headers = [("WebHook-Request-Origin", origin), ("ce-awpsversion", "1.0")]
        let client = self.client, timeout = self.timeout, origin = self.origin
        let attempt = client.request(method: .OPTIONS, url: url, headers: headers, body: [], timeout: timeout)
            .flatMap { r -> EventLoopFuture<MiniHTTPClient.Response> in
                r.status == 404 ? client.request(method: .GET, url: url, headers: headers, body: [], timeout: timeout)
                    : client.group.next().makeSucceededFuture(r)
            }
            .flatMapThrowing { r -> Void in
                let allowed = r.headers["WebHook-Allowed-Origin"].flatMap { $0.split(separator: ",") }
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                guard (200..<300).contains(r.status), allowed.contains("*") || allowed.contains(origin) else {
                    throw MiniHTTPClient.ClientError(description: "abuse protection failed (status \(r.status))")
                }
            }
        attempt.whenFailure { error in
            self.logger.warning("event handler validation failed", metadata: ["url": "\(url)", "error": "\(error)"])
            self.validated.withLockedValue { $0[url] = nil }
        }
        attempt.cascade(to: promise)
        return promise.futureResult
    }

    /// Sends one CloudEvent after validation. The future fails on transport errors; non-2xx are returned.
    func post(template: String, hub: String, eventName: String, type: String, connectionID: String, userID: String?,
              subprotocol: String?, state: String?, ceID: Int, contentType: String, body: [UInt8])
        -> EventLoopFuture<MiniHTTPClient.Response>
    {
        let url = Self.url(template, hub: hub, event: eventName)
        let validationURL = Self.url(template, hub: hub, event: "validate")
        var headers: [(String, String)] = [
            ("Content-Type", contentType),
            ("ce-specversion", "1.0"),
            ("ce-type", type),
            ("ce-source", "/hubs/\(hub)/client/\(connectionID)"),
            ("ce-id", String(ceID)),
            ("ce-time", ISO8601DateFormatter().string(from: Date())),
            ("ce-awpsversion", "1.0"),
            ("ce-hub", hub),
            ("ce-connectionId", connectionID),
            ("ce-eventName", eventName),
            ("ce-signature", "sha256=" + Crypto.hex(Crypto.hmacSHA256(key: accessKey, data: Array(connectionID.utf8)))),
            ("WebHook-Request-Origin", origin),
        ]
        if let userID { headers.append(("ce-userId", userID)) }
        if let subprotocol { headers.append(("ce-subprotocol", subprotocol)) }
        if let state { headers.append(("ce-connectionState", state)) }
        countUpstreamRequest()
        let client = self.client, timeout = self.timeout, finalHeaders = headers
        return validate(validationURL).flatMap {
            client.request(method: .POST, url: url, headers: finalHeaders, body: body, timeout: timeout)
        }
    }

    private func countUpstreamRequest() {
        state.lock.withLock { state.stats.upstreamRequests += 1 }
    }

    /// The outcome of a `connect` event.
    enum ConnectOutcome: Sendable {
        case accept(userID: String??, roles: [String]?, groups: [String]?, subprotocol: String?, state: String?)
        case reject(status: Int, body: String)
    }

    /// Blocking `connect` event. No handler → accept with the token's values.
    func connect(hub: String, connectionID: String, userID: String?, claims: [String: [String]],
                 query: [String: [String]], headers: [String: [String]], subprotocols: [String],
                 on loop: any EventLoop) -> EventLoopFuture<ConnectOutcome> {
        guard let h = handler(hub: hub, systemEvent: "connect") else {
            return loop.makeSucceededFuture(.accept(userID: .none, roles: nil, groups: nil, subprotocol: nil, state: nil))
        }
        let object: [String: Any] = ["claims": claims, "query": query, "headers": headers, "subprotocols": subprotocols,
                                     "clientCertificates": [Any]()]
        let body = (try? JSONSerialization.data(withJSONObject: object)).map { [UInt8]($0) } ?? Array("{}".utf8)
        return post(template: h.urlTemplate, hub: hub, eventName: "connect", type: "azure.webpubsub.sys.connect",
                    connectionID: connectionID, userID: userID, subprotocol: nil, state: nil, ceID: 0,
                    contentType: "application/json", body: body)
            .hop(to: loop)
            .map { r -> ConnectOutcome in
                let state = r.headers.first(name: "ce-connectionState")
                if (400..<500).contains(r.status) {
                    return .reject(status: r.status, body: String(decoding: r.body, as: UTF8.self))
                }
                guard (200..<300).contains(r.status) else { return .reject(status: 500, body: "Internal server error") }
                let trimmed = String(decoding: r.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.isEmpty || trimmed == "null" {
                    return .accept(userID: .none, roles: nil, groups: nil, subprotocol: nil, state: state)
                }
                guard let o = (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] else {
                    return .reject(status: 500, body: "Internal server error")
                }
                let userID: String?? = o["userId"] is String ? .some(o["userId"] as? String) : .none
                let roles = (o["roles"] as? [Any]).map { $0.compactMap { $0 as? String } }
                let groups = (o["groups"] as? [Any]).map { $0.compactMap { $0 as? String } }
                if let sp = o["subprotocol"], !(sp is NSNull) {
                    guard let s = sp as? String, !s.trimmingCharacters(in: .whitespaces).isEmpty else {
                        return .reject(status: 500, body: "Internal server error")
                    }
                    return .accept(userID: userID, roles: roles, groups: groups, subprotocol: s, state: state)
                }
                return .accept(userID: userID, roles: roles, groups: groups, subprotocol: nil, state: state)
            }
            .flatMapErrorThrowing { error in
                self.logger.warning("connect event failed", metadata: ["error": "\(error)"])
                return .reject(status: 500, body: "Internal server error")
            }
    }

    /// The session's next CloudEvent id and its connection state, read under the state lock.
    private func nextCloudEvent(_ s: Session) -> (id: Int, connectionState: String?) {
        state.lock.withLock {
            let id = s.cloudEventCounter
            s.cloudEventCounter += 1
            return (id, s.connectionState)
        }
    }

    /// Non-blocking system events (`connected`, `disconnected`): failures are only logged.
    func systemEvent(_ name: String, session s: Session, body: [UInt8]) {
        guard let h = handler(hub: s.hub, systemEvent: name) else { return }
        let (ceID, connState) = nextCloudEvent(s)
        post(template: h.urlTemplate, hub: s.hub, eventName: name, type: "azure.webpubsub.sys.\(name)",
             connectionID: s.id, userID: s.userID, subprotocol: s.kind == .raw ? nil : s.kind.rawValue,
             state: connState, ceID: ceID, contentType: "application/json", body: body)
            .whenComplete { result in
                switch result {
                case .success(let r) where (200..<300).contains(r.status): break
                case .success(let r):
                    self.logger.warning("system event answered \(r.status)", metadata: ["event": "\(name)"])
                case .failure(let e):
                    self.logger.warning("system event failed", metadata: ["event": "\(name)", "error": "\(e)"])
                }
            }
    }

    /// Blocking user event: the response body comes back to the client before the ack.
    func userEvent(_ name: String, session s: Session, data: MessageData, ackID: UInt64?, invocationID: String? = nil) {
        guard let h = handler(hub: s.hub, userEvent: name) else { return }
        let state = self.state
        let (ceID, connState) = nextCloudEvent(s)
        post(template: h.urlTemplate, hub: s.hub, eventName: name, type: "azure.webpubsub.user.\(name)",
             connectionID: s.id, userID: s.userID, subprotocol: s.kind == .raw ? nil : s.kind.rawValue,
             state: connState, ceID: ceID, contentType: data.contentType, body: data.decodedBytes)
            .whenComplete { result in
                switch result {
                case .success(let r) where (200..<300).contains(r.status):
                    let newState = r.headers.first(name: "ce-connectionState")
                    let response = r.body.isEmpty ? nil
                        : MessageData.fromHTTP(body: r.body, contentType: r.headers.first(name: "Content-Type"),
                                               defaultType: .binary)
                    if !r.body.isEmpty && response == nil {
                        self.logger.warning("event handler answered invalid JSON", metadata: ["event": "\(name)"])
                        state.eventCompleted(s, ackID: ackID, response: nil, state: nil, failed: true, invocationID: invocationID)
                    } else {
                        state.eventCompleted(s, ackID: ackID, response: response, state: newState, failed: false,
                                             invocationID: invocationID)
                    }
                case .success(let r):
                    self.logger.warning("event handler answered \(r.status)", metadata: ["event": "\(name)"])
                    state.eventCompleted(s, ackID: ackID, response: nil, state: nil, failed: true, invocationID: invocationID)
                case .failure(let e):
                    self.logger.warning("event handler failed", metadata: ["event": "\(name)", "error": "\(e)"])
                    state.eventCompleted(s, ackID: ackID, response: nil, state: nil, failed: true, invocationID: invocationID)
                }
            }
    }
}
