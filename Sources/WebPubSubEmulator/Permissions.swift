/// The two group permissions a client connection can hold.
public enum GroupPermission: String, Sendable, CaseIterable {
    case joinLeaveGroup
    case sendToGroup
}

/// The group permissions of one connection, from its token roles and later REST grants/revokes (pure).
///
/// Model: a permission is either granted for every group, or for literal groups, or for wildcard patterns
/// (`webpubsub.joinLeaveGroups.<pattern>`). A REST revoke with a `targetName` also records an explicit denial
/// of that group so that it takes effect even when the permission was granted for every group.
public struct PermissionSet: Sendable, Equatable {
    struct Grants: Sendable, Equatable {
        var all = false
        var literals: Set<String> = []
        var patterns: [String] = []
        var denied: Set<String> = []
    }
    private var grants: [GroupPermission: Grants] = [:]

    /// Builds the set from token (or connect-handler) roles; unknown roles are ignored.
    public init(roles: [String]) {
        for role in roles {
            for permission in GroupPermission.allCases {
                let base = "webpubsub." + permission.rawValue
                let plural = base + "s."
                if role == base {
                    grants[permission, default: Grants()].all = true
                } else if role.hasPrefix(plural) {
                    grants[permission, default: Grants()].patterns.append(String(role.dropFirst(plural.count)))
                } else if role.hasPrefix(base + ".") {
                    grants[permission, default: Grants()].literals.insert(String(role.dropFirst(base.count + 1)))
                }
            }
        }
    }

    /// Whether `permission` is held for `group`.
    public func allows(_ permission: GroupPermission, group: String) -> Bool {
        guard let g = grants[permission] else { return false }
        if g.denied.contains(group) { return false }
        if g.all || g.literals.contains(group) { return true }
        return g.patterns.contains { GroupPattern.matches(pattern: $0, name: group) }
    }

    /// Whether `permission` is held for every group (REST check without `targetName`).
    public func allowsAll(_ permission: GroupPermission) -> Bool {
        guard let g = grants[permission] else { return false }
        return g.all && g.denied.isEmpty
    }

    /// REST grant: for one group, or for every group when `group` is nil.
    public mutating func grant(_ permission: GroupPermission, group: String?) {
        var g = grants[permission] ?? Grants()
        if let group {
            g.denied.remove(group)
            g.literals.insert(group)
        } else {
            g.all = true
            g.denied.removeAll()
        }
        grants[permission] = g
    }

    /// REST revoke: for one group, or every grant of that permission when `group` is nil.
    public mutating func revoke(_ permission: GroupPermission, group: String?) {
        var g = grants[permission] ?? Grants()
        if let group {
            g.literals.remove(group)
            g.denied.insert(group)
        } else {
            g = Grants()
        }
        grants[permission] = g
    }
}

/// Wildcard group patterns: `?` one character except `.`, `*` a run without `.`, `**` anything, `\` escapes.
public enum GroupPattern {
    enum Token: Equatable { case literal(Character), one, star, doubleStar }

    static func tokens(_ pattern: String) -> [Token] {
        var out: [Token] = []
        var chars = Array(pattern)[...]
        while let c = chars.popFirst() {
            switch c {
            case "\\":
                if let next = chars.popFirst() { out.append(.literal(next)) } else { out.append(.literal("\\")) }
            case "?": out.append(.one)
            case "*":
                if chars.first == "*" { chars.removeFirst(); out.append(.doubleStar) } else { out.append(.star) }
            default: out.append(.literal(c))
            }
        }
        return out
    }

    /// Whether `name` matches `pattern` (case-sensitive).
    public static func matches(pattern: String, name: String) -> Bool {
        let t = tokens(pattern)
        let n = Array(name)
        // Dynamic programming over (token index, name index).
        var memo = [Int: Bool]()
        func m(_ i: Int, _ j: Int) -> Bool {
            let key = i * (n.count + 1) + j
            if let v = memo[key] { return v }
            let result: Bool
            if i == t.count {
                result = j == n.count
            } else {
                switch t[i] {
                case .literal(let c): result = j < n.count && n[j] == c && m(i + 1, j + 1)
                case .one: result = j < n.count && n[j] != "." && m(i + 1, j + 1)
                case .star: result = m(i + 1, j) || (j < n.count && n[j] != "." && m(i, j + 1))
                case .doubleStar: result = m(i + 1, j) || (j < n.count && m(i, j + 1))
                }
            }
            memo[key] = result
            return result
        }
        return m(0, 0)
    }
}
