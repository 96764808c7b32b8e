//===----------------------------------------------------------------------===//
// Client access URLs minted from a connection string: HS256 tokens signed with
// the access key through the system OpenSSL (CSSL), the same claims as the
// Python service SDK's `get_client_access_token`. The rules are in
// Docs/Client.md, "Credentials from a connection string".
//===----------------------------------------------------------------------===//
internal import CSSL
import Foundation

/// Mints client access URLs from the service's connection string, as a server that holds the
/// access key does.
///
/// ```swift
/// let credential = try WebPubSubClientCredential(
///     connectionString: "Endpoint=https://contoso.webpubsub.azure.com;AccessKey=…;Version=1.0;",
///     hub: "chat", userID: "alice", roles: ["webpubsub.joinLeaveGroup.room1"])
/// let client = WebPubSubClient(credential: credential)
/// ```
///
/// Each call of ``clientAccessURL(now:)`` signs a new token (HS256 with the access key) that
/// expires ``expiresAfter`` seconds later, so a client made with `WebPubSubClient(credential:)`
/// gets a fresh one on every open and reconnect. The tokens carry the same claims as those of the Python
/// service SDK's `get_client_access_token` for the same inputs: `aud`, `iat`, `exp`, and `sub`,
/// `role` and `webpubsub.group` when given.
///
/// A credential holds the access key: keep it on the server side. Its `description` never shows
/// the key.
public struct WebPubSubClientCredential: Sendable, CustomStringConvertible {
    /// The service's HTTP endpoint, as the token audience uses it: lower-cased, without a trailing
    /// slash, with the connection string's `Port` applied (e.g. `https://contoso.webpubsub.azure.com`).
    public let endpoint: String
    /// The hub the tokens give access to.
    public let hub: String
    /// The user id (`sub` claim), if any.
    public let userID: String?
    /// The roles (`role` claim), e.g. `webpubsub.joinLeaveGroup` or `webpubsub.sendToGroup.room1`.
    public let roles: [String]
    /// The groups the connection joins when it connects (`webpubsub.group` claim).
    public let groups: [String]
    /// How long each minted token is valid, in seconds.
    public let expiresAfter: TimeInterval

    /// The longest token lifetime accepted, in seconds (ten years).
    public static let maximumLifetime: TimeInterval = 10 * 365 * 24 * 3600

    /// The HMAC key: the UTF-8 bytes of the access key.
    private let key: [UInt8]

    /// Parses `connectionString` and checks the other arguments; nothing is minted yet.
    ///
    /// The connection string is `Key=Value` segments separated by `;`, keys case-insensitive:
    /// `Endpoint` (an `http` or `https` URL, optionally with a path) and `AccessKey` are required;
    /// `Port` replaces the endpoint's port; `Version` and unknown keys are ignored.
    ///
    /// - Parameters:
    ///   - connectionString: the service's connection string (Azure portal, Keys).
    ///   - hub: the hub; it starts with a letter and holds only letters, digits and underscores.
    ///   - userID: the user id of the connections; nil or empty for none.
    ///   - roles: their roles (permissions).
    ///   - groups: the groups they join when they connect.
    ///   - expiresAfter: the lifetime of each token, in seconds (at least 1, at most
    ///     ``maximumLifetime``; default one hour).
    /// - Throws: ``WebPubSubError`` `.invalidConnectionString` naming the segment or the part that
    ///   is missing or bad (`Endpoint`, `AccessKey`, `Port`); `.invalidArgument` for a bad hub name,
    ///   an empty role or group, or a lifetime out of range. No message repeats the access key.
    public init(
        connectionString: String, hub: String, userID: String? = nil, roles: [String] = [],
        groups: [String] = [], expiresAfter: TimeInterval = 3600
    ) throws(WebPubSubError) {
        let parsed = try ConnectionString.parse(connectionString)
        try Self.checkHub(hub)
        if let i = roles.firstIndex(where: \.isEmpty) {
            throw WebPubSubError(.invalidArgument, "role \(i + 1) is empty")
        }
        if let i = groups.firstIndex(where: \.isEmpty) {
            throw WebPubSubError(.invalidArgument, "group \(i + 1) is empty")
        }
        guard expiresAfter.isFinite, expiresAfter >= 1, expiresAfter <= Self.maximumLifetime else {
            throw WebPubSubError(.invalidArgument, "expiresAfter must be from 1 second to 10 years, got \(expiresAfter)")
        }
        self.endpoint = parsed.endpoint
        self.key = Array(parsed.accessKey.utf8)
        self.hub = hub
        self.userID = (userID?.isEmpty ?? true) ? nil : userID
        self.roles = roles
        self.groups = groups
        self.expiresAfter = expiresAfter
    }

