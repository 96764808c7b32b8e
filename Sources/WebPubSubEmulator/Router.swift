import Foundation
import Logging
import NIOCore
import NIOHTTP1

extension WebPubSubEmulator {
    /// Routes a plain HTTP request: health, the data-plane REST API, and the `/_emulator/` hooks.
    func route(_ head: HTTPRequestHead, _ t: RequestTarget, _ body: [UInt8]) -> HTTPResult {
        let s = t.segments
        let logger = configuration.logger
        if s == ["api", "health"] { return HTTPResult(status: .ok) }
        if s == ["health"] { return .json(.ok, #"{"status":"Healthy"}"#) }
        if s.first == "_emulator" {
            switch hookAccess {
            case .open: break
            case .off:
                state.countBadRequest()
                logger.warning("test hook refused: hooks are off (see --test-hooks)", metadata: ["path": "\(t.path)"])
                return .error(.notFound, "NotFound", "Test hooks are disabled.")
            case .keyed:
                let host = head.headers.first(name: "Host") ?? "localhost"
                let auth = head.headers.first(name: "Authorization") ?? ""
                guard auth.lowercased().hasPrefix("bearer "), (try? state.tokens.verifiedPayloadAndAudience(
                    String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces),
                    audienceMatches: { Audience.matchesREST(aud: $0, host: host, uri: head.uri) })) != nil
                else {
                    state.countBadRequest()
                    logger.warning("test hook refused: no valid bearer token", metadata: ["path": "\(t.path)"])
                    return .error(.unauthorized, "Unauthorized", "Test hooks need a bearer token signed with the access key.")
                }
            }
            return hook(head.method, Array(s.dropFirst()), t, body)
        }
        guard s.count >= 3, s[0] == "api", s[1] == "hubs" else {
            state.countBadRequest()
            logger.warning("unknown path", metadata: ["method": "\(head.method)", "path": "\(t.path)"])
            return .error(.notFound, "NotFound", "No route for \(head.method) \(t.path).")
        }
        let result = rest(head, t, body)
        if result.status.code >= 400 {
            state.countBadRequest()
            logger.warning("REST request failed", metadata: [
                "method": "\(head.method)", "path": "\(t.path)", "status": "\(result.status.code)",
                "error": "\(String(decoding: result.body, as: UTF8.self))"])
        } else {
            logger.debug("REST", metadata: ["method": "\(head.method)", "path": "\(t.path)", "status": "\(result.status.code)"])
        }
        return result
    }

    private func rest(_ head: HTTPRequestHead, _ t: RequestTarget, _ body: [UInt8]) -> HTTPResult {
        state.countREST()
        let s = t.segments
        let hub = s[2]
        guard HubName.isValid(hub) else { return .error(.badRequest, "BadRequest", "Invalid hub name '\(hub)'.") }
        // Auth: Bearer JWT whose aud is the request URL (with or without the query).
        guard let auth = head.headers.first(name: "Authorization"), auth.lowercased().hasPrefix("bearer ") else {
            return .error(.unauthorized, "Unauthorized", "Missing bearer token.")
        }
        let host = head.headers.first(name: "Host") ?? "localhost"
        if let refused = authorizeREST(bearer: String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces), host: host,
                                       uri: head.uri) {
            return refused
        }
        guard let version = t.first("api-version"), !version.isEmpty else {
            return .error(.badRequest, "BadRequest", "The api-version query parameter is required.")
        }
        let m = head.method
        let rest = Array(s.dropFirst(3))
        let excluded = Set(t.all("excluded"))
        var filter: ODataFilter?
        if let f = t.first("filter"), !f.isEmpty {
            do { filter = try ODataFilter(f) } catch {
                return .error(.badRequest, "BadRequest", "Invalid filter: \(error.message)")
            }
        }
        if let ttl = t.first("messageTtlSeconds"), !(Int(ttl).map { (0...300).contains($0) } ?? false) {
            return .error(.badRequest, "BadRequest", "messageTtlSeconds must be 0..300.")
        }
        let reason = t.first("reason") ?? "Closed by REST API."
        func payload() -> Result<MessageData, HTTPResultError> {
            let ct = head.headers.first(name: "Content-Type")
            if let ct {
                let base = ct.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
                guard ["application/json", "text/plain", "application/octet-stream"].contains(base) else {
                    return .failure(HTTPResultError(.error(.unsupportedMediaType, "UnsupportedMediaType",
                                                           "Unsupported Content-Type '\(ct)'.")))
                }
            }
            guard let d = MessageData.fromHTTP(body: body, contentType: ct, defaultType: .binary) else {
                return .failure(HTTPResultError(.error(.badRequest, "BadRequest", "The body is not valid JSON.")))
            }
            return .success(d)
        }
        func send(_ action: (MessageData) -> HTTPResult) -> HTTPResult {
            switch payload() {
            case .success(let d): return action(d)
            case .failure(let e): return e.result
            }
        }
        let accepted = HTTPResult(status: .accepted)
        let noContent = HTTPResult(status: .noContent)
        let ok = HTTPResult(status: .ok)
        let notFound = HTTPResult.error(.notFound, "NotFound", "Not found.")
        func exists(_ b: Bool) -> HTTPResult { b ? ok : HTTPResult(status: .notFound) }
        func validGroup(_ g: String) -> Bool { !g.isEmpty && g.count <= 1024 && !g.allSatisfy { $0.isWhitespace } }

        switch (m, rest.count, rest.first) {
        case (.POST, 1, ":send"?):
            return send { state.restSendToAll(hub: hub, data: $0, excluded: excluded, filter: filter); return accepted }
        case (.POST, 1, ":closeConnections"?):
            state.closeAll(hub: hub, group: nil, user: nil, excluded: excluded, reason: reason)
            return noContent
        case (.POST, 1, ":generateToken"?):
            let minutes = Int(t.first("minutesToExpire") ?? "60") ?? 0
            let now = Int(Date().timeIntervalSince1970)
            // Checked: a lifetime whose expiry does not fit a NumericDate is a bad request, not a trap.
            let (seconds, o1) = minutes.multipliedReportingOverflow(by: 60)
            let (expires, o2) = now.addingReportingOverflow(seconds)
            guard minutes >= 1, !o1, !o2 else {
                return .error(.badRequest, "BadRequest", "minutesToExpire must be ≥ 1 and give an expiry that fits in 64 bits.")
            }
            let clientType = (t.first("clientType") ?? "Default").lowercased()
            let path: String
            switch clientType {
            case "default": path = "/client/hubs/"
            case "mqtt": path = "/clients/mqtt/hubs/"
            case "socketio": path = "/clients/socketio/hubs/"
            default: return .error(.badRequest, "BadRequest", "Unknown clientType.")
            }
            let token = state.tokens.sign(AccessTokenClaims(
                audience: "\(t.scheme)://\(host.lowercased())\(path)\(hub)", expires: expires, issuedAt: now,
                userID: t.first("userId"), roles: t.all("role"), groups: t.all("group")))
            return .json(.ok, "{\"token\":\(JSONScanner.quoted(token))}")
        case (.POST, 1, ":addToGroups"?), (.POST, 1, ":removeFromGroups"?):
            guard let o = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
                  let groups = o["groups"] as? [String], groups.allSatisfy(validGroup) else {
                return .error(.badRequest, "BadRequest", "Body must be {\"groups\":[...],\"filter\":\"...\"}.")
            }
            var f: ODataFilter?
            if let text = o["filter"] as? String, !text.isEmpty {
                do { f = try ODataFilter(text) } catch { return .error(.badRequest, "BadRequest", "Invalid filter: \(error.message)") }
            }
            state.addToGroups(hub: hub, groups: groups, filter: f, add: rest[0] == ":addToGroups")
            return ok
        case (_, _, "connections"?) where rest.count >= 2:
            let id = rest[1]
            switch (m, rest.count) {
            case (.HEAD, 2), (.GET, 2): return exists(state.connectionExists(hub: hub, connectionID: id))
            case (.DELETE, 2):
                state.closeConnection(hub: hub, connectionID: id, reason: reason)
                return noContent
            case (.POST, 3) where rest[2] == ":send":
                return send { state.restSendToConnection(hub: hub, connectionID: id, data: $0) ? accepted : notFound }
            case (.DELETE, 3) where rest[2] == "groups":
                state.removeConnection(hub: hub, connectionID: id, fromGroup: nil)
                return noContent
            default: break
            }
        case (_, _, "groups"?) where rest.count >= 2:
            let g = rest[1]
            guard validGroup(g) else { return .error(.badRequest, "BadRequest", "Invalid group name.") }
            switch (m, rest.count) {
            case (.HEAD, 2), (.GET, 2): return exists(state.groupExists(hub: hub, group: g))
            case (.POST, 3) where rest[2] == ":send":
                return send { state.restSendToGroup(hub: hub, group: g, data: $0, excluded: excluded, filter: filter); return accepted }
            case (.POST, 3) where rest[2] == ":closeConnections":
                state.closeAll(hub: hub, group: g, user: nil, excluded: excluded, reason: reason)
                return noContent
            case (.GET, 3) where rest[2] == "connections":
                return listGroup(hub: hub, group: g, t: t, host: host)
            case (.PUT, 4) where rest[2] == "connections":
                switch state.addConnection(hub: hub, connectionID: rest[3], toGroup: g) {
                case true?: return ok
                case false?:
                    return .error(.badRequest, "BadRequest",
                                  "The connection has joined the maximum of \(configuration.maxGroupsPerConnection) groups.")
                case nil: return notFound
                }
            case (.DELETE, 4) where rest[2] == "connections":
                state.removeConnection(hub: hub, connectionID: rest[3], fromGroup: g)
                return noContent
            default: break
            }
        case (_, _, "users"?) where rest.count >= 2:
            let u = rest[1]
            switch (m, rest.count) {
            case (.HEAD, 2), (.GET, 2): return exists(state.userExists(hub: hub, user: u))
            case (.POST, 3) where rest[2] == ":send":
                return send { state.restSendToUser(hub: hub, user: u, data: $0, filter: filter); return accepted }
            case (.POST, 3) where rest[2] == ":closeConnections":
                state.closeAll(hub: hub, group: nil, user: u, excluded: excluded, reason: reason)
                return noContent
            case (.DELETE, 3) where rest[2] == "groups":
                state.removeUser(hub: hub, user: u, fromGroup: nil)
                return noContent
            case (.PUT, 4) where rest[2] == "groups":
                guard validGroup(rest[3]) else { return .error(.badRequest, "BadRequest", "Invalid group name.") }
                return state.addUser(hub: hub, user: u, toGroup: rest[3]) ? ok : notFound
            case (.DELETE, 4) where rest[2] == "groups":
                state.removeUser(hub: hub, user: u, fromGroup: rest[3])
                return noContent
            default: break
            }
        case (_, 4, "permissions"?) where rest[2] == "connections":
            guard let permission = GroupPermission(rawValue: rest[1]) else {
                return .error(.badRequest, "BadRequest", "Unknown permission '\(rest[1])'.")
            }
            let target = t.first("targetName").flatMap { $0.isEmpty ? nil : $0 }
            switch m {
            case .PUT:
                return state.permission(hub: hub, connectionID: rest[3], permission: permission, group: target, grant: true) != nil
                    ? ok : notFound
            case .DELETE:
                _ = state.permission(hub: hub, connectionID: rest[3], permission: permission, group: target, grant: false)
                return noContent
            case .HEAD, .GET:
                return exists(state.permission(hub: hub, connectionID: rest[3], permission: permission, group: target,
                                               grant: nil) == true)
            default: break
            }
        default: break
        }
        return .error(.notFound, "NotFound", "No route for \(m) \(t.path).")
    }

