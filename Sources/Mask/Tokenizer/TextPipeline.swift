import Foundation
import ILADiff

// The pieces of text that flow through the normalizer and the pre-tokenizers, and the patterns
// that cut them, reproducing Hugging Face `tokenizers`' `NormalizedString` on arrays of Unicode
// scalars (Rust `char`s are scalars too).

/// A stretch of text on its way through the normalizer and the pre-tokenizers.
///
/// `tokenizers` keeps, for every byte of a piece, the span of the original text it came from.
/// Only one thing that changes ids reads those spans: Metaspace with `prepend_scheme: "first"`
/// prepends its `▁` only to a piece whose original start is offset 0. So the spans are tracked
/// (as `origins`, the absolute original offset of each scalar) only when a tokenizer has such a
/// Metaspace; otherwise `origins` is nil and `shift` unused.
struct TextPiece {
    var scalars: [Unicode.Scalar]
    /// The original offset each scalar is aligned to (`alignments[i].0`, made absolute).
    var origins: [Int32]?
    /// Where the piece's original text starts (`NormalizedString::original_shift`).
    var shift: Int32

    init(scalars: [Unicode.Scalar], origins: [Int32]?, shift: Int32) {
        self.scalars = scalars
        self.origins = origins
        self.shift = shift
    }

    /// A raw piece of the input at `offset` (offsets are scalar offsets: only "is it 0" is ever
    /// asked, which byte and scalar offsets answer alike).
    init(raw: ArraySlice<Unicode.Scalar>, offset: Int, tracking: Bool) {
        scalars = Array(raw)
        shift = Int32(offset)
        origins = tracking ? (0..<raw.count).map { Int32(offset + $0) } : nil
    }

    var isEmpty: Bool { scalars.isEmpty }

    /// `NormalizedString::slice` of a non-empty range: the sub-piece's original start is the
    /// original offset of its first scalar.
    func slice(_ r: Range<Int>) -> TextPiece {
        guard let o = origins else { return TextPiece(scalars: Array(scalars[r]), origins: nil, shift: 0) }
        return TextPiece(scalars: Array(scalars[r]), origins: Array(o[r]),
                         shift: r.isEmpty ? shift : o[r.lowerBound])
    }

    /// `NormalizedString::prepend`: the new scalars share the first scalar's alignment.
    mutating func prepend(_ p: [Unicode.Scalar]) {
        guard !scalars.isEmpty, !p.isEmpty else { return }
        scalars.insert(contentsOf: p, at: 0)
        if let o = origins { origins = Array(repeating: o[0], count: p.count) + o }
    }

    /// `NormalizedString::replace` given the match ranges: each match is replaced by `content`,
    /// whose scalars take the alignment of the scalar before the match (the piece's start when
    /// the match is at offset 0).
    mutating func replace(_ ranges: [Range<Int>], with content: [Unicode.Scalar]) {
        guard !ranges.isEmpty else { return }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count + ranges.count * content.count)
        var outOrigins: [Int32]? = origins == nil ? nil : []
        var prev = 0
        for r in ranges {
            out.append(contentsOf: scalars[prev..<r.lowerBound])
            out.append(contentsOf: content)
            if let o = origins {
                outOrigins!.append(contentsOf: o[prev..<r.lowerBound])
                let a = r.lowerBound == 0 ? shift : o[r.lowerBound - 1]
                outOrigins!.append(contentsOf: repeatElement(a, count: content.count))
            }
            prev = r.upperBound
        }
        out.append(contentsOf: scalars[prev...])
        if let o = origins { outOrigins!.append(contentsOf: o[prev...]) }
        scalars = out
        origins = outOrigins
    }

    /// Maps every scalar to zero or more scalars that inherit its alignment.
    mutating func flatMap(_ f: (Unicode.Scalar, inout [Unicode.Scalar]) -> Void) {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count)
        if let o = origins {
            var outOrigins: [Int32] = []
            outOrigins.reserveCapacity(o.count)
            for (x, a) in zip(scalars, o) {
                let before = out.count
                f(x, &out)
                outOrigins.append(contentsOf: repeatElement(a, count: out.count - before))
            }
            origins = outOrigins
        } else {
            for x in scalars { f(x, &out) }
        }
        scalars = out
    }

    /// Keeps the scalars in `r`, dropping the rest (strip).
    mutating func keep(_ r: Range<Int>) {
        guard r != 0..<scalars.count else { return }
        scalars = Array(scalars[r])
        if let o = origins { origins = Array(o[r]) }
    }
}

