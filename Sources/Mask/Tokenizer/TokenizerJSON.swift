import Foundation
import ILADiff

/// A parsed JSON value whose objects keep every key exactly as written.
///
/// tokenizer.json is read with this parser rather than JSONSerialization because Swift's
/// `String` compares by canonical equivalence: a `[String: Any]` would fold vocabulary
/// entries such as "é" (U+00E9) and "e\u{301}", which are distinct tokens.
enum JSONValue {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Members in file order.
    case object([JSONMember])

    /// The value of the first pair whose key is exactly `key` (nil when absent or not an object).
    subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.key.utf8.elementsEqual(key.utf8) }?.value
    }

    var string: String? { if case .string(let s) = self { return s } else { return nil } }
    var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    var array: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    var pairs: [JSONMember]? { if case .object(let p) = self { return p } else { return nil } }
    var isObject: Bool { if case .object = self { return true } else { return false } }
    /// Absent values count as null too, through optional chaining at the call site.
    var isNull: Bool { if case .null = self { return true } else { return false } }

    /// An integral number that fits an `Int`.
    var int: Int? {
        guard case .number(let d) = self, d.rounded() == d, abs(d) < 9e15 else { return nil }
        return Int(d)
    }

    /// Reads and parses the JSON file at `path`; errors name it.
    static func read(_ path: String) throws -> JSONValue {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        do {
            return try data.withUnsafeBytes { raw in
                var p = JSONParser(raw.bindMemory(to: UInt8.self))
                return try p.document()
            }
        } catch let e as JSONParser.Failure {
            throw ILAError(file: path, "not valid JSON (\(e.reason) at byte \(e.offset))")
        }
    }
}

/// One `"key": value` of a JSON object.
struct JSONMember {
    let key: String
    let value: JSONValue
}

/// A strict RFC 8259 parser over UTF-8 bytes.
struct JSONParser {
    struct Failure: Error {
        let reason: String
        let offset: Int
    }

    private let b: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { b = bytes }

    /// One value surrounded only by whitespace.
    mutating func document() throws -> JSONValue {
        // A UTF-8 byte order mark is tolerated.
        if b.count >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF { i = 3 }
        let v = try value()
        skipWhitespace()
        guard i == b.count else { throw fail("trailing characters") }
        return v
    }

    private func fail(_ reason: String) -> Failure { Failure(reason: reason, offset: i) }

    private mutating func skipWhitespace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    private mutating func value() throws -> JSONValue {
        skipWhitespace()
        guard i < b.count else { throw fail("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return .number(try number())
        }
    }

    private mutating func literal(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { throw fail("unexpected end") }
        for k in 0..<n where b[i + k] != word.utf8Start[k] { throw fail("unexpected character") }
        i += n
    }

    private mutating func nest() throws {
        depth += 1
        guard depth <= 512 else { throw fail("nesting deeper than 512") }
    }

    private mutating func object() throws -> JSONValue {
        try nest()
        defer { depth -= 1 }
        i += 1
        var pairs: [JSONMember] = []
        skipWhitespace()
        if i < b.count && b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
        while true {
            skipWhitespace()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
            let key = try string()
            skipWhitespace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            pairs.append(JSONMember(key: key, value: try value()))
            skipWhitespace()
            guard i < b.count else { throw fail("unexpected end") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
            throw fail("expected ',' or '}'")
        }
    }

    private mutating func array() throws -> JSONValue {
        try nest()
        defer { depth -= 1 }
        i += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if i < b.count && b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            items.append(try value())
            skipWhitespace()
            guard i < b.count else { throw fail("unexpected end") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            throw fail("expected ',' or ']'")
        }
    }

    private mutating func string() throws -> String {
        i += 1  // opening quote
        let start = i
        // Fast path: no escapes.
        while i < b.count && b[i] != UInt8(ascii: "\"") && b[i] != UInt8(ascii: "\\") {
            guard b[i] >= 0x20 else { throw fail("control character in a string") }
            i += 1
        }
        guard i < b.count else { throw fail("unterminated string") }
        if b[i] == UInt8(ascii: "\"") {
            let s = try utf8(UnsafeBufferPointer(rebasing: b[start..<i]))
            i += 1
            return s
        }
        var bytes = Array(b[start..<i])
        while true {
            guard i < b.count else { throw fail("unterminated string") }
            let c = b[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            guard c >= 0x20 else { throw fail("control character in a string") }
            if c != UInt8(ascii: "\\") { bytes.append(c); i += 1; continue }
            i += 1
            guard i < b.count else { throw fail("unterminated string") }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): bytes.append(0x22)
            case UInt8(ascii: "\\"): bytes.append(0x5C)
            case UInt8(ascii: "/"): bytes.append(0x2F)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if code >= 0xD800 && code < 0xDC00 {
                    guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate")
                    }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low < 0xE000 else { throw fail("unpaired surrogate") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if code >= 0xDC00 && code < 0xE000 {
                    throw fail("unpaired surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("bad \\u escape") }
                if let encoded = UTF8.encode(scalar) { bytes.append(contentsOf: encoded) }
            default:
                throw fail("bad escape")
            }
        }
        return try bytes.withUnsafeBufferPointer { try utf8($0) }
    }

    private func utf8(_ bytes: UnsafeBufferPointer<UInt8>) throws -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("invalid UTF-8") }
        return s
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count else { throw fail("bad \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func number() throws -> Double {
        let start = i
        if i < b.count && b[i] == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
        guard i > intStart else { throw fail("unexpected character") }
        guard !(b[intStart] == 0x30 && i - intStart > 1) else { throw fail("leading zero") }
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            let f = i
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            guard i > f else { throw fail("bad number") }
        }
        if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
            i += 1
            if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
            let f = i
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            guard i > f else { throw fail("bad number") }
        }
        // Plain integers (ids, every vocabulary entry) skip the string conversion.
        if i - start <= 15, !b[start..<i].contains(where: { $0 == 0x2E || $0 == 0x65 || $0 == 0x45 }) {
            var v = 0
            for c in b[intStart..<i] { v = v * 10 + Int(c - 0x30) }
            return Double(b[start] == UInt8(ascii: "-") ? -v : v)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
        guard let d = Double(text) else { throw fail("bad number") }
        return d
    }
}

/// A string key compared and hashed by its exact scalars, never by canonical equivalence.
struct ScalarKey: Hashable {
    let scalars: [Unicode.Scalar]

    init(_ scalars: [Unicode.Scalar]) { self.scalars = scalars }
    init(_ s: String) { scalars = Array(s.unicodeScalars) }

    func hash(into h: inout Hasher) {
        scalars.withUnsafeBytes { h.combine(bytes: $0) }
    }

    static func == (a: ScalarKey, b: ScalarKey) -> Bool { a.scalars == b.scalars }

    var string: String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: scalars)
        return String(v)
    }
}
