import Foundation

/// An error from a chat template: its line (1-based, in the template's text) and what went wrong.
///
/// `raised` is the template's own `raise_exception(message)`; `unsupported` names a Jinja construct
/// this renderer does not implement; `syntax` and `runtime` are what jinja2 would also refuse.
public struct JinjaError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable { case syntax, unsupported, runtime, raised }
    public var kind: Kind
    public var line: Int
    public var message: String

    public init(_ kind: Kind, line: Int, _ message: String) {
        self.kind = kind
        self.line = line
        self.message = message
    }

    /// One line: `line 3: unsupported Jinja filter 'wordwrap'`; raise_exception's message as it is.
    public var description: String {
        switch kind {
        case .raised: return "line \(line): raise_exception: \(message)"
        case .unsupported: return "line \(line): unsupported Jinja construct: \(message)"
        case .syntax: return "line \(line): template syntax error: \(message)"
        case .runtime: return "line \(line): \(message)"
        }
    }
}

/// An error raised while evaluating, before the statement's line is attached.
struct EvalError: Error {
    var kind: JinjaError.Kind
    var message: String
    init(_ message: String, _ kind: JinjaError.Kind = .runtime) {
        self.kind = kind
        self.message = message
    }
}

/// A Jinja namespace() object: attributes assignable from inside loops.
public final class JNamespace {
    var attributes: JDict
    init(_ attributes: JDict) { self.attributes = attributes }
}

/// A callable: a builtin, a bound method, or a macro.
public final class JFunction {
    let name: String
    let call: (_ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue
    init(_ name: String, _ call: @escaping (_ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue) {
        self.name = name
        self.call = call
    }
}

/// An insertion-ordered dictionary with string keys (JSON objects, Jinja dict literals).
public struct JDict {
    public private(set) var keys: [String] = []
    private var storage: [String: JValue] = [:]

    public init() {}
    public init(_ pairs: [(String, JValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public var count: Int { keys.count }

    public subscript(key: String) -> JValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var pairs: [(String, JValue)] { keys.map { ($0, storage[$0]!) } }
    public var values: [JValue] { keys.map { storage[$0]! } }
}

/// A value as a Jinja template sees it (Python semantics: None, bool, int, float, str, list, dict).
public indirect enum JValue {
    /// An undefined value; the text says how it came about (for the error when it is used).
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JValue])
    case dict(JDict)
    case namespace(JNamespace)
    case function(JFunction)

    // MARK: conversions from JSON

    /// A JSON value from JSONSerialization (NSNull, NSNumber, String, arrays, dictionaries).
    /// Object keys keep the order given in `order` when known, else sorted (JSONSerialization
    /// loses it; `JValue.parseJSON` keeps it).
    public static func fromJSONObject(_ v: Any) -> JValue {
        switch v {
        case is NSNull: return .none
        case let s as String: return .string(s)
        case let n as NSNumber:
            let t = String(cString: n.objCType)
            if t == "c" || t == "B" { return .bool(n.boolValue) }
            if t == "d" || t == "f" { return .double(n.doubleValue) }
            return .int(n.intValue)
        case let a as [Any]: return .list(a.map(fromJSONObject))
        case let o as [String: Any]:
            return .dict(JDict(o.keys.sorted().map { ($0, fromJSONObject(o[$0]!)) }))
        default: return .string("\(v)")
        }
    }

    /// Parses JSON text keeping object key order (Python's json keeps it; the templates' tojson shows it).
    public static func parseJSON(_ bytes: [UInt8], maxDepth: Int = 512) throws -> JValue {
        var p = OrderedJSONParser(bytes: bytes, maxDepth: maxDepth)
        let v = try p.parseDocument()
        return v
    }

    // MARK: Python semantics

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }
    var isNone: Bool { if case .none = self { return true } else { return false } }

    /// Python truthiness (undefined is false).
    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .function: return true
        }
    }

    /// Python's type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .function: return "function"
        }
    }

    /// `str(value)` as Jinja prints it (`{{ value }}`): undefined prints nothing.
    var pyStr: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return pyRepr
        }
    }

    /// Python's `repr(value)`.
    var pyRepr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return pyFloatRepr(d)
        case .string(let s): return pyStringRepr(s)
        case .list(let l): return "[" + l.map(\.pyRepr).joined(separator: ", ") + "]"
        case .dict(let d): return "{" + d.pairs.map { pyStringRepr($0.0) + ": " + $0.1.pyRepr }.joined(separator: ", ") + "}"
        case .namespace(let n): return "<Namespace " + n.attributes.pairs.map { "\($0.0)=\($0.1.pyRepr)" }.joined(separator: ", ") + ">"
        case .function(let f): return "<function \(f.name)>"
        }
    }
}

