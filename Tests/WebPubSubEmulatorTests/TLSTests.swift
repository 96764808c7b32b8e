import Foundation
import Testing
import TestSupport

@testable import WebPubSubEmulator

/// The TLS listener and Entra ID mode, driven by the official Python service SDK
/// (`Tests/Peers/emulator_tls.py`) with a private CA made by `openssl` at test time (`TestCA`).
@Suite(.serialized, .timeLimit(.minutes(3))) struct TLSTests {
    /// An in-process emulator with a plain and a TLS listener (both on free ports), with the test CA's
    /// `cert` certificate.
    func withTLSEmulator<T>(cert: String = "good", entraID: WebPubSubEmulator.EntraIDMode = .off,
                            handshakeTimeout: TimeInterval = 10, recorder: LogCapture = LogCapture(),
                            _ body: (WebPubSubEmulator, TestCA) throws -> T) throws -> T {
        let ca = try TestCA.shared.get()
        return try withEmulator(recorder: recorder, configure: {
            $0.tls = .init(certificateFile: ca.cert(cert), privateKeyFile: ca.key(cert), port: 0)
            $0.tls?.handshakeTimeout = handshakeTimeout
            $0.entraID = entraID
        }) { try body($0, ca) }
    }

    func runTLSScenarios(_ emulator: WebPubSubEmulator, _ ca: TestCA, _ scenarios: [String],
                         environment: [String: String] = [:]) throws -> [String] {
        var args = [emulator.connectionString, ca.rootCert] + scenarios
        if let plain = emulator.plainEndpoint { args.append("--plain=\(plain)") }
        let peer = try PeerProcess.python("emulator_tls.py", args, environment: environment)
        defer { peer.stop() }
        guard peer.waitForExit(timeout: 120) != nil else {
            throw ScenarioTimeout(description: "scenarios \(scenarios) timed out; output:\n" + peer.output.joined(separator: "\n"))
        }
        return peer.output
    }

    @Test func listenersEndpointsAndMintedURLs() throws {
        try withTLSEmulator { emulator, _ in
            let tlsPort = try #require(emulator.tlsPort)
            #expect(tlsPort != emulator.port)
            #expect(emulator.endpoint == "https://127.0.0.1:\(tlsPort)")
            #expect(emulator.plainEndpoint == "http://127.0.0.1:\(emulator.port)")
            #expect(emulator.connectionString.hasPrefix("Endpoint=https://127.0.0.1:\(tlsPort);"))
            #expect(emulator.clientAccessURL(hub: "h").absoluteString.hasPrefix("wss://127.0.0.1:\(tlsPort)/client/hubs/h?access_token="))
            // The plain listener keeps serving (hooks from tools that cannot trust a private CA).
            #expect(try http("GET", emulator.plainEndpoint! + "/_emulator/stats").0 == 200)
        }
        // TLS only: one listener, on `port`.
        let ca = try TestCA.shared.get()
        var config = WebPubSubEmulator.Configuration(port: 0)
        config.tls = .init(certificateFile: ca.cert("good"), privateKeyFile: ca.key("good"))
        let emulator = WebPubSubEmulator(configuration: config)
        try emulator.start()
        defer { emulator.stop() }
        #expect(emulator.tlsPort == emulator.port)
        #expect(emulator.plainEndpoint == nil)
        #expect(emulator.endpoint == "https://127.0.0.1:\(emulator.port)")
    }

    @Test func aMissingOrBadCertificateOrKeyIsAClearErrorAtStart() throws {
        let ca = try TestCA.shared.get()
        let missing = ca.dir.appendingPathComponent("missing.crt").path
        let cases: [(cert: String, key: String, file: String, says: String)] = [
            (missing, ca.key("good"), missing, "does not exist"),
            (ca.cert("good"), ca.dir.path, ca.dir.path, "cannot be read"),
            (ca.key("good"), ca.key("good"), ca.key("good"), "not a PEM certificate"),
            (ca.cert("good"), ca.cert("good"), ca.cert("good"), "not a PEM private key"),
            (ca.cert("good"), ca.key("expired"), ca.key("expired"), "does not match"),
        ]
        for c in cases {
            var config = WebPubSubEmulator.Configuration(port: 0)
            config.tls = .init(certificateFile: c.cert, privateKeyFile: c.key, port: 0)
            let emulator = WebPubSubEmulator(configuration: config)
            #expect(throws: TLSSetupError.self) { try emulator.start() }
            do {
                try emulator.start()
            } catch let error as TLSSetupError {
                #expect(error.file == c.file, "\(error)")
                #expect("\(error)".contains(c.file) && error.reason.contains(c.says), "\(error)")
            }
            #expect(emulator.tlsPort == nil)
        }
    }

    @Test func serviceSDKOverHTTPSWithTheAccessKeyAndWithAnEntraIDTokenCredential() throws {
        let recorder = LogCapture()
        let output = try withTLSEmulator(entraID: .acceptUnvalidated, recorder: recorder) { emulator, ca in
            try runTLSScenarios(emulator, ca, ["sdk_key", "sdk_entra", "untrusted"])
        }
        #expect(expectPass(output, ["sdk_key", "sdk_entra", "untrusted"]), "\(output.joined(separator: "\n"))")
        #expect(recorder.lines.contains { $0.hasPrefix("warning Entra ID mode accept-unvalidated") && $0.contains("WITHOUT checking its signature") })
        #expect(!recorder.lines.contains { $0.contains("Bearer ey") || $0.contains("access_token=ey") })
    }

    @Test func entraIDTokensAreRefusedByDefault() throws {
        let recorder = LogCapture()
        let output = try withTLSEmulator(recorder: recorder) { emulator, ca in try runTLSScenarios(emulator, ca, ["entra_off"]) }
        #expect(expectPass(output, ["entra_off"]), "\(output.joined(separator: "\n"))")
        #expect(!recorder.contains("Entra ID mode accept-unvalidated"))
    }

    @Test func thePythonClientSDKOverWSSRecoversAndReconnects() throws {
        let output = try withTLSEmulator { emulator, ca in
            try runTLSScenarios(emulator, ca, ["python_client_wss"], environment: ["SSL_CERT_FILE": ca.rootCert])
        }
        #expect(expectPass(output, ["python_client_wss"]), "\(output.joined(separator: "\n"))")
    }

    @Test func failedHandshakesAreLoggedAndDisturbNoOtherConnection() throws {
        let recorder = LogCapture()
        let output = try withTLSEmulator(recorder: recorder) { emulator, ca in try runTLSScenarios(emulator, ca, ["bad_handshakes"]) }
        #expect(expectPass(output, ["bad_handshakes"]), "\(output.joined(separator: "\n"))")
        let failures = recorder.lines.filter { $0.contains("TLS handshake failed") }
        #expect(failures.contains { $0.contains("http request") }, "\(failures)")
        #expect(failures.contains { $0.contains("unsupported protocol") || $0.contains("version") }, "\(failures)")
        #expect(failures.count >= 3, "\(failures)")
    }

    @Test func aClientThatNeverFinishesTheHandshakeIsClosed() throws {
        let recorder = LogCapture()
        let output = try withTLSEmulator(handshakeTimeout: 2, recorder: recorder) { emulator, ca in
            try runTLSScenarios(emulator, ca, ["silent_client"])
        }
        #expect(expectPass(output, ["silent_client"]), "\(output.joined(separator: "\n"))")
        #expect(recorder.contains("TLS handshake timed out"))
    }

    @Test func executableServesTLSAndNamesABadFile() throws {
        let ca = try TestCA.shared.get()
        let executable = EmulatorTests.executable
        let missing = ca.dir.appendingPathComponent("nope.key").path
        let bad = try PeerProcess(executable, ["--port", "0", "--tls-cert", ca.cert("good"), "--tls-key", missing])
        defer { bad.stop() }
        #expect(bad.waitForExit(timeout: 20) == 1)
        #expect(bad.output.contains { $0.contains(missing) && $0.contains("does not exist") }, "\(bad.output)")

        let unpaired = try PeerProcess(executable, ["--port", "0", "--tls-port", "0"])
        defer { unpaired.stop() }
        #expect(unpaired.waitForExit(timeout: 20) != 0)

        let process = try PeerProcess(executable, ["--port", "0", "--tls-port", "0", "--tls-cert", ca.cert("good"),
                                                   "--tls-key", ca.key("good"), "--entra-id", "accept-unvalidated",
                                                   "--log-level", "warning"])
        defer { process.stop() }
        let line = try process.waitForLine(containing: "Endpoint=", timeout: 20)
        #expect(line.wholeMatch(of: /Endpoint=https:\/\/127\.0\.0\.1:\d+;AccessKey=[A-Z0-9]+;Version=1\.0;/) != nil, "\(line)")
        try process.waitForLine(containing: "Entra ID mode accept-unvalidated", timeout: 5)
        kill(process.process.processIdentifier, SIGTERM)
        #expect(process.waitForExit(timeout: 10) == 0)

        // TLS only (no --tls-port): the one listener speaks TLS, and the service SDK works against it.
        let tlsOnly = try PeerProcess(executable, ["--port", "0", "--tls-cert", ca.cert("good"), "--tls-key", ca.key("good"),
                                                   "--log-level", "warning"])
        defer { tlsOnly.stop() }
        let ready = try tlsOnly.waitForLine(containing: "Endpoint=", timeout: 20)
        #expect(ready.hasPrefix("Endpoint=https://127.0.0.1:"), "\(ready)")
        let peer = try PeerProcess.python("emulator_tls.py", [ready, ca.rootCert, "sdk_key"])
        defer { peer.stop() }
        #expect(peer.waitForExit(timeout: 60) == 0, "\(peer.output.joined(separator: "\n"))")
        #expect(peer.output.contains("PASS sdk_key"), "\(peer.output.joined(separator: "\n"))")
        kill(tlsOnly.process.processIdentifier, SIGTERM)
        #expect(tlsOnly.waitForExit(timeout: 10) == 0)
    }
}

