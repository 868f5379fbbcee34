import Foundation

// A small backtracking regex engine with Oniguruma's semantics, for the `Split` and `Replace`
// patterns of tokenizer.json (Hugging Face `tokenizers` compiles those with Oniguruma; Foundation's
// NSRegularExpression differs on \p classes, possessive quantifiers and Unicode versions).
//
// Supported, with the meaning Oniguruma gives them (each checked against `tokenizers`):
//   literals; escapes \t \n \r \f \v \a \e \xHH \x{H…} \uHHHH and an escaped non-alphanumeric;
//   . (any scalar but \n); classes \s \S \d \D \w \W \p{X} \P{X} \p{^X} for the general
//   categories (L, Lu, …, Cn) and Any; bracket classes [...] / [^...] with ranges;
//   groups (...) (?:...) (?i:...) (?-i:...), atomic (?>...), lookahead (?=...) (?!...);
//   alternation; quantifiers ? * + {n} {n,} {n,m} {,m}, lazy (…?) and possessive (?+ *+ ++);
//   a quantified quantifier (a{1,3}+ repeats a{1,3}, a{2}? is an optional a{2}, not a lazy
//   one: Oniguruma's Ruby syntax); anchors ^ $ (line; ^ never at the very end), \A \z \Z.
// Case-insensitive groups may hold ASCII text only, and no pair Oniguruma folds from one
// character (ss st ff fi fl: (?i:st) matches "ﬆ").
// Everything else (lookbehind, backreferences, \b, \h, POSIX brackets, class set operations,
// scripts and other properties, inline options, a loop over something that can match empty…)
// is refused with a message naming it, never approximated.

/// Why a pattern is not accepted: the construct, in words.
struct RegexRefusal: Error {
    let message: String
}

/// A set of scalars: a bracket class, a class escape, a case-folded letter.
struct ScalarSet {
    indirect enum Item {
        case range(UInt32, UInt32)
        /// Oniguruma general categories (a `GC` bit mask).
        case categories(UInt32)
        /// White_Space.
        case space
        /// Oniguruma's \w.
        case word
        case not(Item)
        case union(ScalarSet)
    }

    var items: [Item] = []
    var negated = false
    /// Membership of the ASCII scalars, filled by `finalize`.
    private var ascii0: UInt64 = 0
    private var ascii1: UInt64 = 0

    init(items: [Item] = [], negated: Bool = false) {
        self.items = items
        self.negated = negated
        finalize()
    }

    static func single(_ v: UInt32) -> ScalarSet { ScalarSet(items: [.range(v, v)]) }

    mutating func finalize() {
        ascii0 = 0
        ascii1 = 0
        for v in 0..<UInt32(128) {
            guard let x = Unicode.Scalar(v) else { continue }
            if slowContains(v, CharInfo.of(x)) {
                if v < 64 { ascii0 |= 1 << UInt64(v) } else { ascii1 |= 1 << UInt64(v - 64) }
            }
        }
    }

    @inline(__always)
    func contains(_ v: UInt32, _ info: UInt16) -> Bool {
        if v < 64 { return ascii0 >> UInt64(v) & 1 != 0 }
        if v < 128 { return ascii1 >> UInt64(v - 64) & 1 != 0 }
        return slowContains(v, info)
    }

    func slowContains(_ v: UInt32, _ info: UInt16) -> Bool {
        var hit = false
        for item in items where Self.matches(item, v, info) {
            hit = true
            break
        }
        return hit != negated
    }

    private static func matches(_ item: Item, _ v: UInt32, _ info: UInt16) -> Bool {
        switch item {
        case .range(let lo, let hi): return v >= lo && v <= hi
        case .categories(let mask): return CharInfo.category(info) & mask != 0
        case .space: return info & CharInfo.space != 0
        case .word: return info & CharInfo.onigWord != 0
        case .not(let inner): return !matches(inner, v, info)
        case .union(let set): return set.contains(v, info)
        }
    }
}