/// Python's repr of a float: shortest round-trip digits, exponent from 1e16 and below 1e-4.
func pyFloatRepr(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
    // Swift's description gives the shortest round-trip digits; reshape to Python's layout.
    let desc = "\(d)"
    var mantissa = desc
    var exponent = 0
    if let e = desc.firstIndex(where: { $0 == "e" || $0 == "E" }) {
        mantissa = String(desc[..<e])
        exponent = Int(desc[desc.index(after: e)...]) ?? 0
    }
    let negative = mantissa.hasPrefix("-")
    if negative { mantissa.removeFirst() }
    var intPart = mantissa
    var fracPart = ""
    if let dot = mantissa.firstIndex(of: ".") {
        intPart = String(mantissa[..<dot])
        fracPart = String(mantissa[mantissa.index(after: dot)...])
    }
    // digits and decimal exponent: value = 0.d1d2... × 10^point
    var digits = intPart + fracPart
    var point = intPart.count + exponent
    while digits.hasPrefix("0") && digits.count > 1 {
        digits.removeFirst()
        point -= 1
    }
    while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
    let exp10 = point - 1
    var out: String
    if exp10 >= 16 || exp10 < -4 {
        out = String(digits.first!)
        if digits.count > 1 { out += "." + digits.dropFirst() }
        out += (exp10 < 0 ? "e-" : "e+") + (abs(exp10) < 10 ? "0" : "") + String(abs(exp10))
    } else if point <= 0 {
        out = "0." + String(repeating: "0", count: -point) + digits
    } else if point >= digits.count {
        out = digits + String(repeating: "0", count: point - digits.count) + ".0"
    } else {
        let i = digits.index(digits.startIndex, offsetBy: point)
        out = digits[..<i] + "." + digits[i...]
    }
    return (negative ? "-" : "") + out
}

/// Python's repr of a str.
func pyStringRepr(_ s: String) -> String {
    let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for u in s.unicodeScalars {
        switch u {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(u) == quote {
                out += "\\" + String(quote)
            } else if u.value < 0x20 || u.value == 0x7F {
                out += String(format: "\\x%02x", u.value)
            } else if (0x80..<0xA0).contains(u.value) {
                out += String(format: "\\x%02x", u.value)
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    out.append(quote)
    return out
}

// MARK: - JSON reading that keeps key order

struct OrderedJSONParser {
    let bytes: [UInt8]
    let maxDepth: Int
    var i = 0

    init(bytes: [UInt8], maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    struct Failure: Error { let message: String }

    mutating func parseDocument() throws -> JValue {
        skipWS()
        let v = try value(depth: 0)
        skipWS()
        guard i == bytes.count else { throw Failure(message: "trailing characters after JSON value") }
        return v
    }

    mutating func skipWS() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
    }

    mutating func value(depth: Int) throws -> JValue {
        guard depth < maxDepth else { throw Failure(message: "JSON nested deeper than \(maxDepth)") }
        guard i < bytes.count else { throw Failure(message: "unexpected end of JSON") }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            i += 1
            var d = JDict()
            skipWS()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .dict(d) }
            while true {
                skipWS()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Failure(message: "expected a string key") }
                let k = try string()
                skipWS()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw Failure(message: "expected ':'") }
                i += 1
                skipWS()
                d[k] = try value(depth: depth + 1)
                skipWS()
                guard i < bytes.count else { throw Failure(message: "unexpected end of JSON") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .dict(d) }
                throw Failure(message: "expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            i += 1
            var l: [JValue] = []
            skipWS()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .list(l) }
            while true {
                skipWS()
                l.append(try value(depth: depth + 1))
                skipWS()
                guard i < bytes.count else { throw Failure(message: "unexpected end of JSON") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .list(l) }
                throw Failure(message: "expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .none
        default:
            return try number()
        }
    }

    mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else { throw Failure(message: "invalid JSON literal") }
        i += w.count
    }

    mutating func number() throws -> JValue {
        let start = i
        var isFloat = false
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        let digitsStart = i
        while i < bytes.count, (0x30...0x39).contains(bytes[i]) { i += 1 }
        guard i > digitsStart else { throw Failure(message: "invalid JSON value") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            isFloat = true
            i += 1
            let f = i
            while i < bytes.count, (0x30...0x39).contains(bytes[i]) { i += 1 }
            guard i > f else { throw Failure(message: "invalid JSON number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            isFloat = true
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            let f = i
            while i < bytes.count, (0x30...0x39).contains(bytes[i]) { i += 1 }
            guard i > f else { throw Failure(message: "invalid JSON number") }
        }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        if !isFloat, let n = Int(text) { return .int(n) }
        guard let d = Double(text) else { throw Failure(message: "invalid JSON number") }
        return .double(d)
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else {
            throw Failure(message: "invalid \\u escape")
        }
        i += 4
        return v
    }

    mutating func string() throws -> String {
        i += 1
        var out: [UInt8] = []
        var scalars = String.UnicodeScalarView()
        func flush() {
            if !out.isEmpty {
                scalars.append(contentsOf: String(decoding: out, as: UTF8.self).unicodeScalars)
                out.removeAll(keepingCapacity: true)
            }
        }
        while true {
            guard i < bytes.count else { throw Failure(message: "unterminated JSON string") }
            let b = bytes[i]
            i += 1
            if b == UInt8(ascii: "\"") { break }
            if b < 0x20 { throw Failure(message: "control character in JSON string") }
            if b != UInt8(ascii: "\\") { out.append(b); continue }
            guard i < bytes.count else { throw Failure(message: "unterminated JSON string") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var v = try hex4()
                if (0xD800..<0xDC00).contains(v), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                    let save = i
                    i += 2
                    let lo = try hex4()
                    if (0xDC00..<0xE000).contains(lo) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        i = save
                    }
                }
                flush()
                // A lone surrogate cannot be a Swift string; it becomes U+FFFD.
                scalars.append(Unicode.Scalar(v) ?? "\u{FFFD}")
            default: throw Failure(message: "invalid escape in JSON string")
            }
        }
        flush()
        return String(scalars)
    }
}
