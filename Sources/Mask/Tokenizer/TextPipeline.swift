import Foundation
import ILADiff

// Normalizers and pre-tokenizers of tokenizer.json, reproducing Hugging Face `tokenizers`
// semantics on arrays of Unicode scalars (Rust `char`s are scalars too).

/// A stretch of text on its way through the normalizer and the pre-tokenizers.
struct TextPiece {
    var scalars: [Unicode.Scalar]
    /// Whether the piece begins at offset 0 of the encoded text; Metaspace's
    /// `prepend_scheme: "first"` prepends only to such a piece.
    var atStart: Bool
}

/// What a split does with the pattern's matches (`SplitDelimiterBehavior`).
enum SplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Cuts `piece` by `segments` (consecutive ranges covering it, flagged when matched),
    /// dropping empty results, exactly like `NormalizedString::split`.
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
        var out: [TextPiece] = []
        out.reserveCapacity(kept.count)
        for (r, remove) in kept where !remove && !r.isEmpty {
            out.append(TextPiece(scalars: Array(piece.scalars[r]),
                                 atStart: piece.atStart && r.lowerBound == 0))
        }
        return out
    }
}

/// A split pattern: one of the known regexes or a literal string.
enum SplitPattern {
    case regex(SplitRegex)
    case literal([Unicode.Scalar])

    /// Consecutive segments covering `s`, each flagged whether it is a match.
    func segments(_ s: [Unicode.Scalar], invert: Bool) -> [(Range<Int>, Bool)] {
        var out: [(Range<Int>, Bool)] = []
        switch self {
        case .regex(let re):
            var start = 0
            for end in re.matchEnds(s) {
                out.append((start..<end, !invert))
                start = end
            }
        case .literal(let lit):
            var prev = 0
            for r in findLiteral(lit, in: s) {
                if prev < r.lowerBound { out.append((prev..<r.lowerBound, invert)) }
                out.append((r, !invert))
                prev = r.upperBound
            }
            if prev < s.count { out.append((prev..<s.count, invert)) }
        }
        return out
    }
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

/// Replaces every occurrence of `needle` in `hay` by `with`.
func replaceLiteral(_ needle: [Unicode.Scalar], with: [Unicode.Scalar], in hay: [Unicode.Scalar]) -> [Unicode.Scalar] {
    let hits = findLiteral(needle, in: hay)
    if hits.isEmpty { return hay }
    var out: [Unicode.Scalar] = []
    out.reserveCapacity(hay.count + hits.count * max(0, with.count - needle.count))
    var prev = 0
    for r in hits {
        out.append(contentsOf: hay[prev..<r.lowerBound])
        out.append(contentsOf: with)
        prev = r.upperBound
    }
    out.append(contentsOf: hay[prev...])
    return out
}

// MARK: - normalizers

/// A tokenizer.json `normalizer`.
indirect enum Normalizer {
    case sequence([Normalizer])
    case prepend([Unicode.Scalar])
    case replace(pattern: [Unicode.Scalar], content: [Unicode.Scalar])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)

    /// Normalizes one piece of text (the text between added tokens).
    func apply(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        switch self {
        case .sequence(let list):
            return list.reduce(s) { $1.apply($0) }
        case .prepend(let p):
            return s.isEmpty ? s : p + s  // `Prepend` leaves empty text alone
        case .replace(let pattern, let content):
            return replaceLiteral(pattern, with: content, in: s)
        case .nfc: return Self.scalars(Self.string(s).precomposedStringWithCanonicalMapping)
        case .nfd: return Self.scalars(Self.string(s).decomposedStringWithCanonicalMapping)
        case .nfkc: return Self.scalars(Self.string(s).precomposedStringWithCompatibilityMapping)
        case .nfkd: return Self.scalars(Self.string(s).decomposedStringWithCompatibilityMapping)
        case .lowercase:
            // Per scalar full lowercase mapping without context, like Rust's `char::to_lowercase`.
            var out: [Unicode.Scalar] = []
            out.reserveCapacity(s.count)
            for x in s {
                if x.value < 0x80 {
                    out.append(x.value >= 0x41 && x.value <= 0x5A ? Unicode.Scalar(UInt8(x.value + 0x20)) : x)
                } else {
                    out.append(contentsOf: x.properties.lowercaseMapping.unicodeScalars)
                }
            }
            return out
        case .strip(let left, let right):
            var lo = 0, hi = s.count
            if left { while lo < hi && s[lo].properties.isWhitespace { lo += 1 } }
            if right { while hi > lo && s[hi - 1].properties.isWhitespace { hi -= 1 } }
            return Array(s[lo..<hi])
        }
    }