/// The Entra ID token rules, without I/O.
@Suite struct EntraIDTokenTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func jwt(_ claims: [String: Any], alg: String = "RS256") -> String {
        func part(_ object: [String: Any]) -> String {
            Crypto.base64URLEncode([UInt8](try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])))
        }
        return part(["alg": alg, "typ": "JWT"]) + "." + part(claims) + "." + Crypto.base64URLEncode(Array("not a signature".utf8))
    }

    static let t = Int(now.timeIntervalSince1970)

    /// exp / nbf as offsets from now (nil: absent); `expString` sends exp as a string.
    struct Case: Sendable, CustomTestStringConvertible {
        var exp: Int?
        var nbf: Int? = nil
        var expString = false
        var extraAudience = false
        var refusal: EntraIDToken.Refusal?
        var testDescription: String { "exp \(exp.map(String.init) ?? "-") nbf \(nbf.map(String.init) ?? "-") → \(refusal.map { "\($0)" } ?? "accepted")" }
    }

    @Test(arguments: [
        Case(exp: 3600, refusal: nil),
        Case(exp: 60, extraAudience: true, refusal: nil),
        Case(exp: -299, refusal: nil),  // within the 5 min skew
        Case(exp: -301, refusal: .expired),
        Case(exp: nil, refusal: .missingExpiry),
        Case(exp: 60, nbf: 299, refusal: nil),
        Case(exp: 3600, nbf: 301, refusal: .notYetValid),
        Case(exp: 60, expString: true, refusal: nil),  // numbers as strings, as for access-key tokens
    ])
    func lifetime(_ c: Case) throws {
        var claims: [String: Any] = ["aud": c.extraAudience ? ["other", EntraIDToken.audience] : EntraIDToken.audience]
        if let exp = c.exp { claims["exp"] = c.expString ? "\(Self.t + exp)" as Any : Self.t + exp }
        if let nbf = c.nbf { claims["nbf"] = Self.t + nbf }
        let payload = try #require(EntraIDToken.payloadIfEntra(Self.jwt(claims)))
        do {
            try EntraIDToken.checkLifetime(payload, now: Self.now)
            #expect(c.refusal == nil)
        } catch {
            #expect(error == c.refusal)
        }
    }

    @Test func onlyTheWebPubSubAudienceIsAnEntraIDToken() {
        #expect(EntraIDToken.payloadIfEntra(Self.jwt(["aud": "https://webpubsub.azure.com/", "exp": Self.t])) == nil)
        #expect(EntraIDToken.payloadIfEntra(Self.jwt(["aud": "https://management.azure.com", "exp": Self.t])) == nil)
        #expect(EntraIDToken.payloadIfEntra(Self.jwt(["aud": "http://localhost:8080/api/hubs/h/:send", "exp": Self.t])) == nil)
        #expect(EntraIDToken.payloadIfEntra("not.a.jwt") == nil)
        #expect(EntraIDToken.payloadIfEntra("") == nil)
        // An access-key token (HS256) for the REST URL is not one, whatever its signature.
        let key = AccessTokenCodec(accessKey: WebPubSubEmulator.defaultAccessKey)
            .sign(AccessTokenClaims(audience: "http://localhost:8080/api/hubs/h/:send", expires: Self.t))
        #expect(EntraIDToken.payloadIfEntra(key) == nil)
    }
}
