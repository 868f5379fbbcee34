// The split regexes of byte-level BPE tokenizers, hand-coded over Unicode scalars.
//
// Hugging Face `tokenizers` runs these patterns through Oniguruma. The most used ones are
// recognised by their exact source string and run by a matcher that reproduces Oniguruma's
// leftmost, first-alternative-wins backtracking result several times faster than `OnigRegex`
// (a test checks the two agree).
// Oniguruma's classes for UTF-8 text: `\s` is the Unicode White_Space set (including U+0085 and
// U+00A0, excluding U+001C…U+001F and U+200B), `\p{L}` the L* general categories, `\p{N}` N*,
// all of Unicode 16 (`CharInfo`). Any other pattern goes to the general engine (`OnigRegex`).

/// Class bits of one scalar, as the split patterns see it.
@usableFromInline
struct ScalarClass {
    @usableFromInline static let letter: UInt8 = 1
    @usableFromInline static let number: UInt8 = 2
    @usableFromInline static let space: UInt8 = 4
    /// `\r` or `\n` (also has `space`).
    @usableFromInline static let newline: UInt8 = 8

    /// The class bits of `s`; ASCII is decided inline, the rest by its Unicode properties.
    @inline(__always)
    static func of(_ s: Unicode.Scalar) -> UInt8 {
        let v = s.value
        if v < 0x80 {
            if (v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A) { return letter }
            if v >= 0x30 && v <= 0x39 { return number }
            if v == 0x0A || v == 0x0D { return space | newline }
            if v == 0x20 || (v >= 0x09 && v <= 0x0C) { return space }
            return 0
        }
        return nonASCII(s)
    }

    /// Oniguruma's view (Unicode 16, see `CharInfo`).
    static func nonASCII(_ s: Unicode.Scalar) -> UInt8 {
        let info = CharInfo.of(s)
        let cat = CharInfo.category(info)
        if cat & GC.letters != 0 { return letter }
        if cat & GC.numbers != 0 { return number }
        return info & CharInfo.space != 0 ? space : 0
    }
}

/// A split pattern a tokenizer.json may name, each with a hand-written matcher.
enum SplitRegex: Equatable {
    /// GPT-2 / the ByteLevel pre-tokenizer's built-in pattern.
    case gpt2
    /// Llama 3 (`maxDigits` 3) and Qwen2 (`maxDigits` 1).
    case llama3(maxDigits: Int)

    static let gpt2Source =
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Source =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Source =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The matcher for a regex source string, or nil when it is not one we know.
    init?(source: String) {
        switch source {
        case Self.gpt2Source: self = .gpt2
        case Self.llama3Source: self = .llama3(maxDigits: 3)
        case Self.qwen2Source: self = .llama3(maxDigits: 1)
        default: return nil
        }
    }

    /// The end (exclusive) of the match starting at `i`. Every supported pattern matches at
    /// every position with at least one scalar, so the matches tile the text.
    @inline(__always)
    func matchEnd(_ s: [Unicode.Scalar], _ c: [UInt8], at i: Int) -> Int {
        switch self {
        case .gpt2: return Self.gpt2End(s, c, i)
        case .llama3(let d): return Self.llama3End(s, c, i, maxDigits: d)
        }
    }

    /// Tiles `s` with consecutive matches; returns their end offsets.
    func matchEnds(_ s: [Unicode.Scalar]) -> [Int] {
        let classes = s.map(ScalarClass.of)
        var ends: [Int] = []
        ends.reserveCapacity(s.count / 3 + 1)
        var i = 0
        while i < s.count {
            let e = matchEnd(s, classes, at: i)
            ends.append(e)
            i = e
        }
        return ends
    }

    // MARK: - matchers

    private static let apostrophe: UInt32 = 0x27
    private static let spaceChar: UInt32 = 0x20

    @inline(__always)
    private static func isOther(_ c: UInt8) -> Bool {
        c & (ScalarClass.letter | ScalarClass.number | ScalarClass.space) == 0
    }