/// A compiled pattern.
final class OnigRegex: @unchecked Sendable {
    let source: String

    enum Anchor { case lineStart, lineEnd, textStart, textEnd, textEndOrFinalNewline }

    fileprivate indirect enum Node {
        case empty
        case char(UInt32)
        /// An ASCII letter under (?i), by its lowercase value.
        case folded(UInt32)
        case set(ScalarSet)
        case any
        case seq([Node])
        case alt([Node])
        /// max nil: unbounded.
        case rep(Node, min: Int, max: Int?, mode: RepMode)
        case look(Node, negate: Bool)
        case atomic(Node)
        case anchor(Anchor)
    }

    fileprivate enum RepMode { case greedy, lazy, possessive }

    fileprivate enum Op {
        case char(UInt32)
        case set(Int)
        case anyButNewline
        case split(Int, Int)
        case jump(Int)
        /// A loop over one scalar set; max < 0: unbounded.
        case run(set: Int, min: Int, max: Int, mode: RepMode)
        case look(program: Int, negate: Bool)
        case atomic(program: Int)
        case anchor(Anchor)
        case match
    }

    private var programs: [[Op]] = []
    private var sets: [ScalarSet] = []
    /// Scalars that can begin a match, when the pattern cannot match empty.
    private var first: ScalarSet?

    /// Parses and compiles `source`; throws `RegexRefusal` for what is not supported.
    init(_ source: String) throws {
        self.source = source
        var parser = Parser(Array(source.unicodeScalars))
        let node = try parser.parseAll()
        var main: [Op] = []
        try compile(node, into: &main)
        main.append(.match)
        // Sub-programs were appended while compiling main, numbered from 1: main goes first.
        programs.insert(main, at: 0)
        let (f, nullable) = Self.firstSet(node)
        first = nullable ? nil : f
    }

    // MARK: - compiling

    private func addProgram(_ node: Node) throws -> Int {
        var ops: [Op] = []
        try compile(node, into: &ops)
        ops.append(.match)
        // Index 0 is reserved for main, inserted at the end of init.
        programs.append(ops)
        return programs.count  // the final index once main is inserted at 0
    }

    private func addSet(_ s: ScalarSet) -> Int {
        sets.append(s)
        return sets.count - 1
    }

    private static func foldSet(_ lower: UInt32) -> ScalarSet {
        var items: [ScalarSet.Item] = [.range(lower, lower), .range(lower - 0x20, lower - 0x20)]
        if lower == 0x73 { items.append(.range(0x17F, 0x17F)) }   // ſ folds to s
        if lower == 0x6B { items.append(.range(0x212A, 0x212A)) } // K (Kelvin sign) folds to k
        return ScalarSet(items: items)
    }

    /// The scalar set of a node that matches exactly one scalar, if it is one.
    private static func singleSet(_ node: Node) -> ScalarSet? {
        switch node {
        case .char(let c): return .single(c)
        case .folded(let c): return foldSet(c)
        case .set(let s): return s
        case .any: return ScalarSet(items: [.range(0x0A, 0x0A)], negated: true)
        default: return nil
        }
    }