    private func listGroup(hub: String, group: String, t: RequestTarget, host: String) -> HTTPResult {
        let members = state.groupMembers(hub: hub, group: group)
        let pageSize = max(1, min(200, Int(t.first("maxpagesize") ?? "") ?? 200))
        let top = Int(t.first("top") ?? "").map { max(1, $0) }
        let total = min(members.count, top ?? Int.max)
        // Clamped before any arithmetic: a token past the end (up to Int.max) is an empty last page.
        let offset = min(max(0, Int(t.first("continuationToken") ?? "") ?? 0), total)
        let end = min(total, offset + pageSize)
        let page = offset < end ? members[offset..<end] : []
        let items = page.map { "{\"connectionId\":\(JSONScanner.quoted($0.0)),\"userId\":\($0.1.map(JSONScanner.quoted) ?? "null")}" }
        var json = "{\"value\":[" + items.joined(separator: ",") + "]"
        if end < total {
            var q = "api-version=\(t.first("api-version") ?? "2024-12-01")&maxpagesize=\(pageSize)&continuationToken=\(end)"
            if let top { q += "&top=\(top)" }
            let g = group.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? group
            json += ",\"nextLink\":\(JSONScanner.quoted("\(t.scheme)://\(host)/api/hubs/\(hub)/groups/\(g)/connections?\(q)"))"
        }
        return .json(.ok, json + "}")
    }