    /// The length of a run starting at `i` of scalars whose classes satisfy `pred`.
    @inline(__always)
    private static func run(_ c: [UInt8], from i: Int, _ pred: (UInt8) -> Bool) -> Int {
        var j = i
        while j < c.count && pred(c[j]) { j += 1 }
        return j
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: the run minus its last scalar when a
    /// non-space follows and the run is longer than one, else the whole run.
    @inline(__always)
    private static func whitespaceEnd(_ c: [UInt8], _ i: Int) -> Int {
        let k = run(c, from: i) { $0 & ScalarClass.space != 0 }
        if k == c.count { return k }
        return k - 1 > i ? k - 1 : k
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`, optionally case-insensitive (with Unicode case folding,
    /// which lets U+017F LONG S stand for s, as Oniguruma's `(?i)` does).
    @inline(__always)
    private static func contractionEnd(_ s: [Unicode.Scalar], _ i: Int, caseless: Bool) -> Int? {
        guard s[i].value == apostrophe, i + 1 < s.count else { return nil }
        func lower(_ x: Unicode.Scalar) -> UInt32 {
            let v = x.value
            guard caseless else { return v }
            if v >= 0x41 && v <= 0x5A { return v + 0x20 }
            if v == 0x17F { return 0x73 }  // ſ folds to s
            return v
        }
        let a = lower(s[i + 1])
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return i + 2  // s t m d
        default: break
        }
        guard i + 2 < s.count else { return nil }
        let b = lower(s[i + 2])
        switch (a, b) {
        case (0x72, 0x65), (0x76, 0x65), (0x6C, 0x6C): return i + 3  // re ve ll
        default: return nil
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    private static func gpt2End(_ s: [Unicode.Scalar], _ c: [UInt8], _ i: Int) -> Int {
        if let e = contractionEnd(s, i, caseless: false) { return e }
        // ` ?X+`: a leading U+0020 belongs to the run only when an X follows it.
        let lead = s[i].value == spaceChar && i + 1 < s.count ? i + 1 : i
        let cl = c[lead]
        if cl & ScalarClass.letter != 0 { return run(c, from: lead) { $0 & ScalarClass.letter != 0 } }
        if cl & ScalarClass.number != 0 { return run(c, from: lead) { $0 & ScalarClass.number != 0 } }
        if isOther(cl) { return run(c, from: lead, isOther) }
        // `lead` can only differ from `i` if s[i] is a space, so s[i] is whitespace here.
        return whitespaceEnd(c, i)
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,d}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    private static func llama3End(_ s: [Unicode.Scalar], _ c: [UInt8], _ i: Int, maxDigits: Int) -> Int {
        if let e = contractionEnd(s, i, caseless: true) { return e }
        let ci = c[i]
        let isLetter: (UInt8) -> Bool = { $0 & ScalarClass.letter != 0 }
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if isLetter(ci) { return run(c, from: i, isLetter) }
        if ci & (ScalarClass.newline | ScalarClass.number) == 0, i + 1 < c.count, isLetter(c[i + 1]) {
            return run(c, from: i + 1, isLetter)
        }
        // `\p{N}{1,d}`
        if ci & ScalarClass.number != 0 {
            var j = i + 1
            while j < c.count && j - i < maxDigits && c[j] & ScalarClass.number != 0 { j += 1 }
            return j
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let lead = s[i].value == spaceChar && i + 1 < s.count && isOther(c[i + 1]) ? i + 1 : i
        if isOther(c[lead]) {
            let j = run(c, from: lead, isOther)
            return run(c, from: j) { $0 & ScalarClass.newline != 0 }
        }
        // Whitespace from here on. `\s*[\r\n]+`: up to and including the run's last newline.
        let k = run(c, from: i) { $0 & ScalarClass.space != 0 }
        var m = k - 1
        while m >= i && c[m] & ScalarClass.newline == 0 { m -= 1 }
        if m >= i { return m + 1 }
        return whitespaceEnd(c, i)
    }
}

/// GPT-2's reversible map from bytes to printable scalars: printable Latin-1 bytes map to
/// themselves, the other 68 to U+0100 onwards in byte order.
enum ByteLevelMap {
    static let scalars: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let keep = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if keep {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(256 + n) ?? " "  // U+0100…U+0143: always valid
                n += 1
            }
        }
        return table
    }()
}
