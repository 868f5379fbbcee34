import Foundation

// The template language as jinja2 reads it with Hugging Face's environment:
// `trim_blocks=True, lstrip_blocks=True`, newlines normalised to "\n" and one trailing newline
// dropped (keep_trailing_newline=False), `{%- -%}` / `{{- -}}` / `{#- -#}` whitespace control and
// `+` to disable lstrip/trim, the loopcontrols extension (break, continue) and transformers'
// `{% generation %}` tag.

// MARK: - tokens

enum JTok: Equatable {
    case name(String)
    case string(String)
    case int(Int)
    case float(Double)
    case op(String)
}

struct JToken {
    var tok: JTok
    var line: Int
}

enum JSegment {
    case text(String, line: Int)
    case variable([JToken], line: Int)
    case block([JToken], line: Int)
}

/// Splits a template into text, `{{ }}` and `{% %}` segments, applying whitespace control.
struct JinjaLexer {
    static let maxLength = 4_000_000

    static func isSpace(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0: return true
        default: return u.properties.isWhitespace
        }
    }

    static func lex(_ source: String) throws -> [JSegment] {
        // Newlines normalised as jinja2's lexer does; one trailing newline is dropped.
        var src: [Unicode.Scalar] = []
        src.reserveCapacity(source.unicodeScalars.count)
        var it = source.unicodeScalars.makeIterator()
        var pendingCR = false
        while let u = it.next() {
            if pendingCR {
                pendingCR = false
                if u == "\n" { continue }
            }
            if u == "\r" {
                src.append("\n")
                pendingCR = true
            } else {
                src.append(u)
            }
        }
        if src.last == "\n" { src.removeLast() }
        guard src.count <= maxLength else {
            throw JinjaError(.syntax, line: 1, "template is longer than \(maxLength) characters")
        }
        let n = src.count
        var segments: [JSegment] = []
        var pos = 0
        var line = 1
        var lineStarting = true

        func findTagStart(from: Int) -> Int {
            var i = from
            while i + 1 < n {
                if src[i] == "{", src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#" { return i }
                i += 1
            }
            return n
        }
        func newlines(_ a: Int, _ b: Int) -> Int {
            var c = 0
            var i = a
            while i < b { if src[i] == "\n" { c += 1 }; i += 1 }
            return c
        }

        while pos < n {
            let idx = findTagStart(from: pos)
            var text = Array(src[pos..<idx])
            let textLine = line
            line += newlines(pos, idx)
            if idx == n {
                if !text.isEmpty { segments.append(.text(String(String.UnicodeScalarView(text)), line: textLine)) }
                break
            }
            let kind = src[idx + 1]
            var i = idx + 2
            var modifier: Unicode.Scalar? = nil
            if i < n, src[i] == "-" || src[i] == "+" {
                modifier = src[i]
                i += 1
            }
            if modifier == "-" {
                while let last = text.last, isSpace(last) { text.removeLast() }
            } else if modifier != "+" && kind != "{" {
                // lstrip_blocks: spaces before a block or comment tag on its own line.
                var lpos = text.count
                while lpos > 0 && text[lpos - 1] != "\n" { lpos -= 1 }
                if lpos > 0 || lineStarting, lpos < text.count, text[lpos...].allSatisfy(isSpace) {
                    text.removeSubrange(lpos...)
                }
            }
            if !text.isEmpty { segments.append(.text(String(String.UnicodeScalarView(text)), line: textLine)) }
            let tagLine = line

            /// After a tag's end: `-` strips the whitespace that follows, plain `%}`/`#}` one newline.
            func afterEnd(_ j: Int, strip: Unicode.Scalar?, trims: Bool) -> Int {
                var k = j
                if strip == "-" {
                    while k < n && isSpace(src[k]) { k += 1 }
                    lineStarting = k > j && src[k - 1] == "\n"
                } else if strip != "+" && trims && k < n && src[k] == "\n" {
                    k += 1
                    lineStarting = true
                } else {
                    lineStarting = false
                }
                line += newlines(j, k)
                return k
            }

            if kind == "#" {
                var j = i
                var found = -1
                while j + 1 < n {
                    if src[j] == "#" && src[j + 1] == "}" { found = j; break }
                    j += 1
                }
                guard found >= 0 else { throw JinjaError(.syntax, line: tagLine, "comment '{#' is not closed with '#}'") }
                var strip: Unicode.Scalar? = nil
                if found > i, src[found - 1] == "-" || src[found - 1] == "+" { strip = src[found - 1] }
                line += newlines(idx, found + 2)
                pos = afterEnd(found + 2, strip: strip, trims: true)
                continue
            }
            // A tag's tokens up to its end marker (not inside brackets).
            var tokens: [JToken] = []
            var depth = 0
            var closed = false
            while i < n {
                while i < n && isSpace(src[i]) {
                    if src[i] == "\n" { line += 1 }
                    i += 1
                }
                guard i < n else { break }
                if depth == 0 {
                    let close: Unicode.Scalar = kind == "%" ? "%" : "}"
                    var strip: Unicode.Scalar? = nil
                    var j = i
                    if src[j] == "-" || (src[j] == "+" && kind == "%") {
                        strip = src[j]
                        j += 1
                    }
                    if j + 1 < n, src[j] == close, src[j + 1] == "}" {
                        pos = afterEnd(j + 2, strip: strip, trims: kind == "%")
                        closed = true
                        break
                    }
                }
                let (tok, next) = try lexToken(src, i, line: line)
                for k in i..<next where src[k] == "\n" { line += 1 }
                i = next
                if case .op(let o) = tok {
                    if o == "(" || o == "[" || o == "{" { depth += 1 }
                    if o == ")" || o == "]" || o == "}" { depth = max(0, depth - 1) }
                }
                tokens.append(JToken(tok: tok, line: line))
            }
            guard closed else {
                throw JinjaError(.syntax, line: tagLine, kind == "%" ? "block tag '{%' is not closed with '%}'" : "'{{' is not closed with '}}'")
            }
            segments.append(kind == "%" ? .block(tokens, line: tagLine) : .variable(tokens, line: tagLine))
        }
        return segments
    }

    static let twoCharOps: Set<String> = ["**", "//", "==", "!=", "<=", ">="]
    static let oneCharOps: Set<Unicode.Scalar> = ["+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"]

    static func isNameStart(_ u: Unicode.Scalar) -> Bool {
        u == "_" || (u.value < 0x80 && u.properties.isAlphabetic) || (u.value >= 0x80 && u.properties.isXIDStart)
    }
    static func isNameChar(_ u: Unicode.Scalar) -> Bool {
        isNameStart(u) || ("0"..."9").contains(u) || (u.value >= 0x80 && u.properties.isXIDContinue)
    }

    static func lexToken(_ s: [Unicode.Scalar], _ start: Int, line: Int) throws -> (JTok, Int) {
        let n = s.count
        let c = s[start]
        if isNameStart(c) {
            var j = start + 1
            while j < n && isNameChar(s[j]) { j += 1 }
            return (.name(String(String.UnicodeScalarView(s[start..<j]))), j)
        }
        if ("0"..."9").contains(c) {
            var j = start
            var text = ""
            var isFloat = false
            func digits() {
                while j < n, ("0"..."9").contains(s[j]) || (s[j] == "_" && j + 1 < n && ("0"..."9").contains(s[j + 1])) {
                    if s[j] != "_" { text.unicodeScalars.append(s[j]) }
                    j += 1
                }
            }
            digits()
            if j + 1 < n, s[j] == ".", ("0"..."9").contains(s[j + 1]) {
                isFloat = true
                text += "."
                j += 1
                digits()
            }
            if j < n, s[j] == "e" || s[j] == "E" {
                var k = j + 1
                if k < n, s[k] == "+" || s[k] == "-" { k += 1 }
                if k < n, ("0"..."9").contains(s[k]) {
                    isFloat = true
                    text += "e" + (s[j + 1] == "-" ? "-" : "")
                    j = k
                    digits()
                }
            }
            if isFloat {
                guard let d = Double(text) else { throw JinjaError(.syntax, line: line, "invalid number \(text)") }
                return (.float(d), j)
            }
            guard let v = Int(text) else { throw JinjaError(.syntax, line: line, "integer \(text) is too large") }
            return (.int(v), j)
        }
        if c == "'" || c == "\"" {
            var j = start + 1
            var out = String.UnicodeScalarView()
            while true {
                guard j < n else { throw JinjaError(.syntax, line: line, "unterminated string literal") }
                let u = s[j]
                if u == c { j += 1; break }
                if u == "\\", j + 1 < n {
                    let e = s[j + 1]
                    j += 2
                    switch e {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "r": out.append("\r")
                    case "0": out.append("\0")
                    case "a": out.append("\u{07}")
                    case "b": out.append("\u{08}")
                    case "f": out.append("\u{0C}")
                    case "v": out.append("\u{0B}")
                    case "\\", "'", "\"": out.append(e)
                    case "\n": break
                    case "x", "u", "U":
                        let len = e == "x" ? 2 : e == "u" ? 4 : 8
                        guard j + len <= n, let v = UInt32(String(String.UnicodeScalarView(s[j..<j + len])), radix: 16),
                              let scalar = Unicode.Scalar(v) else {
                            throw JinjaError(.syntax, line: line, "invalid \\\(e) escape in a string literal")
                        }
                        out.append(scalar)
                        j += len
                    default:
                        out.append("\\")
                        out.append(e)
                    }
                    continue
                }
                out.append(u)
                j += 1
            }
            return (.string(String(out)), j)
        }
        if start + 1 < n {
            let two = String(String.UnicodeScalarView([c, s[start + 1]]))
            if twoCharOps.contains(two) { return (.op(two), start + 2) }
        }
        if oneCharOps.contains(c) { return (.op(String(c)), start + 1) }
        throw JinjaError(.syntax, line: line, "unexpected character \(pyStringRepr(String(c)))")
    }
}

