import Foundation
import Testing
import TestSupport
import WebPubSubEmulator

@testable import WebPubSub

/// `WebPubSubClientCredential`: connection-string parsing, the minted token (decoded here, and
/// compared with the Python service SDK's), and a real session on the emulator with it.
@Suite("WebPubSubClientCredential", .timeLimit(.minutes(1)))
struct ClientCredentialTests {
    static let key = "SECRETKEYabcdefghijklmnopqrstuvwxyz0123456789"

    // MARK: Pure

    @Test func mintsAnHS256TokenWithTheSDKsClaims() throws {
        let credential = try WebPubSubClientCredential(
            connectionString: "Endpoint=https://Contoso.WebPubSub.Azure.com/;AccessKey=\(Self.key);Version=1.0;",
            hub: "Chat", userID: "alice", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g1"],
            groups: ["g1", "g2"], expiresAfter: 600)
        let now = Date(timeIntervalSince1970: 1_700_000_000.75)
        let url = credential.clientAccessURL(now: now)
        let prefix = "wss://contoso.webpubsub.azure.com/client/hubs/Chat?access_token="
        #expect(url.absoluteString.hasPrefix(prefix))
        let token = String(url.absoluteString.dropFirst(prefix.count))
        #expect(token == credential.accessToken(now: now))

        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        try #require(parts.count == 3)
        #expect(try Self.json(parts[0]) as NSDictionary == ["alg": "HS256", "typ": "JWT"] as NSDictionary)
        let expected: [String: Any] = [
            "aud": "https://contoso.webpubsub.azure.com/client/hubs/Chat",
            "iat": 1_700_000_000, "exp": 1_700_000_600, "sub": "alice",
            "role": ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g1"], "webpubsub.group": ["g1", "g2"],
        ]
        #expect(try Self.json(parts[1]) as NSDictionary == expected as NSDictionary)
        #expect(!parts[2].contains("=") && !parts[2].contains("+") && !parts[2].contains("/"))

        // The emulator's own (independent) verifier accepts the signature and reads the same claims.
        let claims = try AccessTokenCodec(accessKey: Self.key).verify(token, now: now) { $0 == credential.audience }
        #expect(claims == AccessTokenClaims(
            audience: "https://contoso.webpubsub.azure.com/client/hubs/Chat", expires: 1_700_000_600,
            issuedAt: 1_700_000_000, userID: "alice", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g1"],
            groups: ["g1", "g2"]))
        #expect(throws: AccessTokenError.badSignature) {
            try AccessTokenCodec(accessKey: Self.key + "x").verify(token, now: now) { _ in true }
        }
    }

    @Test func optionalClaimsAreLeftOutAndEveryCallMintsANewToken() throws {
        let credential = try WebPubSubClientCredential(
            connectionString: "Endpoint=http://localhost;Port=8080;AccessKey=\(Self.key)", hub: "h", userID: "")
        let first = credential.accessToken(now: Date(timeIntervalSince1970: 1000))
        let second = credential.accessToken(now: Date(timeIntervalSince1970: 1001))
        #expect(first != second)
        let payload = try Self.json(first.split(separator: ".")[1])
        #expect(payload as NSDictionary == ["aud": "http://localhost:8080/client/hubs/h", "iat": 1000, "exp": 4600] as NSDictionary)
        #expect(credential.clientAccessURL().absoluteString.hasPrefix("ws://localhost:8080/client/hubs/h?access_token=eyJ"))
        #expect(!"\(credential)".contains(Self.key) && "\(credential)".contains("localhost:8080"))
    }

    struct EndpointCase: Sendable, CustomStringConvertible {
        var connectionString: String
        var endpoint: String
        var description: String { connectionString }
    }

    @Test(arguments: [
        EndpointCase(connectionString: "Endpoint=http://localhost;Port=8080;AccessKey=k", endpoint: "http://localhost:8080"),
        EndpointCase(connectionString: "endpoint=HTTPS://H.example:443/;accesskey=k;port=8443", endpoint: "https://h.example:8443"),
        EndpointCase(connectionString: "Endpoint=https://h.example/Api/WebPubSub//;AccessKey=k", endpoint: "https://h.example/api/webpubsub"),
        EndpointCase(connectionString: "Endpoint=https://h.example/api;Port=9443;AccessKey=k", endpoint: "https://h.example:9443/api"),
        EndpointCase(connectionString: "Endpoint=http://[::1];Port=9;AccessKey=k;Version=1.0;;", endpoint: "http://[::1]:9"),
        EndpointCase(connectionString: " Endpoint = http://127.0.0.1:8080 ; AccessKey = k ; Other=x", endpoint: "http://127.0.0.1:8080"),
    ])
    func endpointAndPort(_ c: EndpointCase) throws {
        let credential = try WebPubSubClientCredential(connectionString: c.connectionString, hub: "hub")
        #expect(credential.endpoint == c.endpoint)
        #expect(credential.audience == c.endpoint + "/client/hubs/hub")
        #expect(credential.baseURL == "ws" + c.endpoint.dropFirst(4) + "/client/hubs/hub")
    }

    struct MalformedCase: Sendable, CustomStringConvertible {
        var connectionString: String
        var names: String
        var description: String { connectionString.replacingOccurrences(of: ClientCredentialTests.key, with: "KEY") }
    }

    @Test(arguments: [
        MalformedCase(connectionString: "", names: "Endpoint is missing"),
        MalformedCase(connectionString: "AccessKey=\(key);Version=1.0", names: "Endpoint is missing"),
        MalformedCase(connectionString: "Endpoint=https://h.example;Version=1.0;", names: "AccessKey is missing"),
        MalformedCase(connectionString: "Endpoint=https://h.example;AccessKey=", names: "AccessKey is empty"),
        MalformedCase(connectionString: "Endpoint=;AccessKey=\(key)", names: "Endpoint is empty"),
        MalformedCase(connectionString: "Endpoint=ftp://h.example;AccessKey=\(key)", names: "Endpoint must start with http:// or https://"),
        MalformedCase(connectionString: "Endpoint=h.example;AccessKey=\(key)", names: "Endpoint must start with http:// or https://"),
        MalformedCase(connectionString: "Endpoint=https://;AccessKey=\(key)", names: "Endpoint has no host"),
        MalformedCase(connectionString: "Endpoint=https://h.example?x=1;AccessKey=\(key)", names: "Endpoint must be a plain URL"),
        MalformedCase(connectionString: "Endpoint=https://u:p@h.example;AccessKey=\(key)", names: "Endpoint must not hold a user name"),
        MalformedCase(connectionString: "Endpoint=https://h.example:99999;AccessKey=\(key)", names: "Endpoint has a bad port"),
        MalformedCase(connectionString: "Endpoint=https://h.example;AccessKey=\(key);Port=eighty", names: "Port must be a number"),
        MalformedCase(connectionString: "Endpoint=https://h.example;AccessKey=\(key);Port=0", names: "Port must be a number"),
        MalformedCase(connectionString: "Endpoint=https://h.example;\(key)", names: "segment 2 is not Key=Value"),
        MalformedCase(connectionString: "=x;Endpoint=https://h.example;AccessKey=\(key)", names: "segment 1 has no key"),
        MalformedCase(connectionString: "Endpoint=https://a.example;endpoint=https://b.example;AccessKey=\(key)",
                      names: "Endpoint appears more than once"),
    ])
    func malformedConnectionStringsNameTheBadPart(_ c: MalformedCase) {
        let error = #expect(throws: WebPubSubError.self) {
            try WebPubSubClientCredential(connectionString: c.connectionString, hub: "hub")
        }
        #expect(error?.code == .invalidConnectionString)
        #expect(error?.message.contains(c.names) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(Self.key) == false, "the access key is in the message")
        #expect(error.map { "\($0)" }?.contains(Self.key) == false)
    }

    struct ArgumentCase: Sendable, CustomStringConvertible {
        var hub = "hub"
        var roles: [String] = []
        var groups: [String] = []
        var expiresAfter: TimeInterval = 3600
        var names: String
        var description: String { names }
    }

    @Test(arguments: [
        ArgumentCase(hub: "", names: "hub name is empty"),
        ArgumentCase(hub: "1chat", names: "hub name '1chat'"),
        ArgumentCase(hub: "chat-room", names: "hub name 'chat-room'"),
        ArgumentCase(hub: "chat/x", names: "hub name 'chat/x'"),
        ArgumentCase(roles: ["webpubsub.sendToGroup", ""], names: "role 2 is empty"),
        ArgumentCase(groups: [""], names: "group 1 is empty"),
        ArgumentCase(expiresAfter: 0, names: "expiresAfter"),
        ArgumentCase(expiresAfter: .infinity, names: "expiresAfter"),
        ArgumentCase(expiresAfter: 1e300, names: "expiresAfter"),
    ])
    func badArgumentsAreRefused(_ c: ArgumentCase) {
        let error = #expect(throws: WebPubSubError.self) {
            try WebPubSubClientCredential(connectionString: "Endpoint=https://h.example;AccessKey=k", hub: c.hub,
                                          roles: c.roles, groups: c.groups, expiresAfter: c.expiresAfter)
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains(c.names) == true, "\(error?.message ?? "")")
    }

    // MARK: The Python service SDK

    /// The same inputs through `get_client_access_token` (azure-messaging-webpubsubservice, from the venv):
    /// the same URL without the token, the same header, the same claims but for the iat and exp values,
    /// the same lifetime; and PyJWT verifies our signature.
    @Test func claimsEqualThePythonServiceSDKs() throws {
        struct Case {
            var connectionString: String
            var hub: String
            var userID: String?
            var roles: [String] = []
            var groups: [String] = []
            var minutes = 60
        }
        let cases = [
            Case(connectionString: "Endpoint=https://Contoso.WebPubSub.Azure.com;AccessKey=\(Self.key);Version=1.0;",
                 hub: "Chat", userID: "alice", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g1"],
                 groups: ["g1", "g2"]),
            Case(connectionString: "Endpoint=http://localhost;Port=8080;AccessKey=\(Self.key);Version=1.0;", hub: "hub1"),
            Case(connectionString: "Endpoint=https://apim.example/api/WebPubSub/;AccessKey=\(Self.key)", hub: "h_2",
                 userID: "bob", roles: ["webpubsub.joinLeaveGroup.g\"quoted\""], minutes: 5),
            Case(connectionString: "Endpoint=http://127.0.0.1:8080;AccessKey=\(Self.key);Version=1.0;", hub: "Hub",
                 userID: "ünïcode user", groups: ["room/1"]),
        ]
        var swift: [WebPubSubClientCredential] = []
        var input: [[String: Any]] = []
        for c in cases {
            let credential = try WebPubSubClientCredential(
                connectionString: c.connectionString, hub: c.hub, userID: c.userID, roles: c.roles, groups: c.groups,
                expiresAfter: TimeInterval(c.minutes * 60))
            swift.append(credential)
            var object: [String: Any] = ["connectionString": c.connectionString, "hub": c.hub, "roles": c.roles,
                                         "groups": c.groups, "minutes": c.minutes,
                                         "swiftToken": credential.accessToken(), "swiftAudience": credential.audience]
            if let u = c.userID { object["userId"] = u }
            input.append(object)
        }
        let arguments = String(decoding: try JSONSerialization.data(withJSONObject: input), as: UTF8.self)
        let peer = try PeerProcess.python("service_token.py", [arguments])
        defer { peer.stop() }
        try peer.waitForLine(containing: "DONE", timeout: 30)
        let results = try peer.output.filter { $0.hasPrefix("RESULT ") }.map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.dropFirst(7).utf8)) as? [String: Any])
        }
        try #require(results.count == cases.count, "\(peer.output)")
        for (credential, python) in zip(swift, results) {
            let ours = credential.accessToken()
            let parts = ours.split(separator: ".")
            #expect(python["baseUrl"] as? String == credential.baseURL)
            #expect((python["url"] as? String)?.hasPrefix(credential.baseURL + "?access_token=") == true)
            #expect(try Self.json(parts[0]) as NSDictionary == (python["header"] as? NSDictionary))
            var mine = try Self.json(parts[1])
            var theirs = try #require(python["claims"] as? [String: Any])
            let lifetime = { (d: [String: Any]) in ((d["exp"] as? Int) ?? 0) - ((d["iat"] as? Int) ?? 0) }
            #expect(lifetime(mine) == lifetime(theirs) && lifetime(mine) == Int(credential.expiresAfter))
            for name in ["iat", "exp"] {
                mine[name] = nil
                theirs[name] = nil
            }
            #expect(mine as NSDictionary == theirs as NSDictionary, "\(credential)")
            #expect(python["swiftVerified"] as? Bool == true, "\(python["swiftError"] ?? "")")
        }
    }

    // MARK: The emulator

    /// A real session: the emulator accepts the minted URL and applies its claims (user id, roles, groups).
    @Test func theEmulatorAcceptsTheMintedURL() throws {
        let emu = try EmulatorFixture()
        let credential = try WebPubSubClientCredential(
            connectionString: emu.emulator.connectionString, hub: emu.hub, userID: "alice",
            roles: ["webpubsub.sendToGroup.g1"], groups: ["g0"], expiresAfter: 120)
        let client = WebPubSubClient(credential: credential, options: EmulatorFixture.options())
        let received = Collector<GroupMessageEvent>()
        client.subscribe(.groupMessage) { received.append($0) }
        try client.open()
        defer { client.close() }
        #expect(client.userID == "alice")
        let connectionID = try #require(client.connectionID)
        #expect(try emu.groups(of: connectionID) == ["g0"])

        // A group from the token: messages to it arrive.
        let other = emu.client(userID: "bob")
        try other.open()
        defer { other.close() }
        try other.sendToGroup("g0", .text("to g0"))
        #expect(received.wait(count: 1).first?.content == .text("to g0"))
        // Roles from the token: publishing to g1 is allowed, joining is not.
        #expect(throws: Never.self) { try client.sendToGroup("g1", .text("hi")) }
        let error = #expect(throws: WebPubSubError.self) { try client.joinGroup("g1") }
        #expect(error?.errorName == "Forbidden")

        // A reconnect mints a new URL: after the service ends the session, the client opens a new connection.
        try emu.hook(connectionID, "expire")
        #expect(eventually { client.isConnected && client.connectionID != connectionID })
        #expect(client.userID == "alice")
    }

    // MARK: Docs

    /// The examples of Docs/Client.md ("Credentials from a connection string") and the README, run
    /// against the emulator; the tests below check that the docs show them verbatim.
    @Test func docExamples() throws {
        let emu = try EmulatorFixture()
        let connectionString = emu.emulator.connectionString
        let printed = Collector<String>()
        @Sendable func print(_ items: Any...) { printed.append(items.map { "\($0)" }.joined(separator: " ")) }

        // snippet: credential
        let credential = try WebPubSubClientCredential(
            connectionString: connectionString,  // Endpoint=https://…;AccessKey=…;Version=1.0;
            hub: "chat", userID: "alice",
            roles: ["webpubsub.joinLeaveGroup.chat", "webpubsub.sendToGroup.chat"],
            expiresAfter: 600)
        let client = WebPubSubClient(credential: credential)
        try client.open()  // a fresh token now and on every reconnect
        try client.joinGroup("chat")
        // end snippet
        #expect(credential.hub == "chat" && client.userID == "alice")
        client.close()

        // snippet: credential-error
        do {
            _ = try WebPubSubClientCredential(connectionString: "Endpoint=https://contoso.example", hub: "chat")
        } catch {
            print(error.code, error.message)  // invalidConnectionString malformed connection string: AccessKey is missing
        }
        // end snippet
        #expect(printed.values == ["invalidConnectionString malformed connection string: AccessKey is missing"])

        // readme: begin
        let readmeCredential = try WebPubSubClientCredential(connectionString: connectionString, hub: "chat", userID: "alice",
                                                       roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        let readmeClient = WebPubSubClient(credential: readmeCredential)
        // readme: end
        try readmeClient.open()
        try readmeClient.sendToGroup("chat", .text("hi"))
        readmeClient.close()
    }

    @Test func docsShowTheExamples() throws {
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let doc = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Docs/Client.md"), encoding: .utf8)
        let snippets = DocExamplesTests.snippets(in: source)
        #expect(snippets.map(\.0) == ["credential", "credential-error"])
        for (name, code) in snippets {
            #expect(DocExamplesTests.normalized(doc).contains(DocExamplesTests.normalized(code)), "Docs/Client.md lacks '\(name)'")
        }
        let readme = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = try #require(source.range(of: "// readme: begin\n"))
        let end = try #require(source.range(of: "        // readme: end", range: begin.upperBound..<source.endIndex))
        let code = String(source[begin.upperBound..<end.lowerBound])
            .replacingOccurrences(of: "readmeCredential", with: "credential").replacingOccurrences(of: "readmeClient", with: "client")
        #expect(DocExamplesTests.normalized(readme).contains(DocExamplesTests.normalized(code)), "README.md lacks:\n\(code)")
    }

    static func json(_ part: Substring) throws -> [String: Any] {
        var s = part.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        let data = try #require(Data(base64Encoded: s))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }
}
