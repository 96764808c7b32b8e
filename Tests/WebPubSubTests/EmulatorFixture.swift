import Dispatch
import Foundation
import Logging
import TestSupport
import WebPubSubEmulator

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@testable import WebPubSub

/// One in-process emulator on a free loopback port, stopped when the fixture goes away.
final class EmulatorFixture: @unchecked Sendable {  // immutable after init; the emulator is thread-safe
    let emulator: WebPubSubEmulator
    let hub: String
    /// The Python upstream event handler (`Tests/Peers/upstream_echo.py`), when asked for.
    let upstream: PeerProcess?

    /// - Parameters:
    ///   - upstream: also start an upstream event handler: user event `echo` answers with
    ///     the request body (a server message back to the caller); other events get 204.
    ///   - tls: also listen with TLS (`TestCA`'s certificate of that name, free port): ``url(userID:roles:groups:)``
    ///     is then `wss://`; hooks and REST calls from Swift still go to the plain listener.
    init(hub: String = "hub", upstream: Bool = false, tls: String? = nil) throws {
        var configuration = WebPubSubEmulator.Configuration()
        if let tls {
            let ca = try TestCA.shared.get()
            configuration.tls = .init(certificateFile: ca.cert(tls), privateKeyFile: ca.key(tls), port: 0)
        }
        if upstream {
            let peer = try PeerProcess.python("upstream_echo.py")
            let port = try peer.value(after: "LISTENING ", timeout: 15)
            configuration.eventHandlers = [
                WebPubSubEmulator.EventHandler(hub: "*", urlTemplate: "http://127.0.0.1:\(port)/{hub}/{event}", systemEvents: [])
            ]
            self.upstream = peer
        } else {
            self.upstream = nil
        }
        configuration.port = 0
        configuration.threads = 1
        var logger = Logger(label: "WebPubSubEmulator.test")
        logger.logLevel = ProcessInfo.processInfo.environment["WPS_EMU_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? ProcessInfo.processInfo.environment["WPS_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        configuration.logger = logger
        emulator = WebPubSubEmulator(configuration: configuration)
        self.hub = hub
        try emulator.start()
    }

    deinit {
        emulator.stop()
        upstream?.stop()
    }

    func stop() { emulator.stop() }

    func url(userID: String? = nil, roles: [String] = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
             groups: [String] = []) -> URL {
        emulator.clientAccessURL(hub: hub, userID: userID, roles: roles, groups: groups)
    }

    /// Options for tests: short timeouts and delays, quiet logs.
    static func options(_ configure: (inout WebPubSubClientOptions) -> Void = { _ in }) -> WebPubSubClientOptions {
        var o = WebPubSubClientOptions()
        o.ackTimeout = 5
        o.startTimeout = 5
        o.messageRetryPolicy = RetryPolicy(maxRetries: 3, delay: 0.05, mode: .fixed)
        o.reconnectRetryPolicy = RetryPolicy(maxRetries: 3, delay: 0.1, mode: .fixed)
        o.recoveryTimeout = 5
        o.recoveryRetryInterval = 0.1
        o.sequenceAckInterval = 0.2
        o.logger = quietLogger
        configure(&o)
        return o
    }

    func client(userID: String? = nil, roles: [String] = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
                _ configure: (inout WebPubSubClientOptions) -> Void = { _ in }) -> WebPubSubClient {
        let url = self.url(userID: userID, roles: roles)
        return WebPubSubClient(url: url, options: Self.options(configure))
    }

    // MARK: HTTP

    struct HTTPResponse {
        var status: Int
        var body: String
    }

    func http(_ method: String, _ path: String, body: Data? = nil, contentType: String? = nil,
              bearer: Bool = false) throws -> HTTPResponse {
        let url = URL(string: (emulator.plainEndpoint ?? emulator.endpoint) + path)!
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = method
        request.httpBody = body
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        if bearer {
            var audience = url.absoluteString
            if let q = audience.firstIndex(of: "?") { audience = String(audience[..<q]) }
            let now = Int(Date().timeIntervalSince1970)
            let token = AccessTokenCodec(accessKey: emulator.configuration.accessKey)
                .sign(AccessTokenClaims(audience: audience, expires: now + 3600, issuedAt: now))
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        }
        let box = Waiter<Result<HTTPResponse, any Error>>()
        let task = URLSession.shared.dataTask(with: request) { data, response, error in
            if let error { box.fulfill(.failure(error)); return }
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            box.fulfill(.success(HTTPResponse(status: status, body: String(decoding: data ?? Data(), as: UTF8.self))))
        }
        task.resume()
        guard let result = box.wait(timeout: 15) else { throw FixtureError("HTTP \(method) \(path) timed out") }
        return try result.get()
    }

    /// Runs a `/_emulator/connections/{id}/{hook}` test hook.
    func hook(_ connectionID: String, _ name: String, query: String = "") throws {
        let r = try http("POST", "/_emulator/connections/\(connectionID)/\(name)\(query.isEmpty ? "" : "?" + query)")
        guard r.status == 200 else { throw FixtureError("hook \(name) answered \(r.status): \(r.body)") }
    }

    func stats() throws -> [String: Any] {
        let r = try http("GET", "/_emulator/stats")
        return (try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any]) ?? [:]
    }

    func stat(_ name: String) throws -> Int { (try stats()[name] as? Int) ?? -1 }

    /// The groups the emulator has `connectionID` in (from `/_emulator/connections`), sorted.
    func groups(of connectionID: String) throws -> [String] {
        let r = try http("GET", "/_emulator/connections")
        let list = (try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [[String: Any]]) ?? []
        let entry = list.first { $0["connectionId"] as? String == connectionID }
        return ((entry?["groups"] as? [String]) ?? []).sorted()
    }

    /// A data-plane REST call, signed with the access key.
    @discardableResult
    func rest(_ method: String, _ path: String, body: String? = nil, contentType: String = "text/plain") throws -> HTTPResponse {
        let separator = path.contains("?") ? "&" : "?"
        return try http(method, "/api/hubs/\(hub)\(path)\(separator)api-version=2024-12-01",
                        body: body.map { Data($0.utf8) }, contentType: body == nil ? nil : contentType, bearer: true)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