    private func compile(_ node: Node, into ops: inout [Op]) throws {
        if ops.count > 200_000 { throw RegexRefusal(message: "expands to more than 200000 steps") }
        switch node {
        case .empty: break
        case .char(let c): ops.append(.char(c))
        case .folded(let c): ops.append(.set(addSet(Self.foldSet(c))))
        case .set(let s): ops.append(.set(addSet(s)))
        case .any: ops.append(.anyButNewline)
        case .seq(let list):
            for n in list { try compile(n, into: &ops) }
        case .alt(let list):
            var jumps: [Int] = []
            for (k, n) in list.enumerated() {
                if k < list.count - 1 {
                    let split = ops.count
                    ops.append(.split(0, 0))
                    try compile(n, into: &ops)
                    jumps.append(ops.count)
                    ops.append(.jump(0))
                    ops[split] = .split(split + 1, ops.count)
                } else {
                    try compile(n, into: &ops)
                }
            }
            for j in jumps { ops[j] = .jump(ops.count) }
        case .rep(let body, let lo, let hi, let mode):
            if let s = Self.singleSet(body) {
                ops.append(.run(set: addSet(s), min: lo, max: hi ?? -1, mode: mode))
                return
            }
            if mode == .possessive {
                ops.append(.atomic(program: try addProgram(.rep(body, min: lo, max: hi, mode: .greedy))))
                return
            }
            for _ in 0..<lo { try compile(body, into: &ops) }
            if let hi {
                var exits: [Int] = []
                for _ in lo..<hi {
                    exits.append(ops.count)
                    ops.append(.split(0, 0))
                    try compile(body, into: &ops)
                }
                for e in exits { ops[e] = mode == .lazy ? .split(ops.count, e + 1) : .split(e + 1, ops.count) }
            } else {
                let loop = ops.count
                ops.append(.split(0, 0))
                try compile(body, into: &ops)
                ops.append(.jump(loop))
                ops[loop] = mode == .lazy ? .split(ops.count, loop + 1) : .split(loop + 1, ops.count)
            }
        case .look(let body, let negate):
            ops.append(.look(program: try addProgram(body), negate: negate))
        case .atomic(let body):
            ops.append(.atomic(program: try addProgram(body)))
        case .anchor(let a):
            ops.append(.anchor(a))
        }
    }

    /// What can begin a match of `node`, and whether it can match empty (an over-approximation
    /// of the set: lookaheads and anchors are ignored).
    private static func firstSet(_ node: Node) -> (ScalarSet, Bool) {
        switch node {
        case .empty, .look, .anchor: return (ScalarSet(), true)
        case .char, .folded, .set, .any: return (singleSet(node) ?? ScalarSet(), false)
        case .seq(let list):
            var items: [ScalarSet.Item] = []
            for n in list {
                let (s, nullable) = firstSet(n)
                items.append(.union(s))
                if !nullable { return (ScalarSet(items: items), false) }
            }
            return (ScalarSet(items: items), true)
        case .alt(let list):
            var items: [ScalarSet.Item] = []
            var nullable = false
            for n in list {
                let (s, e) = firstSet(n)
                items.append(.union(s))
                nullable = nullable || e
            }
            return (ScalarSet(items: items), nullable)
        case .rep(let body, let lo, _, _):
            let (s, e) = firstSet(body)
            return (s, e || lo == 0)
        case .atomic(let body):
            return firstSet(body)
        }
    }

    fileprivate static func nullable(_ node: Node) -> Bool { firstSet(node).1 }

    // MARK: - matching

    private struct Frame {
        var pc: Int
        var pos: Int
        var aux: Int
        var set: Int
        /// 0: resume at (pc, pos); 1: a greedy run giving back one scalar; 2: a lazy run taking one more.
        var kind: UInt8
    }

    /// Backtracking steps one match attempt may take, like Oniguruma's retry-limit-in-match
    /// (10 000 000): where `tokenizers` gives up with an error, matching stops here instead of
    /// running for ever (there is no right answer to match).
    static let backtrackLimit = 10_000_000