    private static func string(_ s: [Unicode.Scalar]) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: s)
        return String(v)
    }

    private static func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

    /// Parses a tokenizer.json `normalizer` object (nil for JSON null).
    static func parse(_ json: JSONValue?, file: String) throws -> Normalizer? {
        guard let o = json, !o.isNull else { return nil }
        guard let type = o["type"]?.string else {
            throw ILAError(file: file, "normalizer is not an object with a \"type\"")
        }
        switch type {
        case "Sequence":
            guard let list = o["normalizers"]?.array else {
                throw ILAError(file: file, "Sequence normalizer has no \"normalizers\" list")
            }
            return .sequence(try list.compactMap { try parse($0, file: file) })
        case "Prepend":
            guard let p = o["prepend"]?.string else { throw ILAError(file: file, "Prepend normalizer has no \"prepend\" string") }
            return .prepend(Array(p.unicodeScalars))
        case "Replace":
            guard let content = o["content"]?.string else {
                throw ILAError(file: file, "Replace normalizer has no \"content\" string")
            }
            let pattern = try parseLiteralPattern(o["pattern"], what: "Replace normalizer", file: file)
            return .replace(pattern: pattern, content: Array(content.unicodeScalars))
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "Strip":
            return .strip(left: o["strip_left"]?.bool ?? true, right: o["strip_right"]?.bool ?? true)
        default:
            throw ILAError(file: file, "normalizer type \(type) is not supported")
        }
    }
}

/// A `{"String": s}` pattern (a `{"Regex": r}` is accepted only when `r` has no regex syntax).
private func parseLiteralPattern(_ json: JSONValue?, what: String, file: String) throws -> [Unicode.Scalar] {
    guard let o = json, o.isObject else { throw ILAError(file: file, "\(what) has no \"pattern\" object") }
    if let s = o["String"]?.string, !s.isEmpty { return Array(s.unicodeScalars) }
    if let r = o["Regex"]?.string {
        let meta = Set("\\^$.|?*+()[]{}")
        if !r.isEmpty && !r.contains(where: { meta.contains($0) }) { return Array(r.unicodeScalars) }
        throw ILAError(file: file, "\(what) regex pattern \(r) is not supported")
    }
    throw ILAError(file: file, "\(what) pattern is neither a non-empty String nor a Regex")
}

