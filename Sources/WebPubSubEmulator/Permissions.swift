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

    // Limits of the roles one connection may hold (those of Microsoft's emulator); they bound matching cost.
    /// Most literal group roles (`webpubsub.joinLeaveGroup.<g>`, `webpubsub.sendToGroup.<g>`) of one connection.
    public static let maximumLiteralRoles = 1000
    /// Most wildcard pattern roles (`webpubsub.joinLeaveGroups.<pattern>`, …) of one connection.
    public static let maximumPatternRoles = 10
    /// Longest pattern, in bytes.
    public static let maximumPatternLength = 1024
    /// Most `*` characters in one pattern.
    public static let maximumPatternStars = 5

    /// Why `roles` break the limits above, or nil when they fit.
    public static func violation(roles: [String]) -> String? {
        var literals = 0, patterns = 0
        for role in roles {
            for permission in GroupPermission.allCases {
                let base = "webpubsub." + permission.rawValue
                if role.hasPrefix(base + "s.") {
                    patterns += 1
                    let p = role.dropFirst(base.count + 2)
                    if p.utf8.count > maximumPatternLength { return "a group pattern is longer than \(maximumPatternLength)" }
                    if p.filter({ $0 == "*" }).count > maximumPatternStars { return "a group pattern has more than \(maximumPatternStars) '*'" }
                } else if role.hasPrefix(base + ".") {
                    literals += 1
                }
            }
        }
        if literals > maximumLiteralRoles { return "more than \(maximumLiteralRoles) group roles" }
        if patterns > maximumPatternRoles { return "more than \(maximumPatternRoles) group pattern roles" }
        return nil
    }

    /// Builds the set from token (or connect-handler) roles; unknown roles are ignored, and so are roles that
    /// break the limits above (``violation(roles:)`` lets the caller refuse them first).
    public init(roles: [String]) {
        var roles = roles
        if Self.violation(roles: roles) != nil {
            roles = roles.filter { Self.violation(roles: [$0]) == nil }
            var literals = 0, patterns = 0
            roles = roles.filter { role in
                let isPattern = GroupPermission.allCases.contains { role.hasPrefix("webpubsub.\($0.rawValue)s.") }
                let isLiteral = !isPattern && GroupPermission.allCases.contains { role.hasPrefix("webpubsub.\($0.rawValue).") }
                if isPattern { patterns += 1; return patterns <= Self.maximumPatternRoles }
                if isLiteral { literals += 1; return literals <= Self.maximumLiteralRoles }
                return true
            }
        }
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