    private func hook(_ m: HTTPMethod, _ s: [String], _ t: RequestTarget, _ body: [UInt8]) -> HTTPResult {
        switch (m, s.count) {
        case (.GET, 1) where s[0] == "stats": return .json(.ok, state.statsJSON())
        case (.POST, 2) where s == ["stats", "reset"]:
            state.lock.withLock { state.stats = Stats() }
            return .json(.ok, state.statsJSON())
        case (.GET, 1) where s[0] == "connections": return .json(.ok, state.connectionsJSON())
        case (.POST, 3) where s[0] == "connections":
            let id = s[1]
            let found: Bool
            switch s[2] {
            case "drop": found = state.hook(.drop, connectionID: id)
            case "expire": found = state.hook(.expire, connectionID: id)
            case "pause": found = state.hook(.pause, connectionID: id)
            case "resume": found = state.hook(.resume, connectionID: id)
            case "close":
                guard let code = UInt16(t.first("code") ?? "1011"), (1000...4999).contains(code),
                      ![1004, 1005, 1006, 1015].contains(code) else {
                    return .error(.badRequest, "BadRequest", "code must be a sendable close code.")
                }
                found = state.closeHook(connectionID: id, code: code, reason: t.first("reason") ?? "",
                                        disconnected: t.first("disconnected") == "true")
            case "frame":
                found = state.frameHook(connectionID: id, bytes: body, binary: t.first("binary") == "true")
            case "replay":
                guard let n = state.replayHook(connectionID: id) else {
                    return .error(.notFound, "NotFound", "No connection '\(id)'.")
                }
                return .json(.ok, "{\"replayed\":\(n)}")
            case "fail-acks", "drop-acks", "delay-acks":
                // Bounded before they reach a counter or a timer (a delay in ms becomes nanoseconds).
                let count = Int(t.first("count") ?? "1") ?? 1
                let msText = s[2] == "delay-acks" ? t.first("ms") ?? t.first("delay-acks-ms") ?? "0" : t.first("delay-acks-ms")
                let ms = msText.map { Int($0) ?? -1 }
                guard (0...1_000_000).contains(count), ms.map({ (0...3_600_000).contains($0) }) ?? true else {
                    return .error(.badRequest, "BadRequest", "count must be 0...1000000 and ms 0...3600000.")
                }
                found = state.ackHook(connectionID: id, fail: s[2] == "fail-acks" ? count : nil,
                                      drop: s[2] == "drop-acks" ? count : nil, delayMilliseconds: ms)
            default:
                return .error(.notFound, "NotFound", "Unknown hook '\(s[2])'.")
            }
            return found ? .json(.ok, "{}") : .error(.notFound, "NotFound", "No connection '\(id)'.")
        default:
            return .error(.notFound, "NotFound", "Unknown hook.")
        }
    }
}

/// Carries an error response through `Result`.
struct HTTPResultError: Error {
    var result: HTTPResult
    init(_ result: HTTPResult) { self.result = result }
}