    /// Runs program `k` at `start`; the end of the first match in priority order, or nil.
    /// `budget` counts down the backtracking steps left.
    private func execute(_ k: Int, _ start: Int, _ s: UnsafeBufferPointer<Unicode.Scalar>,
                         _ info: UnsafeBufferPointer<UInt16>, _ stack: inout [Frame], _ budget: inout Int) -> Int? {
        let base = stack.count
        defer { stack.removeSubrange(base...) }
        let n = s.count
        var pc = 0
        var pos = start
        return programs[k].withUnsafeBufferPointer { prog -> Int? in
            while true {
                var ok = true
                switch prog[pc] {
                case .char(let c):
                    if pos < n && s[pos].value == c { pos += 1; pc += 1 } else { ok = false }
                case .set(let j):
                    if pos < n && sets[j].contains(s[pos].value, info[pos]) { pos += 1; pc += 1 } else { ok = false }
                case .anyButNewline:
                    if pos < n && s[pos].value != 0x0A { pos += 1; pc += 1 } else { ok = false }
                case .split(let a, let b):
                    stack.append(Frame(pc: b, pos: pos, aux: 0, set: 0, kind: 0))
                    pc = a
                case .jump(let a):
                    pc = a
                case .run(let j, let lo, let hi, let mode):
                    let set = sets[j]
                    let limit = hi < 0 ? n : min(n, pos + hi)
                    if mode == .lazy {
                        var e = pos
                        while e < pos + lo {
                            guard e < n && set.contains(s[e].value, info[e]) else { ok = false; break }
                            e += 1
                        }
                        if ok {
                            if e < limit { stack.append(Frame(pc: pc + 1, pos: e, aux: limit, set: j, kind: 2)) }
                            pos = e
                            pc += 1
                        }
                    } else {
                        var e = pos
                        while e < limit && set.contains(s[e].value, info[e]) { e += 1 }
                        if e - pos < lo {
                            ok = false
                        } else {
                            if mode == .greedy && e > pos + lo {
                                stack.append(Frame(pc: pc + 1, pos: e, aux: pos + lo, set: j, kind: 1))
                            }
                            pos = e
                            pc += 1
                        }
                    }
                case .look(let sub, let negate):
                    let found = execute(sub, pos, s, info, &stack, &budget) != nil
                    if found != negate { pc += 1 } else { ok = false }
                case .atomic(let sub):
                    if let e = execute(sub, pos, s, info, &stack, &budget) { pos = e; pc += 1 } else { ok = false }
                case .anchor(let a):
                    let hit: Bool
                    switch a {
                    // Oniguruma's ^ does not match at the very end, even after a newline.
                    case .lineStart: hit = pos == 0 || (pos < n && s[pos - 1].value == 0x0A)
                    case .lineEnd: hit = pos == n || s[pos].value == 0x0A
                    case .textStart: hit = pos == 0
                    case .textEnd: hit = pos == n
                    case .textEndOrFinalNewline: hit = pos == n || (pos == n - 1 && s[pos].value == 0x0A)
                    }
                    if hit { pc += 1 } else { ok = false }
                case .match:
                    return pos
                }
                if ok { continue }
                // Backtrack to the most recent alternative.
                budget -= 1
                if budget < 0 { return nil }
                while true {
                    guard stack.count > base, let f = stack.popLast() else { return nil }
                    if f.kind == 0 {
                        pc = f.pc
                        pos = f.pos
                        break
                    } else if f.kind == 1 {
                        let p = f.pos - 1
                        if p > f.aux { stack.append(Frame(pc: f.pc, pos: p, aux: f.aux, set: f.set, kind: 1)) }
                        pc = f.pc
                        pos = p
                        break
                    } else if f.pos < f.aux && sets[f.set].contains(s[f.pos].value, info[f.pos]) {
                        let p = f.pos + 1
                        if p < f.aux { stack.append(Frame(pc: f.pc, pos: p, aux: f.aux, set: f.set, kind: 2)) }
                        pc = f.pc
                        pos = p
                        break
                    }
                }
            }
        }
    }