// MARK: - syntax tree

indirect enum JExpr {
    case literal(JValue)
    case name(String)
    case list([JExpr])
    case tuple([JExpr])
    case dict([(JExpr, JExpr)])
    case attr(JExpr, String)
    case item(JExpr, JExpr)
    case slice(JExpr, JExpr?, JExpr?, JExpr?)
    case call(JExpr, [JExpr], [(String, JExpr)])
    case filter(JExpr, String, [JExpr], [(String, JExpr)])
    case test(JExpr, String, [JExpr], negated: Bool)
    case unary(String, JExpr)
    case binary(String, JExpr, JExpr)
    case compare(JExpr, [(String, JExpr)])
    case and(JExpr, JExpr)
    case or(JExpr, JExpr)
    case not(JExpr)
    case condition(JExpr, then: JExpr, otherwise: JExpr?)
}

enum JSetTarget {
    case names([String])
    case attribute(String, String)
}

indirect enum JStmt {
    case text(String)
    case output(JExpr, line: Int)
    case ifChain([(JExpr, [JStmt])], otherwise: [JStmt], line: Int)
    case forLoop(targets: [String], iterable: JExpr, condition: JExpr?, body: [JStmt], otherwise: [JStmt], line: Int)
    case set(JSetTarget, JExpr, line: Int)
    case setBlock(String, [JStmt], filters: [(String, [JExpr], [(String, JExpr)])], line: Int)
    case macro(name: String, params: [(String, JExpr?)], body: [JStmt], line: Int)
    case callBlock(JExpr, params: [(String, JExpr?)], body: [JStmt], line: Int)
    case filterBlock([(String, [JExpr], [(String, JExpr)])], [JStmt], line: Int)
    case generation([JStmt])
    case breakLoop(line: Int)
    case continueLoop(line: Int)
}

