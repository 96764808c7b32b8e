/// The OData `filter` of REST sends and group operations (pure): identifiers `userId`, `connectionId`, `groups`;
/// `eq ne gt ge lt le and or not in`, parentheses, `null`, `'…'` literals (`''` escapes a quote), and the string
/// functions `tolower toupper trim length startswith endswith contains indexof substring concat`.
public struct ODataFilter: Sendable {
    /// What a filter is evaluated against.
    public struct Subject: Sendable {
        /// `connectionId`.
        public var connectionID: String
        /// `userId` (null when anonymous).
        public var userID: String?
        /// `groups`.
        public var groups: Set<String>
        /// Creates a subject.
        public init(connectionID: String, userID: String?, groups: Set<String>) {
            self.connectionID = connectionID
            self.userID = userID
            self.groups = groups
        }
    }

    /// A syntax error.
    public struct SyntaxError: Error, Sendable, Equatable { public var message: String }

    indirect enum Node: Sendable {
        case literal(Value)
        case identifier(String)
        case list([Node])
        case not(Node)
        case binary(String, Node, Node)
        case call(String, [Node])
    }

    enum Value: Sendable, Equatable {
        case string(String), number(Double), bool(Bool), null, list([Value])
    }

    let root: Node

    /// The longest filter accepted, in characters (the service limits filters to about 100 clauses).
    public static let maximumLength = 8 * 1024
    /// The most tokens accepted. Every node of the parsed tree consumes at least one token, so this also
    /// bounds the tree's size and the evaluator's recursion.
    public static let maximumTokens = 1024
    /// The deepest nesting accepted: parentheses, function arguments and `not`s.
    public static let maximumDepth = 32

    /// Parses `text`. Throws ``SyntaxError`` for bad syntax and for a filter over ``maximumLength``,
    /// ``maximumTokens`` or ``maximumDepth``.
    public init(_ text: String) throws(SyntaxError) {
        guard text.utf8.count <= Self.maximumLength else {
            throw SyntaxError(message: "filter longer than \(Self.maximumLength) bytes")
        }
        let tokens = try Parser.tokenize(text)
        guard tokens.count <= Self.maximumTokens else {
            throw SyntaxError(message: "filter of more than \(Self.maximumTokens) tokens")
        }
        var p = Parser(tokens: tokens)
        root = try p.parseOr()
        guard p.pos == p.tokens.count else { throw SyntaxError(message: "unexpected token '\(p.tokens[p.pos])'") }
    }

    /// Whether `subject` matches.
    public func matches(_ subject: Subject) -> Bool {
        (try? Self.eval(root, subject)) == .bool(true)
    }

    struct EvalError: Error {}