    /// The matches of `find_iter` over `s` (the `onig` crate's iterator: leftmost first-priority
    /// matches, searching on from each match's end; an empty match right where the previous
    /// match ended is skipped by moving on one scalar). Ranges are scalar offsets.
    func matches(in s: [Unicode.Scalar]) -> [Range<Int>] {
        let n = s.count
        let info = CharInfo.of(s[...])
        var out: [Range<Int>] = []
        var stack: [Frame] = []
        stack.reserveCapacity(64)
        s.withUnsafeBufferPointer { sp in
            info.withUnsafeBufferPointer { ip in
                var lastEnd = 0
                var lastMatchEnd = -1
                var budget = 0
                search: while lastEnd <= n {
                    var found: Range<Int>?
                    var p = lastEnd
                    while p <= n {
                        if let f = first {
                            // A match needs at least one scalar, from the first set.
                            while p < n && !f.contains(sp[p].value, ip[p]) { p += 1 }
                            if p == n { break }
                        }
                        budget = Self.backtrackLimit  // per match attempt, as Oniguruma counts
                        let e = execute(0, p, sp, ip, &stack, &budget)
                        if budget < 0 { break search }
                        if let e {
                            found = p..<e
                            break
                        }
                        p += 1
                    }
                    guard let m = found else { break }
                    if m.isEmpty && m.upperBound == lastMatchEnd {
                        lastEnd += 1
                        continue
                    }
                    out.append(m)
                    lastEnd = m.upperBound
                    lastMatchEnd = m.upperBound
                }
            }
        }
        return out
    }
}

// MARK: - parsing

private struct Parser {
    typealias Node = OnigRegex.Node
    let src: [Unicode.Scalar]
    var i = 0
    /// Group nesting so far (bounded: parsing, compiling and matching recurse on it).
    private var depth = 0

    init(_ src: [Unicode.Scalar]) { self.src = src }

    private var atEnd: Bool { i >= src.count }
    private func peek(_ k: Int = 0) -> UInt32? { i + k < src.count ? src[i + k].value : nil }

    private func refuse(_ what: String) -> RegexRefusal {
        RegexRefusal(message: "\(what) (at character \(i + 1))")
    }

    mutating func parseAll() throws -> Node {
        let node = try parseAlternation(caseless: false)
        if !atEnd { throw refuse("unmatched ')'") }
        return node
    }

    private mutating func parseAlternation(caseless: Bool) throws -> Node {
        var branches = [try parseSequence(caseless: caseless)]
        while peek() == 0x7C {  // |
            i += 1
            branches.append(try parseSequence(caseless: caseless))
        }
        return branches.count == 1 ? branches[0] : .alt(branches)
    }

    private mutating func parseSequence(caseless: Bool) throws -> Node {
        var items: [Node] = []
        while let c = peek(), c != 0x7C, c != 0x29 {  // | )
            items.append(try parseQuantified(caseless: caseless))
        }
        if caseless {
            // Oniguruma folds "ss", "st", "ff", "fi", "fl" from one character (ß, ﬆ, ﬀ, ﬁ, ﬂ).
            func letter(_ n: Node) -> UInt32? {
                if case .folded(let c) = n { return c }
                if case .rep(let b, _, _, _) = n, case .folded(let c) = b { return c }
                return nil
            }
            for k in items.indices.dropFirst() {
                if let a = letter(items[k - 1]), let b = letter(items[k]) {
                    let pair = String(UnicodeScalar(UInt8(a))) + String(UnicodeScalar(UInt8(b)))
                    if ["ss", "st", "ff", "fi", "fl"].contains(pair) {
                        throw refuse("case-insensitive \"\(pair)\" (Oniguruma matches it against one folded character)")
                    }
                }
            }
        }
        if items.isEmpty { return .empty }
        return items.count == 1 ? items[0] : .seq(items)
    }