/// What a split does with the pattern's matches (`SplitDelimiterBehavior`).
enum SplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Cuts `piece` by `segments` (consecutive ranges covering it, flagged when matched),
    /// exactly like `NormalizedString::split`; empty results are dropped, as
    /// `PreTokenizedString::split` drops them.
    func apply(_ piece: TextPiece, _ segments: [(Range<Int>, Bool)]) -> [TextPiece] {
        var kept: [(Range<Int>, Bool)] = []  // (range, remove)
        switch self {
        case .isolated:
            kept = segments.map { ($0.0, false) }
        case .removed:
            kept = segments
        case .contiguous:
            var previous = false
            for (r, m) in segments {
                if m == previous, let last = kept.last {
                    kept[kept.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    kept.append((r, false))
                }
                previous = m
            }
        case .mergedWithPrevious:
            var previous = false
            for (r, m) in segments {
                if m && !previous, let last = kept.last {
                    kept[kept.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    kept.append((r, false))
                }
                previous = m
            }
        case .mergedWithNext:
            var previous = false
            for (r, m) in segments.reversed() {
                if m && !previous, let last = kept.last {
                    kept[kept.count - 1] = (r.lowerBound..<last.0.upperBound, false)
                } else {
                    kept.append((r, false))
                }
                previous = m
            }
            kept.reverse()
        }
        if kept.count == 1, !kept[0].1, kept[0].0 == 0..<piece.scalars.count {
            // The whole piece: no copy unless its alignments are tracked.
            if piece.isEmpty { return [] }
            return [piece.origins == nil ? piece : piece.slice(kept[0].0)]
        }
        var out: [TextPiece] = []
        out.reserveCapacity(kept.count)
        for (r, remove) in kept where !remove && !r.isEmpty {
            out.append(piece.slice(r))
        }
        return out
    }
}

/// What `Split` and `Replace` search for.
enum TextPattern {
    /// A non-empty `{"String": s}` (`tokenizers` escapes it into a regex: plain
    /// leftmost non-overlapping occurrences).
    case literal([Unicode.Scalar])
    /// One of the split regexes with a hand-written matcher.
    case known(SplitRegex)
    /// Any other regex (and the empty string, which matches empty at every offset).
    case regex(OnigRegex)
    /// A `char` predicate: every scalar for which it holds is a match of its own.
    case predicate((Unicode.Scalar) -> Bool)

    /// The match ranges, in order and non-overlapping (regex matches may be empty).
    func matches(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .literal(let lit): return findLiteral(lit, in: s)
        case .known(let re):
            var out: [Range<Int>] = []
            var start = 0
            for end in re.matchEnds(s) {
                out.append(start..<end)
                start = end
            }
            return out
        case .regex(let re): return re.matches(in: s)
        case .predicate(let f):
            var out: [Range<Int>] = []
            for (i, x) in s.enumerated() where f(x) { out.append(i..<(i + 1)) }
            return out
        }
    }

    /// Consecutive segments covering `s`, each flagged whether it is a match (`find_matches`),
    /// flags flipped with `invert`.
    func segments(_ s: [Unicode.Scalar], invert: Bool) -> [(Range<Int>, Bool)] {
        var out: [(Range<Int>, Bool)] = []
        var prev = 0
        for r in matches(s) {
            if prev != r.lowerBound { out.append((prev..<r.lowerBound, invert)) }
            out.append((r, !invert))
            prev = r.upperBound
        }
        if prev != s.count { out.append((prev..<s.count, invert)) }
        return out
    }

    /// Parses a `{"String": s}` or `{"Regex": r}` pattern object; `what` names its owner.
    static func parse(_ json: JSONValue?, what: String, file: String) throws -> TextPattern {
        guard let o = json, o.isObject else { throw ILAError(file: file, "\(what) has no \"pattern\" object") }
        if let s = o["String"]?.string {
            if s.isEmpty { return .regex(try compile("", what: what, file: file)) }
            return .literal(Array(s.unicodeScalars))
        }
        if let r = o["Regex"]?.string {
            if let known = SplitRegex(source: r) { return .known(known) }
            return .regex(try compile(r, what: what, file: file))
        }
        throw ILAError(file: file, "\(what) pattern is neither {\"String\": …} nor {\"Regex\": …}")
    }

    private static func compile(_ r: String, what: String, file: String) throws -> OnigRegex {
        do {
            return try OnigRegex(r)
        } catch let e as RegexRefusal {
            throw ILAError(file: file, "\(what) regex \"\(shownPattern(r))\" is not supported: \(e.message)")
        }
    }
}

/// A pattern as written (backslashes and quotes as they are), control characters escaped so
/// that an error stays on one line.
func shownPattern(_ r: String) -> String {
    var out = ""
    for x in r.unicodeScalars {
        switch x.value {
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x09: out += "\\t"
        case 0..<0x20, 0x7F, 0x2028, 0x2029: out += "\\u{\(String(x.value, radix: 16))}"
        default: out.unicodeScalars.append(x)
        }
    }
    return out
}

/// Non-overlapping occurrences of `needle` in `hay`, left to right.
func findLiteral(_ needle: [Unicode.Scalar], in hay: [Unicode.Scalar]) -> [Range<Int>] {
    guard !needle.isEmpty, needle.count <= hay.count else { return [] }
    var out: [Range<Int>] = []
    var i = 0
    let first = needle[0]
    while i + needle.count <= hay.count {
        if hay[i] == first && hay[i..<(i + needle.count)].elementsEqual(needle) {
            out.append(i..<(i + needle.count))
            i += needle.count
        } else {
            i += 1
        }
    }
    return out
}

// MARK: - reading tokenizer.json fields

/// Typed access to an object's fields, in the strictness `tokenizers`' serde structs have:
/// a wrong type is an error naming the field.
struct Fields {
    let json: JSONValue
    let owner: String
    let file: String

    func bool(_ key: String, default value: Bool) throws -> Bool {
        guard let v = json[key], !v.isNull else { return value }
        guard let b = v.bool else { throw ILAError(file: file, "\(owner) \(key) is not true or false") }
        return b
    }

    func string(_ key: String) throws -> String? {
        guard let v = json[key], !v.isNull else { return nil }
        guard let s = v.string else { throw ILAError(file: file, "\(owner) \(key) is not a string") }
        return s
    }

    func requiredString(_ key: String) throws -> String {
        guard let s = try string(key) else { throw ILAError(file: file, "\(owner) has no \"\(key)\" string") }
        return s
    }

    func char(_ key: String) throws -> Unicode.Scalar {
        let s = try requiredString(key)
        guard s.unicodeScalars.count == 1, let x = s.unicodeScalars.first else {
            throw ILAError(file: file, "\(owner) \(key) \(s.debugDescription) is not one character")
        }
        return x
    }
}