// MARK: - parser

struct JinjaParser {
    private var segments: [JSegment]
    private var at = 0
    private var blockDepth = 0
    static let maxNesting = 64

    static func parse(_ source: String) throws -> [JStmt] {
        var p = JinjaParser(segments: try JinjaLexer.lex(source))
        let (body, end) = try p.parseBody(until: [])
        if let end { throw JinjaError(.syntax, line: end.line, "unexpected '\(end.keyword)'") }
        return body
    }

    private init(segments: [JSegment]) { self.segments = segments }

    /// Tags that are Jinja but not implemented here (refused by name).
    static let unsupportedTags: Set<String> = ["include", "import", "from", "extends", "block", "with", "autoescape",
                                               "raw", "do", "trans", "pluralize", "print", "debug"]

    struct End {
        var keyword: String
        var tokens: ArraySlice<JToken>
        var line: Int
    }

    private mutating func parseBody(until: Set<String>) throws -> ([JStmt], End?) {
        blockDepth += 1
        defer { blockDepth -= 1 }
        guard blockDepth <= Self.maxNesting else {
            throw JinjaError(.unsupported, line: currentLine, "blocks nested deeper than \(Self.maxNesting)")
        }
        var body: [JStmt] = []
        while at < segments.count {
            let seg = segments[at]
            at += 1
            switch seg {
            case .text(let s, _):
                body.append(.text(s))
            case .variable(let toks, let line):
                var e = ExprParser(toks, line: line)
                let expr = try e.parseTupleOrExpression()
                try e.expectEnd("}}")
                body.append(.output(expr, line: line))
            case .block(let toks, let line):
                guard let first = toks.first, case .name(let kw) = first.tok else {
                    throw JinjaError(.syntax, line: line, "a block tag must start with a statement name")
                }
                if until.contains(kw) { return (body, End(keyword: kw, tokens: toks.dropFirst(), line: line)) }
                body.append(try parseStatement(kw, Array(toks.dropFirst()), line: line))
            }
        }
        return (body, nil)
    }