    /// The token audience: `ENDPOINT/client/hubs/HUB`, http(s) scheme, the hub's case kept.
    public var audience: String { endpoint + "/client/hubs/" + hub }

    /// The client URL without its token: `ws(s)://HOST[:PORT][/PATH]/client/hubs/HUB`.
    public var baseURL: String {
        // `endpoint` starts with "http" (checked when parsed): http → ws, https → wss.
        "ws" + endpoint.dropFirst(4) + "/client/hubs/" + hub
    }

    /// Signs a new access token valid from `now` for ``expiresAfter`` seconds.
    ///
    /// Claims: `aud` (``audience``), `iat`, `exp`, and `sub`, `role`, `webpubsub.group` when set.
    public func accessToken(now: Date = Date()) -> String {
        let issuedAt = Int(now.timeIntervalSince1970.rounded(.down))
        var payload = JSONWriter(capacity: 256)
        payload.raw("{\"aud\":")
        payload.string(audience)
        payload.raw(",\"iat\":")
        payload.rawText(String(issuedAt))
        payload.raw(",\"exp\":")
        payload.rawText(String(issuedAt + Int(expiresAfter.rounded())))
        if let userID {
            payload.raw(",\"sub\":")
            payload.string(userID)
        }
        func array(_ name: StaticString, _ values: [String]) {
            guard !values.isEmpty else { return }
            payload.raw(",\"")
            payload.raw(name)
            payload.raw("\":[")
            for (i, v) in values.enumerated() {
                if i > 0 { payload.raw(",") }
                payload.string(v)
            }
            payload.raw("]")
        }
        array("role", roles)
        array("webpubsub.group", groups)
        payload.raw("}")
        let signingInput = JWT.header + "." + JWT.base64URL(payload.bytes)
        return signingInput + "." + JWT.base64URL(JWT.hmacSHA256(key: key, data: Array(signingInput.utf8)))
    }

    /// Mints a fresh client access URL: `ws(s)://HOST[:PORT][/PATH]/client/hubs/HUB?access_token=JWT`,
    /// with a new token valid from `now`.
    public func clientAccessURL(now: Date = Date()) -> URL {
        // Every part was checked when parsed and the token is base64url: this always makes a URL.
        URL(string: baseURL + "?access_token=" + accessToken(now: now))!
    }

    /// The endpoint, hub, user id, roles, groups and lifetime; never the access key.
    public var description: String {
        var s = "WebPubSubClientCredential(endpoint: \(endpoint), hub: \(hub)"
        if let userID { s += ", userID: \(userID)" }
        if !roles.isEmpty { s += ", roles: \(roles)" }
        if !groups.isEmpty { s += ", groups: \(groups)" }
        return s + ", expiresAfter: \(expiresAfter))"
    }

    private static func checkHub(_ hub: String) throws(WebPubSubError) {
        guard let first = hub.unicodeScalars.first else { throw WebPubSubError(.invalidArgument, "the hub name is empty") }
        func isLetter(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("A"..."Z").contains(c) }
        guard isLetter(first), hub.unicodeScalars.allSatisfy({ isLetter($0) || ("0"..."9").contains($0) || $0 == "_" }) else {
            throw WebPubSubError(.invalidArgument,
                                 "the hub name '\(hub)' must start with a letter and hold only letters, digits and underscores")
        }
    }
}

extension WebPubSubClient {
    /// Creates a client that mints a fresh client access URL from `credential` on `open()` and on
    /// every reconnect (never on a recovery).
    ///
    /// ```swift
    /// let credential = try WebPubSubClientCredential(connectionString: connectionString, hub: "chat")
    /// let client = WebPubSubClient(credential: credential)
    /// try client.open()
    /// ```
    public convenience init(credential: WebPubSubClientCredential, options: WebPubSubClientOptions = .init()) {
        self.init(credential: { credential.clientAccessURL() }, options: options)
    }
}

/// A parsed connection string (pure).
struct ConnectionString: Equatable {
    /// Lower-cased, no trailing slash, `Port` applied: `http(s)://host[:port][/path]`.
    var endpoint: String
    var accessKey: String

