import Foundation
import ILADiff

/// One entry of tokenizer.json `added_tokens`.
struct AddedToken {
    var id: Int
    var content: String
    var special: Bool
    /// Matched after the normalizer ran (against normalized content) rather than on raw text.
    var normalized: Bool
    var lstrip: Bool
    var rstrip: Bool
    var singleWord: Bool

    /// The same flags and content (the id aside), as `AddedToken`'s `PartialEq` compares.
    func sameFlags(_ o: AddedToken) -> Bool {
        ScalarKey(content) == ScalarKey(o.content) && special == o.special && normalized == o.normalized
            && lstrip == o.lstrip && rstrip == o.rstrip && singleWord == o.singleWord
    }

    static func parse(_ o: JSONValue, index: Int, file: String) throws -> AddedToken {
        guard let content = o["content"]?.string, let id = o["id"]?.int, id >= 0, id < Int(Int32.max) else {
            throw ILAError(file: file, "added_tokens[\(index)] needs a \"content\" string and a non-negative \"id\"")
        }
        let f = Fields(json: o, owner: "added_tokens[\(index)]", file: file)
        let special = try f.bool("special", default: false)
        return AddedToken(id: id, content: content, special: special,
                          normalized: try f.bool("normalized", default: !special),
                          lstrip: try f.bool("lstrip", default: false), rstrip: try f.bool("rstrip", default: false),
                          singleWord: try f.bool("single_word", default: false))
    }
}

/// Finds added tokens in text the way `AddedVocabulary::find_matches` does: leftmost-longest
/// non-overlapping matches, then `single_word`, `lstrip` and `rstrip` adjustments.
struct AddedTokenMatcher {
    private struct Entry {
        var pattern: [Unicode.Scalar]
        var token: AddedToken
    }
    private let entries: [Entry]
    /// Entry indices by first scalar, longest pattern first.
    private let byFirst: [Unicode.Scalar: [Int]]
    /// Fast reject for ASCII first scalars.
    private let asciiFirst: [Bool]

    /// A matcher for `tokens`, each searched as `pattern(token)`; nil when there is nothing to find.
    init?(_ tokens: [AddedToken], pattern: (AddedToken) -> [Unicode.Scalar]) {
        var entries: [Entry] = []
        for t in tokens {
            let p = pattern(t)
            if !p.isEmpty { entries.append(Entry(pattern: p, token: t)) }
        }
        guard !entries.isEmpty else { return nil }
        var byFirst: [Unicode.Scalar: [Int]] = [:]
        var ascii = [Bool](repeating: false, count: 128)
        for (i, e) in entries.enumerated() {
            byFirst[e.pattern[0], default: []].append(i)
            if e.pattern[0].value < 128 { ascii[Int(e.pattern[0].value)] = true }
        }
        self.entries = entries
        self.byFirst = byFirst.mapValues { $0.sorted { entries[$0].pattern.count > entries[$1].pattern.count } }
        self.asciiFirst = ascii
    }

    /// The longest entry matching at `p`, if any.
    @inline(__always)
    private func longestMatch(_ s: [Unicode.Scalar], at p: Int) -> Int? {
        let x = s[p]
        if x.value < 128 && !asciiFirst[Int(x.value)] { return nil }
        guard let candidates = byFirst[x] else { return nil }
        for i in candidates {
            let pat = entries[i].pattern
            if p + pat.count <= s.count && s[p..<(p + pat.count)].elementsEqual(pat) { return i }
        }
        return nil
    }

    /// Cuts `s` into consecutive pieces, each either plain text (nil) or an added token's id.
    func split(_ s: [Unicode.Scalar]) -> [(Range<Int>, Int?)] {
        var out: [(Range<Int>, Int?)] = []
        var startOffset = 0
        var p = 0
        while p < s.count {
            guard let e = longestMatch(s, at: p) else { p += 1; continue }
            let token = entries[e].token
            let matchEnd = p + entries[e].pattern.count
            var start = p
            var stop = matchEnd
            p = matchEnd  // the search resumes after the match whatever happens to it
            if token.singleWord {
                let before = start == 0 || !isWordScalar(s[start - 1])
                let after = stop == s.count || !isWordScalar(s[stop])
                if !before || !after { continue }
            }
            // `regex`'s `\s*$` / `^\s*`: White_Space.
            if token.lstrip {
                var newStart = start
                while newStart > 0 && CharInfo.of(s[newStart - 1]) & CharInfo.space != 0 { newStart -= 1 }
                start = max(newStart, startOffset)
            }
            if token.rstrip {
                while stop < s.count && CharInfo.of(s[stop]) & CharInfo.space != 0 { stop += 1 }
            }
            if startOffset < start { out.append((startOffset..<start, nil)) }
            out.append((start..<stop, token.id))
            startOffset = stop
        }
        if startOffset < s.count { out.append((startOffset..<s.count, nil)) }
        return out
    }

    /// Rust `regex`'s Unicode `\w` (`tokenizers` tests `\w$` / `^\w`), Unicode 16: Alphabetic,
    /// marks, decimal digits, connector punctuation and joiners.
    private func isWordScalar(_ x: Unicode.Scalar) -> Bool {
        CharInfo.of(x) & CharInfo.regexWord != 0
    }
}