    private var currentLine: Int {
        guard at > 0, at - 1 < segments.count else { return 1 }
        switch segments[at - 1] {
        case .text(_, let l), .variable(_, let l), .block(_, let l): return l
        }
    }

    private mutating func expectEnd(_ end: End?, _ keyword: String, opened: String, line: Int) throws {
        guard let end else { throw JinjaError(.syntax, line: line, "'\(opened)' is never closed (expected '\(keyword)')") }
        if end.keyword != keyword { throw JinjaError(.syntax, line: end.line, "expected '\(keyword)', found '\(end.keyword)'") }
    }

    private mutating func parseStatement(_ kw: String, _ toks: [JToken], line: Int) throws -> JStmt {
        var e = ExprParser(toks, line: line)
        switch kw {
        case "if":
            var branches: [(JExpr, [JStmt])] = []
            var cond = try e.parseExpression()
            try e.expectEnd("%}")
            var otherwise: [JStmt] = []
            while true {
                let (body, end) = try parseBody(until: ["elif", "else", "endif"])
                branches.append((cond, body))
                guard let end else { throw JinjaError(.syntax, line: line, "'if' is never closed (expected 'endif')") }
                if end.keyword == "elif" {
                    var c = ExprParser(Array(end.tokens), line: end.line)
                    cond = try c.parseExpression()
                    try c.expectEnd("%}")
                    continue
                }
                if end.keyword == "else" {
                    try ExprParser(Array(end.tokens), line: end.line).expectEnd("%}")
                    let (b, end2) = try parseBody(until: ["endif"])
                    try expectEnd(end2, "endif", opened: "if", line: line)
                    otherwise = b
                }
                break
            }
            return .ifChain(branches, otherwise: otherwise, line: line)
        case "for":
            let targets = try e.parseTargets()
            try e.expectName("in")
            let iterable = try e.parseTupleOrExpression(noCondition: true)
            var condition: JExpr?
            if e.skipName("if") { condition = try e.parseExpression() }
            if e.peekName("recursive") { throw JinjaError(.unsupported, line: line, "recursive for loops") }
            try e.expectEnd("%}")
            let (body, end) = try parseBody(until: ["else", "endfor"])
            var otherwise: [JStmt] = []
            guard let end else { throw JinjaError(.syntax, line: line, "'for' is never closed (expected 'endfor')") }
            if end.keyword == "else" {
                let (b, end2) = try parseBody(until: ["endfor"])
                try expectEnd(end2, "endfor", opened: "for", line: line)
                otherwise = b
            }
            return .forLoop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise, line: line)
        case "set":
            guard case .name(let first)? = e.peek else { throw JinjaError(.syntax, line: line, "'set' needs a variable name") }
            if e.peekOp(".", offset: 1) {
                e.advance()
                e.advance()
                guard case .name(let attr)? = e.peek else { throw JinjaError(.syntax, line: line, "expected an attribute name after '.'") }
                e.advance()
                try e.expectOp("=")
                let v = try e.parseTupleOrExpression()
                try e.expectEnd("%}")
                return .set(.attribute(first, attr), v, line: line)
            }
            let targets = try e.parseTargets()
            if e.atEnd || e.peekOp("|") {
                // block set: {% set x %}…{% endset %}, optionally filtered
                guard targets.count == 1 else { throw JinjaError(.syntax, line: line, "a block 'set' assigns one name") }
                var filters: [(String, [JExpr], [(String, JExpr)])] = []
                while e.skipOp("|") { filters.append(try e.parseFilterCall()) }
                try e.expectEnd("%}")
                let (body, end) = try parseBody(until: ["endset"])
                try expectEnd(end, "endset", opened: "set", line: line)
                return .setBlock(targets[0], body, filters: filters, line: line)
            }
            try e.expectOp("=")
            let v = try e.parseTupleOrExpression()
            try e.expectEnd("%}")
            return .set(.names(targets), v, line: line)
        case "macro":
            guard case .name(let name)? = e.peek else { throw JinjaError(.syntax, line: line, "'macro' needs a name") }
            e.advance()
            let params = try e.parseParams()
            try e.expectEnd("%}")
            let (body, end) = try parseBody(until: ["endmacro"])
            try expectEnd(end, "endmacro", opened: "macro", line: line)
            return .macro(name: name, params: params, body: body, line: line)
        case "call":
            var params: [(String, JExpr?)] = []
            if e.peekOp("(") { params = try e.parseParams() }
            let call = try e.parseExpression()
            guard case .call = call else { throw JinjaError(.syntax, line: line, "'call' needs a macro call") }
            try e.expectEnd("%}")
            let (body, end) = try parseBody(until: ["endcall"])
            try expectEnd(end, "endcall", opened: "call", line: line)
            return .callBlock(call, params: params, body: body, line: line)
        case "filter":
            var filters = [try e.parseFilterCall()]
            while e.skipOp("|") { filters.append(try e.parseFilterCall()) }
            try e.expectEnd("%}")
            let (body, end) = try parseBody(until: ["endfilter"])
            try expectEnd(end, "endfilter", opened: "filter", line: line)
            return .filterBlock(filters, body, line: line)
        case "generation":
            try e.expectEnd("%}")
            let (body, end) = try parseBody(until: ["endgeneration"])
            try expectEnd(end, "endgeneration", opened: "generation", line: line)
            return .generation(body)
        case "break":
            try e.expectEnd("%}")
            return .breakLoop(line: line)
        case "continue":
            try e.expectEnd("%}")
            return .continueLoop(line: line)
        default:
            if Self.unsupportedTags.contains(kw) { throw JinjaError(.unsupported, line: line, "{% \(kw) %}") }
            throw JinjaError(.syntax, line: line, "unknown tag '\(kw)'")
        }
    }
}