    static func parse(_ text: String) throws(WebPubSubError) -> ConnectionString {
        var fields: [String: String] = [:]
        for (index, segment) in text.split(separator: ";", omittingEmptySubsequences: false).enumerated() {
            let trimmed = segment.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            // Never quote a segment: a stray one may be (part of) the access key.
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw bad("segment \(index + 1) is not Key=Value")
            }
            let key = trimmed[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            guard !key.isEmpty else { throw bad("segment \(index + 1) has no key before '='") }
            let value = String(trimmed[trimmed.index(after: eq)...]).trimmingCharacters(in: .whitespaces)
            guard fields[key] == nil else { throw bad("the key \(canonical(key)) appears more than once") }
            fields[key] = value
        }
        guard let rawEndpoint = fields["endpoint"] else { throw bad("Endpoint is missing") }
        guard let accessKey = fields["accesskey"] else { throw bad("AccessKey is missing") }
        guard !accessKey.isEmpty else { throw bad("AccessKey is empty") }
        var port: Int?
        if let p = fields["port"] {
            guard let n = Int(p), (1...65535).contains(n), p.allSatisfy(\.isASCII) else {
                throw bad("Port must be a number from 1 to 65535, got '\(p)'")
            }
            port = n
        }
        return ConnectionString(endpoint: try endpoint(rawEndpoint, port: port), accessKey: accessKey)
    }

    /// Checks the endpoint and puts `port` (when given) in its authority.
    private static func endpoint(_ raw: String, port: Int?) throws(WebPubSubError) -> String {
        guard !raw.isEmpty else { throw bad("Endpoint is empty") }
        var s = raw.lowercased()
        let scheme: String
        if s.hasPrefix("https://") { scheme = "https" } else if s.hasPrefix("http://") { scheme = "http" } else {
            throw bad("Endpoint must start with http:// or https://, got '\(raw)'")
        }
        s.removeFirst(scheme.count + 3)
        guard !s.contains("?"), !s.contains("#"), !s.contains(where: { $0 == " " || $0.isNewline }) else {
            throw bad("Endpoint must be a plain URL without a query, a fragment or spaces, got '\(raw)'")
        }
        let slash = s.firstIndex(of: "/") ?? s.endIndex
        var authority = String(s[..<slash])
        var path = String(s[slash...])
        while path.hasSuffix("/") { path.removeLast() }
        guard !authority.contains("@") else { throw bad("Endpoint must not hold a user name or password") }
        // Split host and port ("[v6]:port" or "name:port").
        var host = authority, ownPort: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw bad("Endpoint has an unclosed '[' in its host") }
            host = String(authority[...close])
            let rest = authority[authority.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw bad("Endpoint has a bad host, got '\(raw)'") }
                ownPort = rest.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            ownPort = authority[authority.index(after: colon)...]
        }
        guard !host.isEmpty, host != "[]" else { throw bad("Endpoint has no host, got '\(raw)'") }
        if let ownPort, Int(ownPort).map({ !(1...65535).contains($0) }) ?? true {
            throw bad("Endpoint has a bad port, got '\(raw)'")
        }
        if let port {
            authority = host + ":" + String(port)
        }
        let result = scheme + "://" + authority + path
        guard URL(string: result + "/client/hubs/h?access_token=t") != nil else {
            throw bad("Endpoint is not a valid URL, got '\(raw)'")
        }
        return result
    }

    private static func canonical(_ key: String) -> String {
        switch key {
        case "endpoint": return "Endpoint"
        case "accesskey": return "AccessKey"
        case "port": return "Port"
        case "version": return "Version"
        default: return key
        }
    }

    private static func bad(_ message: String) -> WebPubSubError {
        WebPubSubError(.invalidConnectionString, "malformed connection string: " + message)
    }
}

/// HS256 JWT pieces on the system OpenSSL.
enum JWT {
    /// The base64url header, `{"alg":"HS256","typ":"JWT"}` (the bytes PyJWT writes).
    static let header = base64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))

    /// HMAC-SHA256 of `data` with `key` (OpenSSL's one-shot `HMAC`).
    static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = key.withUnsafeBufferPointer { k in
            data.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), d.baseAddress, d.count, o.baseAddress, &length)
                }
            }
        }
        precondition(ok != nil && length == 32, "HMAC-SHA256 failed in OpenSSL")
        return Array(out.prefix(Int(length)))
    }

    /// Base64url without padding.
    static func base64URL(_ bytes: [UInt8]) -> String {
        var s = Data(bytes).base64EncodedString()
        s = s.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while s.hasSuffix("=") { s.removeLast() }
        return s
    }
}
