import Foundation

/// The claims of a Web PubSub access token (HS256 JWT signed with the access key).
public struct AccessTokenClaims: Sendable, Equatable {
    /// Audience: the http(s) URL the token is for.
    public var audience: String
    /// Expiry, seconds since 1970.
    public var expires: Int
    /// Issued at, seconds since 1970.
    public var issuedAt: Int?
    /// `sub`: the user id.
    public var userID: String?
    /// `role`: permissions such as `webpubsub.joinLeaveGroup.g1`.
    public var roles: [String]
    /// `webpubsub.group`: groups joined at connect.
    public var groups: [String]

    /// Creates claims.
    public init(audience: String, expires: Int, issuedAt: Int? = nil, userID: String? = nil,
                roles: [String] = [], groups: [String] = []) {
        self.audience = audience
        self.expires = expires
        self.issuedAt = issuedAt
        self.userID = userID
        self.roles = roles
        self.groups = groups
    }
}

/// Why a token was refused. The emulator answers HTTP 401 for every case.
public enum AccessTokenError: Error, Equatable, Sendable {
    case malformed
    case unsupportedAlgorithm
    case badSignature
    case expired
    case audienceMismatch
    /// `nbf` (not before) or `iat` (issued at) lies in the future by more than the clock skew.
    case notYetValid
}

/// Signs and verifies HS256 access tokens (pure; no I/O).
public struct AccessTokenCodec: Sendable {
    /// The HMAC key: the UTF-8 bytes of the access key string.
    let key: [UInt8]
    /// Allowed clock skew when checking `exp`, `nbf` and `iat`, in seconds.
    public var clockSkew: Int = 300

    /// Creates a codec for `accessKey`.
    public init(accessKey: String) { self.key = Array(accessKey.utf8) }

    /// Signs `claims` into a compact JWT.
    public func sign(_ claims: AccessTokenClaims) -> String {
        var object: [String: Any] = ["aud": claims.audience, "exp": claims.expires]
        if let iat = claims.issuedAt { object["iat"] = iat }
        if let sub = claims.userID { object["sub"] = sub }
        if !claims.roles.isEmpty { object["role"] = claims.roles }
        if !claims.groups.isEmpty { object["webpubsub.group"] = claims.groups }
        return sign(object: object)
    }

    /// Signs any JSON object as the payload.
    func sign(object: [String: Any]) -> String {
        let header = Crypto.base64URLEncode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payloadData = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        let payload = Crypto.base64URLEncode([UInt8](payloadData))
        let signingInput = header + "." + payload
        let signature = Crypto.base64URLEncode(Crypto.hmacSHA256(key: key, data: Array(signingInput.utf8)))
        return signingInput + "." + signature
    }

    /// Checks the signature and expiry and returns the payload object.
    func verifiedPayload(_ token: String, now: Date) throws(AccessTokenError) -> [String: Any] {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
              let headerBytes = Crypto.base64URLDecode(parts[0]),
              let header = (try? JSONSerialization.jsonObject(with: Data(headerBytes))) as? [String: Any],
              let payloadBytes = Crypto.base64URLDecode(parts[1]),
              let payload = (try? JSONSerialization.jsonObject(with: Data(payloadBytes))) as? [String: Any],
              let signature = Crypto.base64URLDecode(parts[2])
        else { throw .malformed }
        guard (header["alg"] as? String) == "HS256" else { throw .unsupportedAlgorithm }
        let expected = Crypto.hmacSHA256(key: key, data: Array((parts[0] + "." + parts[1]).utf8))
        guard constantTimeEqual(expected, signature) else { throw .badSignature }
        // NumericDate values are compared as Doubles: no sum of a claim and the skew can overflow, and a
        // fractional or huge value (RFC 7519 allows both) is judged, not trapped on.
        guard let exp = Self.numericDate(payload["exp"]) else { throw .malformed }
        let t = now.timeIntervalSince1970, skew = Double(clockSkew)
        if exp + skew < t { throw .expired }
        for claim in ["nbf", "iat"] where payload[claim] != nil {
            guard let v = Self.numericDate(payload[claim]) else { throw .malformed }
            if v - skew > t { throw .notYetValid }
        }
        return payload
    }