    private mutating func parseQuantified(caseless: Bool) throws -> Node {
        var node = try parseAtom(caseless: caseless)
        while let c = peek() {
            var lo = 0, hi: Int? = nil
            var interval = false, fixed = false
            switch c {
            case 0x2A: lo = 0; hi = nil; i += 1            // *
            case 0x2B: lo = 1; hi = nil; i += 1            // +
            case 0x3F: lo = 0; hi = 1; i += 1              // ?
            case 0x7B:                                    // {
                guard let (a, b, len, comma) = intervalAt(i) else { return node }  // a literal '{' follows
                lo = a; hi = b; i += len
                interval = true
                fixed = !comma  // Oniguruma reads a{n}? as (?:a{n})? and a{n}+ as (?:a{n})+
            default:
                return node
            }
            var mode = OnigRegex.RepMode.greedy
            if peek() == 0x3F && !(interval && fixed) {  // ? (after a fixed {n} it is "optional", see below)
                i += 1
                mode = .lazy
            } else if !interval && peek() == 0x2B {  // + after ? * + (after {..} it repeats again)
                i += 1
                mode = .possessive
            }
            if let hi, hi < lo { throw refuse("interval {\(lo),\(hi)} has its maximum below its minimum") }
            if lo > 1000 || (hi ?? 0) > 1000 { throw refuse("an interval over 1000") }
            if (hi == nil || hi! > 1) && OnigRegex.nullable(node) {
                throw refuse("a repeated subpattern that can match empty")
            }
            if hi == 0 { node = .empty; continue }
            if lo == 1 && hi == 1 { continue }
            node = .rep(node, min: lo, max: hi, mode: mode)
        }
        return node
    }

    /// `{n}`, `{n,}`, `{n,m}` or `{,m}` at `k`: (min, max, length, has a comma), nil when not an
    /// interval (then '{' is a literal).
    private func intervalAt(_ k: Int) -> (Int, Int?, Int, Bool)? {
        var j = k + 1
        func number() -> Int? {
            var v: Int? = nil
            while j < src.count, let d = digit(src[j].value) {
                v = (v ?? 0) * 10 + d
                if v! > 100_000 { return v }
                j += 1
            }
            return v
        }
        let a = number()
        guard j < src.count else { return nil }
        if src[j].value == 0x7D {  // }
            guard let a else { return nil }
            return (a, a, j - k + 1, false)
        }
        guard src[j].value == 0x2C else { return nil }  // ,
        j += 1
        let b = number()
        guard j < src.count, src[j].value == 0x7D else { return nil }
        if a == nil && b == nil { return nil }
        return (a ?? 0, b, j - k + 1, true)
    }

    private func digit(_ v: UInt32) -> Int? { v >= 0x30 && v <= 0x39 ? Int(v - 0x30) : nil }

    private mutating func parseAtom(caseless: Bool) throws -> Node {
        guard let c = peek() else { throw refuse("unexpected end") }
        switch c {
        case 0x28:  // (
            i += 1
            depth += 1
            defer { depth -= 1 }
            if depth > 64 { throw refuse("groups nested more than 64 deep") }
            var body: Node
            if peek() == 0x3F {  // ?
                i += 1
                switch peek() {
                case 0x3A:  // :
                    i += 1
                    body = try parseAlternation(caseless: caseless)
                case 0x69 where peek(1) == 0x3A:  // i:
                    i += 2
                    body = try parseAlternation(caseless: true)
                case 0x2D where peek(1) == 0x69 && peek(2) == 0x3A:  // -i:
                    i += 3
                    body = try parseAlternation(caseless: false)
                case 0x3D, 0x21:  // = !
                    let negate = peek() == 0x21
                    i += 1
                    body = .look(try parseAlternation(caseless: caseless), negate: negate)
                case 0x3E:  // >
                    i += 1
                    body = .atomic(try parseAlternation(caseless: caseless))
                case 0x3C where peek(1) == 0x3D || peek(1) == 0x21:
                    throw refuse("lookbehind (?<\(peek(1) == 0x3D ? "=" : "!")…)")
                default:
                    let shown = peek().flatMap { Unicode.Scalar($0) }.map { String($0) } ?? ""
                    throw refuse("group (?\(shown)…")
                }
            } else {
                body = try parseAlternation(caseless: caseless)  // a capture group: captures are not used
            }
            guard peek() == 0x29 else { throw refuse("unterminated group") }
            i += 1
            return body
        case 0x5B:  // [
            return .set(try parseClass(caseless: caseless))
        case 0x2E:  // .
            i += 1
            return .any
        case 0x5E:  // ^
            i += 1
            return .anchor(.lineStart)
        case 0x24:  // $
            i += 1
            return .anchor(.lineEnd)
        case 0x5C:  // backslash
            return try parseEscape(caseless: caseless)
        case 0x2A, 0x2B, 0x3F:
            throw refuse("a quantifier with nothing to repeat")
        case 0x7B where intervalAt(i) != nil:
            throw refuse("an interval with nothing to repeat")
        default:
            i += 1
            return try literal(c, caseless: caseless)
        }
    }