/// Parses the expression tokens of one tag, with jinja2's precedence.
struct ExprParser {
    private let toks: [JToken]
    private var i = 0
    private let line: Int
    private var depth = 0
    static let maxDepth = 60

    init(_ toks: [JToken], line: Int) {
        self.toks = toks
        self.line = line
    }

    var peek: JTok? { i < toks.count ? toks[i].tok : nil }
    var atEnd: Bool { i >= toks.count }
    mutating func advance() { i += 1 }
    private var tokLine: Int { i < toks.count ? toks[i].line : (toks.last?.line ?? line) }

    func peekOp(_ o: String, offset: Int = 0) -> Bool {
        i + offset < toks.count && toks[i + offset].tok == .op(o)
    }
    func peekName(_ n: String) -> Bool { peek == .name(n) }
    mutating func skipOp(_ o: String) -> Bool {
        if peekOp(o) { i += 1; return true }
        return false
    }
    mutating func skipName(_ n: String) -> Bool {
        if peekName(n) { i += 1; return true }
        return false
    }
    func fail(_ message: String) -> JinjaError { JinjaError(.syntax, line: tokLine, message) }

    private func describe(_ t: JTok?) -> String {
        switch t {
        case nil: return "end of tag"
        case .name(let n)?: return "'\(n)'"
        case .string(let s)?: return "string \(pyStringRepr(s))"
        case .int(let v)?: return "\(v)"
        case .float(let v)?: return pyFloatRepr(v)
        case .op(let o)?: return "'\(o)'"
        }
    }