    /// Verifies `token` and returns its claims. `audienceMatches` decides whether the `aud` claim fits the request.
    public func verify(_ token: String, now: Date = Date(), audienceMatches: (String) -> Bool)
        throws(AccessTokenError) -> AccessTokenClaims
    {
        let payload = try verifiedPayload(token, now: now)
        guard let aud = Self.strings(payload["aud"]).first else { throw .audienceMismatch }
        guard Self.strings(payload["aud"]).contains(where: audienceMatches) else { throw .audienceMismatch }
        var roles = Self.strings(payload["role"])
        roles += Self.strings(payload["http://schemas.microsoft.com/ws/2008/06/identity/claims/role"])
        let sub = (payload["sub"] as? String)
            ?? (payload["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"] as? String)
        return AccessTokenClaims(
            audience: aud, expires: Self.number(payload["exp"]) ?? 0, issuedAt: Self.number(payload["iat"]),
            userID: sub, roles: roles, groups: Self.strings(payload["webpubsub.group"]))
    }

    /// Verifies signature, expiry and that some `aud` matches (REST tokens); returns the audience.
    func verifiedPayloadAndAudience(_ token: String, now: Date = Date(), audienceMatches: (String) -> Bool)
        throws(AccessTokenError) -> String
    {
        let payload = try verifiedPayload(token, now: now)
        guard let aud = Self.strings(payload["aud"]).first(where: audienceMatches) else { throw .audienceMismatch }
        return aud
    }

    /// A NumericDate claim (seconds since 1970: a JSON number, or a string of digits) as a finite Double.
    static func numericDate(_ value: Any?) -> Double? {
        if let n = value as? NSNumber {
            if let i = Int64(exactly: n) { return Double(i) }
            let d = n.doubleValue
            return d.isFinite ? d : nil
        }
        if let s = value as? String, let d = Double(s), d.isFinite { return d }
        return nil
    }

    /// A NumericDate claim as an `Int`, saturated at the ends of the range (never traps).
    static func number(_ value: Any?) -> Int? {
        guard let d = numericDate(value) else { return nil }
        if d >= 9.2e18 { return Int.max }
        if d <= -9.2e18 { return Int.min }
        return Int(d)
    }

    static func strings(_ value: Any?) -> [String] {
        if let s = value as? String { return [s] }
        if let a = value as? [Any] { return a.compactMap { $0 as? String } }
        return []
    }

    private func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

/// Audience matching rules (pure).
enum Audience {
    /// Splits `scheme://host/rest` into (host lower-cased, rest); nil for anything else.
    static func split(_ url: String) -> (host: String, rest: String)? {
        guard let schemeEnd = url.range(of: "://") else { return nil }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard ["http", "https", "ws", "wss"].contains(scheme) else { return nil }
        let afterScheme = url[schemeEnd.upperBound...]
        let slash = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        return (String(afterScheme[..<slash]).lowercased(), String(afterScheme[slash...]))
    }

    static let loopbackNames: Set<String> = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"]

    /// Hosts match case-insensitively; loopback aliases with the same port are treated as equal.
    static func hostsMatch(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        func parts(_ h: String) -> (String, String) {
            if let colon = h.lastIndex(of: ":"), !h.hasSuffix("]") {
                return (String(h[..<colon]), String(h[h.index(after: colon)...]))
            }
            return (h, "")
        }
        let (ha, pa) = parts(a), (hb, pb) = parts(b)
        return pa == pb && loopbackNames.contains(ha) && loopbackNames.contains(hb)
    }

    /// Client tokens: `aud` must be `<scheme>://<host>/client/hubs/<hub>` (case-insensitive).
    static func matchesClient(aud: String, host: String, hub: String) -> Bool {
        guard let (audHost, rest) = split(aud) else { return false }
        let path = rest.removingPercentEncoding ?? rest
        return path.lowercased() == "/client/hubs/\(hub.lowercased())" && hostsMatch(audHost, host.lowercased())
    }

    /// REST tokens: `aud` is the request URL with or without the query (case-insensitive, also URL-decoded),
    /// or a path prefix of it ending at `/` or `?`.
    static func matchesREST(aud: String, host: String, uri: String) -> Bool {
        guard let (audHost, rest) = split(aud), hostsMatch(audHost, host.lowercased()) else { return false }
        let candidates = [uri, uri.removingPercentEncoding ?? uri].map { $0.lowercased() }
        let audCandidates = [rest, rest.removingPercentEncoding ?? rest].map { $0.lowercased() }
        for a in audCandidates {
            for c in candidates {
                if a == c { return true }
                let path = c.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? c
                if a == path { return true }
                if c.hasPrefix(a) && (a.hasSuffix("/") || a.hasSuffix("?")) { return true }
            }
        }
        return false
    }
}
