import Foundation

/// The examples of a doc, compiled in a test file: each sits between `// snippet: NAME` and
/// `// end snippet`; a test checks that the doc shows each verbatim, so the docs cannot rot.
public enum DocSnippets {
    /// The (name, code) of every snippet in `source`.
    public static func snippets(in source: String) -> [(String, String)] {
        var result: [(String, String)] = []
        var name: String?
        var lines: [String] = []
        for line in source.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("// snippet: ") {
                name = String(trimmed.dropFirst("// snippet: ".count))
                lines = []
            } else if trimmed == "// end snippet", let n = name {
                result.append((n, lines.joined(separator: "\n")))
                name = nil
            } else if name != nil {
                lines.append(String(line))
            }
        }
        return result
    }

    /// Lines trimmed of leading and trailing blanks, joined.
    public static func normalized(_ text: String) -> String {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: "\n")
    }

    /// The names of the snippets of `source` that `doc` does not show verbatim.
    public static func missing(from doc: String, source: String) -> [String] {
        let docCode = normalized(doc)
        return snippets(in: source).filter { !docCode.contains(normalized($0.1)) }.map(\.0)
    }
}
