import Foundation

/// Recovers the key order of a JSON object, which JSONSerialization does not keep.
/// PEFT's pattern dictionaries are matched in file order, so that order matters.
enum JSONKeyOrder {
    /// The keys, in file order, of the object stored under `field` of the top-level object,
    /// or nil if the text is not of that shape.
    static func keys(ofObjectField field: String, in data: Data) -> [String]? {
        var p = Parser(bytes: [UInt8](data))
        p.skipWS()
        guard p.peek == UInt8(ascii: "{") else { return nil }
        p.i += 1
        while true {
            p.skipWS()
            if p.peek == UInt8(ascii: "}") { return nil }
            guard let key = p.string() else { return nil }
            p.skipWS()
            guard p.peek == UInt8(ascii: ":") else { return nil }
            p.i += 1
            p.skipWS()
            if key == field {
                guard p.peek == UInt8(ascii: "{") else { return nil }
                p.i += 1
                var keys: [String] = []
                while true {
                    p.skipWS()
                    if p.peek == UInt8(ascii: "}") { return keys }
                    guard let k = p.string() else { return nil }
                    keys.append(k)
                    p.skipWS()
                    guard p.peek == UInt8(ascii: ":") else { return nil }
                    p.i += 1
                    guard p.skipValue(depth: 0) else { return nil }
                    p.skipWS()
                    if p.peek == UInt8(ascii: ",") { p.i += 1 }
                }
            }
            guard p.skipValue(depth: 0) else { return nil }
            p.skipWS()
            if p.peek == UInt8(ascii: ",") { p.i += 1 } else { return nil }
        }
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0
        var peek: UInt8? { i < bytes.count ? bytes[i] : nil }

        mutating func skipWS() {
            while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 }
        }

        /// A JSON string at the cursor, decoded by JSONSerialization for exact escapes.
        mutating func string() -> String? {
            guard peek == UInt8(ascii: "\"") else { return nil }
            let start = i
            i += 1
            while let c = peek {
                i += 1
                if c == UInt8(ascii: "\\") { i += 1 } else if c == UInt8(ascii: "\"") { break }
            }
            guard i <= bytes.count else { return nil }
            let slice = Data(bytes[start..<i])
            return (try? JSONSerialization.jsonObject(with: slice, options: [.fragmentsAllowed])) as? String
        }

        mutating func skipValue(depth: Int) -> Bool {
            guard depth < 256 else { return false }
            skipWS()
            guard let c = peek else { return false }
            switch c {
            case UInt8(ascii: "\""): return string() != nil
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
                i += 1
                while true {
                    skipWS()
                    if peek == close { i += 1; return true }
                    if c == UInt8(ascii: "{") {
                        guard string() != nil else { return false }
                        skipWS()
                        guard peek == UInt8(ascii: ":") else { return false }
                        i += 1
                    }
                    guard skipValue(depth: depth + 1) else { return false }
                    skipWS()
                    if peek == UInt8(ascii: ",") { i += 1 } else if peek != close { return false }
                }
            default:
                while let d = peek, !(d == UInt8(ascii: ",") || d == UInt8(ascii: "}") || d == UInt8(ascii: "]")
                                      || d == 0x20 || d == 0x0A || d == 0x0D || d == 0x09) { i += 1 }
                return true
            }
        }
    }
}