    mutating func expectOp(_ o: String) throws {
        guard skipOp(o) else { throw fail("expected '\(o)', found \(describe(peek))") }
    }
    mutating func expectName(_ n: String) throws {
        guard skipName(n) else { throw fail("expected '\(n)', found \(describe(peek))") }
    }
    func expectEnd(_ end: String) throws {
        if !atEnd { throw fail("expected '\(end)', found \(describe(peek))") }
    }

    /// `a` or `a, b` (for-loop and set targets).
    mutating func parseTargets() throws -> [String] {
        var names: [String] = []
        let paren = skipOp("(")
        repeat {
            guard case .name(let n)? = peek else { throw fail("expected a variable name, found \(describe(peek))") }
            i += 1
            names.append(n)
        } while skipOp(",") && !peekName("in") && !peekOp("=")
        if paren { try expectOp(")") }
        return names
    }

    /// `(a, b=1)` macro / call parameters.
    mutating func parseParams() throws -> [(String, JExpr?)] {
        try expectOp("(")
        var params: [(String, JExpr?)] = []
        while !peekOp(")") {
            guard case .name(let n)? = peek else { throw fail("expected a parameter name, found \(describe(peek))") }
            i += 1
            var def: JExpr?
            if skipOp("=") { def = try parseExpression() }
            params.append((n, def))
            if !skipOp(",") { break }
        }
        try expectOp(")")
        return params
    }

    /// `name(args)` after a `|` in a filter block or a block set.
    mutating func parseFilterCall() throws -> (String, [JExpr], [(String, JExpr)]) {
        let name = try dottedName()
        var args: [JExpr] = []
        var kwargs: [(String, JExpr)] = []
        if peekOp("(") { (args, kwargs) = try parseCallArgs() }
        return (name, args, kwargs)
    }

    private mutating func dottedName() throws -> String {
        guard case .name(var n)? = peek else { throw fail("expected a filter name, found \(describe(peek))") }
        i += 1
        while peekOp("."), i + 1 < toks.count, case .name(let m) = toks[i + 1].tok {
            n += "." + m
            i += 2
        }
        return n
    }

    mutating func parseTupleOrExpression(noCondition: Bool = false) throws -> JExpr {
        let first = noCondition ? try parseOr() : try parseExpression()
        guard peekOp(",") else { return first }
        var items = [first]
        while skipOp(",") {
            if atEnd || peekName("if") || peekOp(")") { break }
            items.append(noCondition ? try parseOr() : try parseExpression())
        }
        return .tuple(items)
    }