    private func literal(_ c: UInt32, caseless: Bool) throws -> Node {
        guard caseless else { return .char(c) }
        if c >= 0x41 && c <= 0x5A { return .folded(c + 0x20) }
        if c >= 0x61 && c <= 0x7A { return .folded(c) }
        if c < 0x80 { return .char(c) }
        throw refuse("a case-insensitive non-ASCII character")
    }

    /// What an escape outside or inside a class stands for.
    private enum Escaped {
        case char(UInt32)
        case set(ScalarSet.Item)
        case anchor(OnigRegex.Anchor)
    }

    private mutating func escape(inClass: Bool) throws -> Escaped {
        i += 1  // the backslash
        guard let c = peek() else { throw refuse("a trailing backslash") }
        i += 1
        switch c {
        case 0x74: return .char(0x09)  // t
        case 0x6E: return .char(0x0A)  // n
        case 0x72: return .char(0x0D)  // r
        case 0x66: return .char(0x0C)  // f
        case 0x76: return .char(0x0B)  // v
        case 0x61: return .char(0x07)  // a
        case 0x65: return .char(0x1B)  // e
        case 0x78:  // x
            if peek() == 0x7B {
                i += 1
                var v: UInt32 = 0, digits = 0
                while let h = peek(), let d = hexDigit(h) { v = v &* 16 &+ d; digits += 1; i += 1 }
                guard digits >= 1, digits <= 8, peek() == 0x7D else { throw refuse("a bad \\x{…} escape") }
                i += 1
                guard Unicode.Scalar(v) != nil else { throw refuse("\\x{\(String(v, radix: 16))} is not a scalar value") }
                return .char(v)
            }
            var v: UInt32 = 0, digits = 0
            while digits < 2, let h = peek(), let d = hexDigit(h) { v = v * 16 + d; digits += 1; i += 1 }
            guard digits >= 1 else { throw refuse("a bad \\x escape") }
            return .char(v)
        case 0x75:  // u
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let h = peek(), let d = hexDigit(h) else { throw refuse("a bad \\u escape") }
                v = v * 16 + d
                i += 1
            }
            guard Unicode.Scalar(v) != nil else { throw refuse("\\u\(String(v, radix: 16)) is not a scalar value") }
            return .char(v)
        case 0x73: return .set(.space)                                 // s
        case 0x53: return .set(.not(.space))                           // S
        case 0x64: return .set(.categories(GC.Nd.bit))                 // d
        case 0x44: return .set(.not(.categories(GC.Nd.bit)))           // D
        case 0x77: return .set(.word)                                  // w
        case 0x57: return .set(.not(.word))                            // W
        case 0x70, 0x50:  // p P
            guard peek() == 0x7B else { throw refuse("\\\(c == 0x70 ? "p" : "P") without {…}") }
            i += 1
            var name = ""
            var negate = c == 0x50
            if peek() == 0x5E { negate.toggle(); i += 1 }  // ^
            while let h = peek(), h != 0x7D {
                if h != 0x20 && h != 0x5F && h != 0x2D, let x = Unicode.Scalar(h) { name.unicodeScalars.append(x) }
                i += 1
            }
            guard peek() == 0x7D else { throw refuse("an unterminated \\p{…}") }
            i += 1
            guard let mask = GC.mask(named: name) else { throw refuse("the property \\p{\(name)}") }
            return .set(negate ? .not(.categories(mask)) : .categories(mask))
        case 0x41 where !inClass: return .anchor(.textStart)               // A
        case 0x7A where !inClass: return .anchor(.textEnd)                 // z
        case 0x5A where !inClass: return .anchor(.textEndOrFinalNewline)   // Z
        default:
            if let x = Unicode.Scalar(c), x.properties.isAlphabetic || (c >= 0x30 && c <= 0x39) {
                throw refuse("the escape \\\(String(x))")
            }
            return .char(c)  // an escaped punctuation or symbol character stands for itself
        }
    }

    private func hexDigit(_ v: UInt32) -> UInt32? {
        switch v {
        case 0x30...0x39: return v - 0x30
        case 0x41...0x46: return v - 0x41 + 10
        case 0x61...0x66: return v - 0x61 + 10
        default: return nil
        }
    }

    private mutating func parseEscape(caseless: Bool) throws -> Node {
        switch try escape(inClass: false) {
        case .char(let c):
            if caseless { return try literal(c, caseless: true) }
            return .char(c)
        case .set(let item):
            if caseless {
                guard case .space = item else {
                    if case .categories(let m) = item, m == GC.Nd.bit { return .set(ScalarSet(items: [item])) }
                    throw refuse("a case-insensitive class escape")
                }
            }
            return .set(ScalarSet(items: [item]))
        case .anchor(let a):
            return .anchor(a)
        }
    }

    private mutating func parseClass(caseless: Bool) throws -> ScalarSet {
        i += 1  // [
        var negated = false
        if peek() == 0x5E { negated = true; i += 1 }
        var items: [ScalarSet.Item] = []
        var firstItem = true
        func add(_ lo: UInt32, _ hi: UInt32) throws {
            if caseless {
                guard hi < 0x80 else { throw refuse("a case-insensitive non-ASCII class") }
                for v in lo...hi {
                    if v >= 0x61 && v <= 0x7A || v >= 0x41 && v <= 0x5A {
                        let l = v | 0x20
                        items.append(.range(l, l))
                        items.append(.range(l - 0x20, l - 0x20))
                        if l == 0x73 { items.append(.range(0x17F, 0x17F)) }
                        if l == 0x6B { items.append(.range(0x212A, 0x212A)) }
                    } else {
                        items.append(.range(v, v))
                    }
                }
            } else {
                items.append(.range(lo, hi))
            }
        }
        while true {
            guard let c = peek() else { throw refuse("an unterminated character class") }
            if c == 0x5D && !firstItem { i += 1; break }  // ]
            firstItem = false
            var single: UInt32?
            switch c {
            case 0x5B: throw refuse("a nested or POSIX bracket in a class")
            case 0x26 where peek(1) == 0x26: throw refuse("a class intersection &&")
            case 0x5C:
                switch try escape(inClass: true) {
                case .char(let v): single = v
                case .set(let item):
                    if caseless {
                        var invariant = false
                        if case .space = item { invariant = true }
                        if case .categories(let m) = item, m == GC.Nd.bit { invariant = true }
                        if !invariant { throw refuse("a case-insensitive class escape") }
                    }
                    items.append(item)
                    if peek() == 0x2D && peek(1) != 0x5D { throw refuse("a range from a class escape") }
                case .anchor: throw refuse("an anchor in a class")
                }
            default:
                i += 1
                single = c
            }
            guard let lo = single else { continue }
            // A range lo-hi, unless the '-' is last.
            if peek() == 0x2D, let after = peek(1), after != 0x5D {
                i += 1
                var hi: UInt32
                if after == 0x5C {
                    guard case .char(let v) = try escape(inClass: true) else { throw refuse("a range to a class escape") }
                    hi = v
                } else if after == 0x5B {
                    throw refuse("a nested or POSIX bracket in a class")
                } else {
                    hi = after
                    i += 1
                }
                guard lo <= hi else { throw refuse("a class range out of order") }
                try add(lo, hi)
                if peek() == 0x2D && peek(1) != 0x5D { throw refuse("a '-' right after a class range") }
            } else {
                try add(lo, lo)
            }
        }
        if caseless && negated { throw refuse("a case-insensitive negated class") }
        return ScalarSet(items: items, negated: negated)
    }
}