// MARK: - pre-tokenizers

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
    case split(SplitPattern, SplitBehavior, invert: Bool)

    /// Runs this pre-tokenizer over every piece.
    func apply(_ pieces: [TextPiece]) -> [TextPiece] {
        switch self {
        case .sequence(let list):
            return list.reduce(pieces) { $1.apply($0) }
        case .byteLevel(let addPrefixSpace, let useRegex):
            var out: [TextPiece] = []
            out.reserveCapacity(pieces.count * 4)
            for var p in pieces {
                if addPrefixSpace && p.scalars.first != " " { p.scalars.insert(" ", at: 0) }
                if useRegex {
                    var start = 0
                    for end in SplitRegex.gpt2.matchEnds(p.scalars) {
                        out.append(Self.byteMapped(p.scalars[start..<end], atStart: p.atStart && start == 0))
                        start = end
                    }
                } else if !p.scalars.isEmpty {
                    out.append(Self.byteMapped(p.scalars[...], atStart: p.atStart))
                }
            }
            return out
        case .metaspace(let replacement, let scheme, let split):
            var out: [TextPiece] = []
            for var p in pieces {
                p.scalars = p.scalars.map { $0 == " " ? replacement : $0 }
                let prepend: Bool
                switch scheme {
                case .always: prepend = p.scalars.first != replacement
                case .first: prepend = p.scalars.first != replacement && p.atStart
                case .never: prepend = false
                }
                if prepend { p.scalars.insert(replacement, at: 0) }
                if split {
                    let segs = SplitPattern.literal([replacement]).segments(p.scalars, invert: false)
                    out.append(contentsOf: SplitBehavior.mergedWithNext.apply(p, segs))
                } else if !p.scalars.isEmpty {
                    out.append(p)
                }
            }
            return out
        case .split(let pattern, let behavior, let invert):
            var out: [TextPiece] = []
            for p in pieces {
                out.append(contentsOf: behavior.apply(p, pattern.segments(p.scalars, invert: invert)))
            }
            return out
        }
    }

    /// The UTF-8 bytes of `s`, each replaced by its printable byte-level scalar.
    private static func byteMapped(_ s: ArraySlice<Unicode.Scalar>, atStart: Bool) -> TextPiece {
        let table = ByteLevelMap.scalars
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        for x in s {
            let v = x.value
            if v < 0x80 {
                out.append(table[Int(v)])
            } else {
                if let bytes = UTF8.encode(x) { for b in bytes { out.append(table[Int(b)]) } }
            }
        }
        return TextPiece(scalars: out, atStart: atStart)
    }

    /// Parses a tokenizer.json `pre_tokenizer` object (nil for JSON null).
    static func parse(_ json: JSONValue?, file: String) throws -> PreTokenizer? {
        guard let o = json, !o.isNull else { return nil }
        guard let type = o["type"]?.string else {
            throw ILAError(file: file, "pre_tokenizer is not an object with a \"type\"")
        }
        switch type {
        case "Sequence":
            guard let list = o["pretokenizers"]?.array else {
                throw ILAError(file: file, "Sequence pre_tokenizer has no \"pretokenizers\" list")
            }
            return .sequence(try list.compactMap { try parse($0, file: file) })
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: o["add_prefix_space"]?.bool ?? true,
                              useRegex: o["use_regex"]?.bool ?? true)
        case "Metaspace":
            guard let r = o["replacement"]?.string, r.unicodeScalars.count == 1,
                  let replacement = r.unicodeScalars.first else {
                throw ILAError(file: file, "Metaspace pre_tokenizer needs a one-character \"replacement\"")
            }
            var scheme = PrependScheme.always
            if let s = o["prepend_scheme"]?.string {
                guard let parsed = PrependScheme(rawValue: s) else {
                    throw ILAError(file: file, "Metaspace prepend_scheme \(s) is not always, first or never")
                }
                scheme = parsed
            } else if let add = o["add_prefix_space"]?.bool {
                scheme = add ? .always : .never  // the pre-0.19 spelling
            }
            return .metaspace(replacement: replacement, scheme: scheme, split: o["split"]?.bool ?? true)
        case "Split":
            let behaviorName = o["behavior"]?.string ?? "Isolated"
            guard let behavior = SplitBehavior(rawValue: behaviorName) else {
                throw ILAError(file: file, "Split pre_tokenizer behavior \(behaviorName) is not supported")
            }
            guard let p = o["pattern"], p.isObject else {
                throw ILAError(file: file, "Split pre_tokenizer has no \"pattern\" object")
            }
            let pattern: SplitPattern
            if let r = p["Regex"]?.string {
                guard let re = SplitRegex(source: r) else {
                    throw ILAError(file: file, "Split pre_tokenizer regex \(r) is not supported "
                                   + "(known: the GPT-2, Llama 3 and Qwen2 patterns)")
                }
                pattern = .regex(re)
            } else if let s = p["String"]?.string, !s.isEmpty {
                pattern = .literal(Array(s.unicodeScalars))
            } else {
                throw ILAError(file: file, "Split pre_tokenizer pattern is neither a non-empty String nor a Regex")
            }
            return .split(pattern, behavior, invert: o["invert"]?.bool ?? false)
        default:
            throw ILAError(file: file, "pre_tokenizer type \(type) is not supported "
                           + "(supported: ByteLevel, Metaspace, Split, Sequence)")
        }
    }
}
