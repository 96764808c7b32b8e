import Foundation

/// Microsoft Entra ID bearer tokens on the REST API (pure; no I/O).
///
/// The Azure SDKs ask Entra ID for the scope `https://webpubsub.azure.com/.default`, so the token's `aud` is
/// `https://webpubsub.azure.com`; the service checks the signature against Entra ID's keys and the caller's
/// roles. The emulator cannot do either offline, so in ``WebPubSubEmulator/EntraIDMode/acceptUnvalidated`` it
/// checks what it can, as Microsoft's emulator does with `AllowUnvalidatedEntraTokens`: the audience (exactly
/// `https://webpubsub.azure.com`), `exp` (required) and `nbf` (when present), each with 5 minutes of skew.
/// Signature, algorithm, issuer, tenant and roles are not looked at.
enum EntraIDToken {
    /// The audience of Entra ID tokens for Azure Web PubSub.
    static let audience = "https://webpubsub.azure.com"
    /// Allowed clock skew for `exp` and `nbf`, in seconds.
    static let clockSkew = 300

    /// Why an Entra ID token was refused.
    enum Refusal: Error, Equatable, CustomStringConvertible {
        /// Entra ID mode is off.
        case notAccepted
        case expired
        case notYetValid
        case missingExpiry

        var description: String {
            switch self {
            case .notAccepted:
                "Microsoft Entra ID tokens are not accepted; start the emulator with --entra-id accept-unvalidated"
            case .expired: "the Microsoft Entra ID token has expired"
            case .notYetValid: "the Microsoft Entra ID token is not valid yet (nbf)"
            case .missingExpiry: "the Microsoft Entra ID token has no exp claim"
            }
        }
    }

    /// The payload of `token` when it is a JWT whose `aud` names Azure Web PubSub (an Entra ID token), else
    /// nil (an access-key token, or not a JWT: the access-key path decides). The signature is not checked.
    static func payloadIfEntra(_ token: String) -> [String: Any]? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let bytes = Crypto.base64URLDecode(parts[1]),
              let payload = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        else { return nil }
        return AccessTokenCodec.strings(payload["aud"]).contains(audience) ? payload : nil
    }

    /// Checks the lifetime of an Entra ID token's payload (see ``payloadIfEntra(_:)``).
    static func checkLifetime(_ payload: [String: Any], now: Date) throws(Refusal) {
        let t = now.timeIntervalSince1970
        guard let exp = AccessTokenCodec.number(payload["exp"]) else { throw .missingExpiry }
        if Double(exp + clockSkew) < t { throw .expired }
        if let nbf = AccessTokenCodec.number(payload["nbf"]), Double(nbf - clockSkew) > t { throw .notYetValid }
    }
}

extension WebPubSubEmulator {
    /// Authorizes a REST call's bearer token: an access-key token (HS256, `aud` = the request URL) always; an Entra
    /// ID token only in ``EntraIDMode/acceptUnvalidated``. Returns the 401 to answer, or nil when authorized.
    func authorizeREST(bearer: String, host: String, uri: String) -> HTTPResult? {
        if let payload = EntraIDToken.payloadIfEntra(bearer) {
            do {
                guard configuration.entraID == .acceptUnvalidated else { throw EntraIDToken.Refusal.notAccepted }
                try EntraIDToken.checkLifetime(payload, now: Date())
                return nil
            } catch {
                return .error(.unauthorized, "Unauthorized", "Invalid bearer token (\(error)).")
            }
        }
        do {
            _ = try state.tokens.verifiedPayloadAndAudience(bearer) { Audience.matchesREST(aud: $0, host: host, uri: uri) }
            return nil
        } catch {
            return .error(.unauthorized, "Unauthorized", "Invalid bearer token (\(error)).")
        }
    }
}