    static func eval(_ node: Node, _ s: Subject) throws(EvalError) -> Value {
        switch node {
        case .literal(let v): return v
        case .identifier(let name):
            switch name.lowercased() {
            case "userid": return s.userID.map(Value.string) ?? .null
            case "connectionid": return .string(s.connectionID)
            case "groups": return .list(s.groups.sorted().map(Value.string))
            default: throw EvalError()
            }
        case .list(let items):
            var out: [Value] = []
            for item in items { out.append(try eval(item, s)) }
            return .list(out)
        case .not(let inner):
            guard case .bool(let b) = try eval(inner, s) else { throw EvalError() }
            return .bool(!b)
        case .binary(let op, let l, let r):
            if op == "and" || op == "or" {
                guard case .bool(let a) = try eval(l, s) else { throw EvalError() }
                if op == "and" && !a { return .bool(false) }
                if op == "or" && a { return .bool(true) }
                guard case .bool(let b) = try eval(r, s) else { throw EvalError() }
                return .bool(b)
            }
            let a = try eval(l, s), b = try eval(r, s)
            switch op {
            case "eq": return .bool(a == b)
            case "ne": return .bool(a != b)
            case "in":
                if case .list(let items) = b { return .bool(items.contains(a)) }
                return .bool(a == b)
            default:
                let c: Int
                switch (a, b) {
                case (.string(let x), .string(let y)): c = x < y ? -1 : (x == y ? 0 : 1)
                case (.number(let x), .number(let y)): c = x < y ? -1 : (x == y ? 0 : 1)
                default: return .bool(false)
                }
                switch op {
                case "gt": return .bool(c > 0)
                case "ge": return .bool(c >= 0)
                case "lt": return .bool(c < 0)
                case "le": return .bool(c <= 0)
                default: throw EvalError()
                }
            }
        case .call(let name, let args):
            var v: [Value] = []
            for a in args { v.append(try eval(a, s)) }
            func str(_ i: Int) throws(EvalError) -> String {
                guard i < v.count, case .string(let x) = v[i] else { throw EvalError() }
                return x
            }
            func int(_ i: Int) throws(EvalError) -> Int {
                guard i < v.count, case .number(let x) = v[i] else { throw EvalError() }
                return try clampedInt(x)
            }
            switch name.lowercased() {
            case "tolower": return .string(try str(0).lowercased())
            case "toupper": return .string(try str(0).uppercased())
            case "trim": return .string(try str(0).trimmingCharacters(in: .whitespaces))
            case "length":
                if case .list(let l)? = v.first { return .number(Double(l.count)) }
                return .number(Double(try str(0).count))
            case "startswith": return .bool(try str(0).hasPrefix(try str(1)))
            case "endswith": return .bool(try str(0).hasSuffix(try str(1)))
            case "contains": return .bool(try str(0).contains(try str(1)))
            case "concat": return .string(try str(0) + (try str(1)))
            case "indexof":
                // On Characters, as `substring` and `length` count: Foundation's `range(of:)` works on UTF-16 and
                // returned an index that is not one of the string's (a fuzzed filter trapped on it).
                let h = Array(try str(0)), n = Array(try str(1))
                guard n.count <= h.count else { return .number(-1) }
                for start in 0...(h.count - n.count) where h[start..<(start + n.count)].elementsEqual(n) {
                    return .number(Double(start))
                }
                return .number(-1)
            case "substring":
                let h = Array(try str(0)), start = max(0, min(try int(1), h.count))
                let len = v.count > 2 ? max(0, min(try int(2), h.count - start)) : h.count - start
                return .string(String(h[start..<(start + len)]))
            default: throw EvalError()
            }
        }
    }

    /// `x` toward zero as an `Int`, saturated at ±2^62 (a string index beyond any string); never traps.
    static func clampedInt(_ x: Double) throws(EvalError) -> Int {
        guard x.isFinite else { throw EvalError() }
        let bound = Double(1 << 62)
        return Int(min(max(x, -bound), bound))
    }

    struct Parser {
        enum Token: Equatable, CustomStringConvertible {
            case word(String), string(String), number(Double), lparen, rparen, comma
            var description: String {
                switch self {
                case .word(let w): return w
                case .string(let s): return "'\(s)'"
                case .number(let n): return "\(n)"
                case .lparen: return "("
                case .rparen: return ")"
                case .comma: return ","
                }
            }
        }
        var tokens: [Token]
        var pos = 0
        /// Current nesting (parentheses, function arguments, `not`), bounded by ``ODataFilter/maximumDepth``.
        var depth = 0

        init(tokens: [Token]) { self.tokens = tokens }

        mutating func enter() throws(SyntaxError) {
            depth += 1
            guard depth <= ODataFilter.maximumDepth else {
                throw SyntaxError(message: "filter nested deeper than \(ODataFilter.maximumDepth)")
            }
        }

