import Foundation
import ILADiff

/// Metaspace's `prepend_scheme`.
enum PrependScheme: String {
    case always, first, never
}

/// A tokenizer.json `pre_tokenizer`.
indirect enum PreTokenizer {
    case sequence([PreTokenizer])
    /// Splits with the GPT-2 pattern when `useRegex`, then maps bytes to printable scalars.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case metaspace(replacement: Unicode.Scalar, scheme: PrependScheme, split: Bool)
    case split(TextPattern, SplitBehavior, invert: Bool)
    case digits(individual: Bool)
    case punctuation(SplitBehavior)
    /// `\w+|[^\w\s]+` runs are kept, everything else removed.
    case whitespace
    case whitespaceSplit
    case charDelimiter(Unicode.Scalar)
    case fixedLength(Int)

    /// Whether a Metaspace with `prepend_scheme: "first"` is in here (then pieces must carry
    /// their alignments, see `TextPiece`).
    var needsOrigins: Bool {
        switch self {
        case .sequence(let list): return list.contains { $0.needsOrigins }
        case .metaspace(_, let scheme, _): return scheme == .first
        default: return false
        }
    }

    /// Runs this pre-tokenizer over every piece (`PreTokenizedString::split` drops empty results).
    func apply(_ pieces: [TextPiece]) -> [TextPiece] {
        switch self {
        case .sequence(let list):
            return list.reduce(pieces) { $1.apply($0) }
        case .byteLevel(let addPrefixSpace, let useRegex):
            var out: [TextPiece] = []
            out.reserveCapacity(pieces.count * 4)
            for var p in pieces {
                if addPrefixSpace && p.scalars.first != " " { p.prepend([" "]) }
                if useRegex && p.origins == nil {
                    // The common case, without copying each word twice.
                    var start = 0
                    for end in SplitRegex.gpt2.matchEnds(p.scalars) {
                        var w: [Unicode.Scalar] = []
                        w.reserveCapacity(end - start + 2)
                        for x in p.scalars[start..<end] { appendByteLevel(x, into: &w) }
                        out.append(TextPiece(scalars: w, origins: nil, shift: 0))
                        start = end
                    }
                } else if useRegex {
                    for var w in SplitBehavior.isolated.apply(p, TextPattern.known(.gpt2).segments(p.scalars, invert: false)) {
                        w.flatMap { x, o in appendByteLevel(x, into: &o) }
                        out.append(w)
                    }
                } else if !p.isEmpty {
                    p.flatMap { x, o in appendByteLevel(x, into: &o) }
                    out.append(p)
                }
            }
            return out
        case .metaspace(let replacement, let scheme, let split):
            var out: [TextPiece] = []
            for var p in pieces {
                if p.scalars.contains(" ") {
                    p.replace(TextPattern.literal([" "]).matches(p.scalars), with: [replacement])
                }
                let prepend: Bool
                switch scheme {
                case .always: prepend = p.scalars.first != replacement
                case .first: prepend = p.scalars.first != replacement && p.shift == 0
                case .never: prepend = false
                }
                if prepend { p.prepend([replacement]) }
                if split {
                    let segs = TextPattern.literal([replacement]).segments(p.scalars, invert: false)
                    out.append(contentsOf: SplitBehavior.mergedWithNext.apply(p, segs))
                } else if !p.isEmpty {
                    out.append(p)
                }
            }
            return out
        case .split(let pattern, let behavior, let invert):
            return pieces.flatMap { behavior.apply($0, pattern.segments($0.scalars, invert: invert)) }
        case .digits(let individual):
            let pattern = TextPattern.predicate { CharInfo.of($0) & CharInfo.numeric != 0 }
            let behavior: SplitBehavior = individual ? .isolated : .contiguous
            return pieces.flatMap { behavior.apply($0, pattern.segments($0.scalars, invert: false)) }
        case .punctuation(let behavior):
            let pattern = TextPattern.predicate { CharInfo.of($0) & CharInfo.punctuation != 0 }
            return pieces.flatMap { behavior.apply($0, pattern.segments($0.scalars, invert: false)) }
        case .whitespace:
            return pieces.flatMap { p in
                SplitBehavior.removed.apply(p, TextPattern.segments(ofRuns: Self.wordRuns(p.scalars), count: p.scalars.count))
            }
        case .whitespaceSplit:
            let pattern = TextPattern.predicate { CharInfo.of($0) & CharInfo.space != 0 }
            return pieces.flatMap { SplitBehavior.removed.apply($0, pattern.segments($0.scalars, invert: false)) }
        case .charDelimiter(let c):
            let pattern = TextPattern.literal([c])
            return pieces.flatMap { SplitBehavior.removed.apply($0, pattern.segments($0.scalars, invert: false)) }
        case .fixedLength(let n):
            return pieces.flatMap { p in
                stride(from: 0, to: p.scalars.count, by: n).map { p.slice($0..<min($0 + n, p.scalars.count)) }
            }
        }
    }

    /// The matches of the `regex` crate's `\w+|[^\w\s]+` (Unicode 16 `\w`, White_Space `\s`).
    private static func wordRuns(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = 0
        while i < s.count {
            let b = CharInfo.of(s[i])
            if b & CharInfo.regexWord != 0 {
                var j = i + 1
                while j < s.count && CharInfo.of(s[j]) & CharInfo.regexWord != 0 { j += 1 }
                out.append(i..<j)
                i = j
            } else if b & CharInfo.space == 0 {
                var j = i + 1
                while j < s.count {
                    let c = CharInfo.of(s[j])
                    if c & CharInfo.regexWord != 0 || c & CharInfo.space != 0 { break }
                    j += 1
                }
                out.append(i..<j)
                i = j
            } else {
                i += 1
            }
        }
        return out
    }

    /// Parses a tokenizer.json `pre_tokenizer` object (nil for JSON null).
    static func parse(_ json: JSONValue?, file: String) throws -> PreTokenizer? {
        guard let o = json, !o.isNull else { return nil }
        guard let type = o["type"]?.string else {
            throw ILAError(file: file, "pre_tokenizer is not an object with a \"type\"")
        }
        let f = Fields(json: o, owner: "\(type) pre_tokenizer", file: file)
        func behavior(_ fallback: SplitBehavior?) throws -> SplitBehavior {
            guard let name = try f.string("behavior") else {
                if let fallback { return fallback }
                throw ILAError(file: file, "\(type) pre_tokenizer has no \"behavior\"")
            }
            guard let b = SplitBehavior(rawValue: name) else {
                throw ILAError(file: file, "\(type) pre_tokenizer behavior \(name) is not one of Removed, Isolated, "
                               + "MergedWithPrevious, MergedWithNext, Contiguous")
            }
            return b
        }
        switch type {
        case "Sequence":
            guard let list = o["pretokenizers"]?.array else {
                throw ILAError(file: file, "Sequence pre_tokenizer has no \"pretokenizers\" list")
            }
            return .sequence(try list.map { item in
                guard let p = try parse(item, file: file) else {
                    throw ILAError(file: file, "Sequence pre_tokenizer holds a null")
                }
                return p
            })
        case "ByteLevel":
            // trim_offsets only moves offsets; it never changes ids.
            return .byteLevel(addPrefixSpace: try f.bool("add_prefix_space", default: true),
                              useRegex: try f.bool("use_regex", default: true))
        case "Metaspace":
            let replacement = try f.char("replacement")
            var scheme = PrependScheme.always
            if let s = try f.string("prepend_scheme") {
                guard let parsed = PrependScheme(rawValue: s) else {
                    throw ILAError(file: file, "Metaspace prepend_scheme \(s) is not always, first or never")
                }
                scheme = parsed
            }
            if o["add_prefix_space"]?.bool == false {
                // The pre-0.19 spelling; `tokenizers` accepts it only beside prepend_scheme "never".
                guard scheme == .never else {
                    throw ILAError(file: file, "Metaspace add_prefix_space false contradicts prepend_scheme \(scheme.rawValue)")
                }
            }
            return .metaspace(replacement: replacement, scheme: scheme, split: try f.bool("split", default: true))
        case "Split":
            let pattern = try TextPattern.parse(o["pattern"], what: "Split pre_tokenizer", file: file)
            return .split(pattern, try behavior(nil), invert: try f.bool("invert", default: false))
        case "Digits":
            return .digits(individual: try f.bool("individual_digits", default: false))
        case "Punctuation":
            return .punctuation(try behavior(.isolated))
        case "Whitespace":
            return .whitespace
        case "WhitespaceSplit":
            return .whitespaceSplit
        case "CharDelimiterSplit":
            return .charDelimiter(try f.char("delimiter"))
        case "FixedLength":
            let n = o["length"]?.int ?? 5
            guard n >= 1 else { throw ILAError(file: file, "FixedLength pre_tokenizer length must be at least 1") }
            return .fixedLength(n)
        default:
            throw ILAError(file: file, "pre_tokenizer type \(type) is not supported (supported: Sequence, ByteLevel, "
                           + "Metaspace, Split, Digits, Punctuation, Whitespace, WhitespaceSplit, CharDelimiterSplit, FixedLength)")
        }
    }
}

extension TextPattern {
    /// Segments for a list of match ranges, as `find_matches` builds them.
    static func segments(ofRuns runs: [Range<Int>], count: Int) -> [(Range<Int>, Bool)] {
        var out: [(Range<Int>, Bool)] = []
        var prev = 0
        for r in runs {
            if prev != r.lowerBound { out.append((prev..<r.lowerBound, true)) }
            out.append((r, false))  // inverted: the runs are kept, the rest removed
            prev = r.upperBound
        }
        if prev != count { out.append((prev..<count, true)) }
        return out
    }
}