    mutating func parseExpression() throws -> JExpr {
        depth += 1
        defer { depth -= 1 }
        guard depth < Self.maxDepth else { throw JinjaError(.unsupported, line: tokLine, "expression nested deeper than \(Self.maxDepth)") }
        var e = try parseOr()
        while skipName("if") {
            let cond = try parseOr()
            var otherwise: JExpr?
            if skipName("else") { otherwise = try parseExpression() }
            e = .condition(cond, then: e, otherwise: otherwise)
        }
        return e
    }

    mutating func parseOr() throws -> JExpr {
        var e = try parseAnd()
        while skipName("or") { e = .or(e, try parseAnd()) }
        return e
    }

    mutating func parseAnd() throws -> JExpr {
        var e = try parseNot()
        while skipName("and") { e = .and(e, try parseNot()) }
        return e
    }

    mutating func parseNot() throws -> JExpr {
        if skipName("not") {
            depth += 1
            defer { depth -= 1 }
            guard depth < Self.maxDepth else { throw JinjaError(.unsupported, line: tokLine, "expression nested deeper than \(Self.maxDepth)") }
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    mutating func parseCompare() throws -> JExpr {
        let e = try parseMath1()
        var ops: [(String, JExpr)] = []
        while true {
            if case .op(let o)? = peek, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                i += 1
                ops.append((o, try parseMath1()))
            } else if skipName("in") {
                ops.append(("in", try parseMath1()))
            } else if peekName("not"), i + 1 < toks.count, toks[i + 1].tok == .name("in") {
                i += 2
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? e : .compare(e, ops)
    }

    mutating func parseMath1() throws -> JExpr {
        var e = try parseConcat()
        while case .op(let o)? = peek, o == "+" || o == "-" {
            i += 1
            e = .binary(o, e, try parseConcat())
        }
        return e
    }

    mutating func parseConcat() throws -> JExpr {
        var e = try parseMath2()
        while skipOp("~") { e = .binary("~", e, try parseMath2()) }
        return e
    }

    mutating func parseMath2() throws -> JExpr {
        var e = try parsePow()
        while case .op(let o)? = peek, ["*", "/", "//", "%"].contains(o) {
            i += 1
            e = .binary(o, e, try parsePow())
        }
        return e
    }

    mutating func parsePow() throws -> JExpr {
        var e = try parseUnary()
        while skipOp("**") { e = .binary("**", e, try parseUnary()) }
        return e
    }

    mutating func parseUnary(withFilter: Bool = true) throws -> JExpr {
        var e: JExpr
        if case .op(let o)? = peek, o == "-" || o == "+" {
            i += 1
            depth += 1
            defer { depth -= 1 }
            guard depth < Self.maxDepth else { throw JinjaError(.unsupported, line: tokLine, "expression nested deeper than \(Self.maxDepth)") }
            e = .unary(o, try parseUnary(withFilter: false))
        } else {
            e = try parsePostfix(try parsePrimary())
        }
        if withFilter { e = try parseFilterExpr(e) }
        return e
    }

    mutating func parsePrimary() throws -> JExpr {
        guard let t = peek else { throw fail("expected an expression, found end of tag") }
        i += 1
        switch t {
        case .name(let n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .string(var s):
            while case .string(let more)? = peek {
                s += more
                i += 1
            }
            return .literal(.string(s))
        case .int(let v): return .literal(.int(v))
        case .float(let v): return .literal(.double(v))
        case .op("("):
            depth += 1
            defer { depth -= 1 }
            if skipOp(")") { return .tuple([]) }
            let e = try parseExpression()
            if peekOp(",") {
                var items = [e]
                while skipOp(",") {
                    if peekOp(")") { break }
                    items.append(try parseExpression())
                }
                try expectOp(")")
                return .tuple(items)
            }
            try expectOp(")")
            return e
        case .op("["):
            depth += 1
            defer { depth -= 1 }
            var items: [JExpr] = []
            while !peekOp("]") {
                items.append(try parseExpression())
                if !skipOp(",") { break }
            }
            try expectOp("]")
            return .list(items)
        case .op("{"):
            depth += 1
            defer { depth -= 1 }
            var pairs: [(JExpr, JExpr)] = []
            while !peekOp("}") {
                let k = try parseExpression()
                try expectOp(":")
                pairs.append((k, try parseExpression()))
                if !skipOp(",") { break }
            }
            try expectOp("}")
            return .dict(pairs)
        default:
            i -= 1
            throw fail("unexpected \(describe(t))")
        }
    }

    mutating func parsePostfix(_ base: JExpr) throws -> JExpr {
        var e = base
        while true {
            if skipOp(".") {
                switch peek {
                case .name(let n)?:
                    i += 1
                    e = .attr(e, n)
                case .int(let v)?:
                    i += 1
                    e = .item(e, .literal(.int(v)))
                default:
                    throw fail("expected an attribute name after '.', found \(describe(peek))")
                }
            } else if peekOp("[") {
                i += 1
                e = try parseSubscript(e)
            } else if peekOp("(") {
                let (args, kwargs) = try parseCallArgs()
                e = .call(e, args, kwargs)
            } else {
                return e
            }
        }
    }

    mutating func parseSubscript(_ base: JExpr) throws -> JExpr {
        depth += 1
        defer { depth -= 1 }
        var parts: [JExpr?] = []
        var isSlice = false
        var cur: JExpr? = nil
        while true {
            if peekOp("]") {
                parts.append(cur)
                i += 1
                break
            }
            if skipOp(":") {
                isSlice = true
                parts.append(cur)
                cur = nil
                continue
            }
            if cur != nil { throw fail("expected ':' or ']', found \(describe(peek))") }
            cur = try parseExpression()
        }
        if !isSlice {
            guard let idx = parts[0] else { throw fail("empty subscript") }
            return .item(base, idx)
        }
        guard parts.count <= 3 else { throw fail("a slice has at most three parts") }
        while parts.count < 3 { parts.append(nil) }
        return .slice(base, parts[0], parts[1], parts[2])
    }

    mutating func parseCallArgs() throws -> ([JExpr], [(String, JExpr)]) {
        try expectOp("(")
        depth += 1
        defer { depth -= 1 }
        var args: [JExpr] = []
        var kwargs: [(String, JExpr)] = []
        while !peekOp(")") {
            if peekOp("*") || peekOp("**") { throw JinjaError(.unsupported, line: tokLine, "*args / **kwargs in a call") }
            if case .name(let n)? = peek, peekOp("=", offset: 1) {
                i += 2
                kwargs.append((n, try parseExpression()))
            } else {
                if !kwargs.isEmpty { throw fail("positional argument after a keyword argument") }
                args.append(try parseExpression())
            }
            if !skipOp(",") { break }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    mutating func parseFilterExpr(_ base: JExpr) throws -> JExpr {
        var e = base
        while true {
            if skipOp("|") {
                let (name, args, kwargs) = try parseFilterCall()
                e = .filter(e, name, args, kwargs)
            } else if skipName("is") {
                let negated = skipName("not")
                let name: String
                switch peek {
                case .name(let n)?:
                    i += 1
                    name = n
                case .op(let o)? where ["==", "!=", "<", ">", "<=", ">="].contains(o):
                    i += 1
                    name = o
                default:
                    throw fail("expected a test name after 'is', found \(describe(peek))")
                }
                var args: [JExpr] = []
                if peekOp("(") {
                    let (a, kw) = try parseCallArgs()
                    if !kw.isEmpty { throw JinjaError(.unsupported, line: tokLine, "keyword arguments to test '\(name)'") }
                    args = a
                } else if let t = peek, !(t == .name("else") || t == .name("or") || t == .name("and") || t == .name("if")) {
                    var startsPrimary = false
                    switch t {
                    case .name, .string, .int, .float: startsPrimary = true
                    case .op(let o): startsPrimary = o == "(" || o == "[" || o == "{"
                    }
                    if startsPrimary { args = [try parsePostfix(try parsePrimary())] }
                }
                e = .test(e, name, args, negated: negated)
            } else {
                return e
            }
        }
    }
}