        static func tokenize(_ text: String) throws(SyntaxError) -> [Token] {
            var out: [Token] = []
            let c = Array(text)
            var i = 0
            while i < c.count {
                let ch = c[i]
                if ch.isWhitespace { i += 1; continue }
                if ch == "(" { out.append(.lparen); i += 1; continue }
                if ch == ")" { out.append(.rparen); i += 1; continue }
                if ch == "," { out.append(.comma); i += 1; continue }
                if ch == "'" {
                    var s = ""
                    i += 1
                    var closed = false
                    while i < c.count {
                        if c[i] == "'" {
                            if i + 1 < c.count && c[i + 1] == "'" { s.append("'"); i += 2; continue }
                            i += 1
                            closed = true
                            break
                        }
                        s.append(c[i])
                        i += 1
                    }
                    guard closed else { throw SyntaxError(message: "unterminated string") }
                    out.append(.string(s))
                    continue
                }
                if ch.isNumber || (ch == "-" && i + 1 < c.count && c[i + 1].isNumber) {
                    var s = String(ch)
                    i += 1
                    while i < c.count, c[i].isNumber || c[i] == "." { s.append(c[i]); i += 1 }
                    guard let n = Double(s) else { throw SyntaxError(message: "bad number \(s)") }
                    out.append(.number(n))
                    continue
                }
                if ch.isLetter || ch == "_" {
                    var s = ""
                    while i < c.count, c[i].isLetter || c[i].isNumber || c[i] == "_" { s.append(c[i]); i += 1 }
                    out.append(.word(s))
                    continue
                }
                throw SyntaxError(message: "unexpected character '\(ch)'")
            }
            return out
        }

        var peek: Token? { pos < tokens.count ? tokens[pos] : nil }

        func isKeyword(_ t: Token?, _ k: String) -> Bool {
            if case .word(let w)? = t { return w.lowercased() == k }
            return false
        }

        mutating func parseOr() throws(SyntaxError) -> Node {
            var left = try parseAnd()
            while isKeyword(peek, "or") { pos += 1; left = .binary("or", left, try parseAnd()) }
            return left
        }

        mutating func parseAnd() throws(SyntaxError) -> Node {
            var left = try parseNot()
            while isKeyword(peek, "and") { pos += 1; left = .binary("and", left, try parseNot()) }
            return left
        }

        mutating func parseNot() throws(SyntaxError) -> Node {
            if isKeyword(peek, "not") {
                pos += 1
                try enter()
                defer { depth -= 1 }
                return .not(try parseNot())
            }
            return try parseComparison()
        }

        mutating func parseComparison() throws(SyntaxError) -> Node {
            let left = try parsePrimary()
            for op in ["eq", "ne", "gt", "ge", "lt", "le", "in"] where isKeyword(peek, op) {
                pos += 1
                return .binary(op, left, try parsePrimary())
            }
            return left
        }

        mutating func parsePrimary() throws(SyntaxError) -> Node {
            guard let t = peek else { throw SyntaxError(message: "unexpected end") }
            pos += 1
            try enter()
            defer { depth -= 1 }
            switch t {
            case .string(let s): return .literal(.string(s))
            case .number(let n): return .literal(.number(n))
            case .lparen:
                var items = [try parseOr()]
                while peek == .comma { pos += 1; items.append(try parseOr()) }
                guard peek == .rparen else { throw SyntaxError(message: "missing )") }
                pos += 1
                // `(x)` is x; `in` compares with a single value as with a one-element list.
                return items.count == 1 ? items[0] : .list(items)
            case .word(let w):
                switch w.lowercased() {
                case "null": return .literal(.null)
                case "true": return .literal(.bool(true))
                case "false": return .literal(.bool(false))
                case "userid", "connectionid", "groups": return .identifier(w)
                case "tolower", "toupper", "trim", "length", "startswith", "endswith", "contains", "indexof",
                     "substring", "concat":
                    guard peek == .lparen else { throw SyntaxError(message: "expected ( after \(w)") }
                    pos += 1
                    var args: [Node] = []
                    if peek != .rparen {
                        args.append(try parseOr())
                        while peek == .comma { pos += 1; args.append(try parseOr()) }
                    }
                    guard peek == .rparen else { throw SyntaxError(message: "missing )") }
                    pos += 1
                    return .call(w, args)
                default: throw SyntaxError(message: "unknown identifier '\(w)'")
                }
            default: throw SyntaxError(message: "unexpected token '\(t)'")
            }
        }
    }
}
