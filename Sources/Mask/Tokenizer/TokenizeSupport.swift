import Foundation
import ILADiff

// What `ila-mask tokenize` needs beyond `Tokenizer.encode`: reading texts exactly, encoding
// many of them on all cores, and showing tokens.

extension Tokenizer {
    /// Reads a file of one JSON string per line (a final newline is optional) with the exact
    /// scalars written, never folding canonically equivalent spellings. Errors name the file and
    /// line: `texts.jsonl:3: not a JSON string (…)`.
    public static func readJSONStringLines(path: String) throws -> [String] {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw ILAError(file: path, "is a directory, not a file of JSON strings")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        return try data.withUnsafeBytes { raw -> [String] in
            let bytes = raw.bindMemory(to: UInt8.self)
            var out: [String] = []
            var start = 0
            var line = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != 0x0A { end += 1 }
                line += 1
                var p = JSONParser(UnsafeBufferPointer(rebasing: bytes[start..<end]))
                let value: JSONValue
                do {
                    value = try p.document()
                } catch let e as JSONParser.Failure {
                    throw ILAError(file: "\(path):\(line)", "not a JSON string (\(e.reason) at byte \(e.offset + 1) of the line)")
                }
                guard let s = value.string else {
                    throw ILAError(file: "\(path):\(line)", "not a JSON string")
                }
                out.append(s)
                start = end + 1
            }
            return out
        }
    }

    /// `encode` of every text, spread over the machine's cores; results in input order.
    public func encodeAll(_ texts: [String]) -> [[Int]] {
        let results = UnsafeMutableBufferPointer<[Int]>.allocate(capacity: texts.count)
        results.initialize(repeating: [])
        defer { results.deallocate() }
        nonisolated(unsafe) let slots = results
        let chunk = 64
        let chunks = (texts.count + chunk - 1) / chunk
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            for i in (c * chunk)..<min(texts.count, (c + 1) * chunk) { slots[i] = encode(texts[i]) }
        }
        return Array(results)
    }

    /// The vocabulary spelling of `id` for a person to read: control characters escaped
    /// (`\n`, `\u{1F}`), and when `quoted`, in quotes with quotes and backslashes escaped
    /// (`"Ġworld"`, `"\n"`, `"<0x0A>"`).
    public func displayToken(_ id: Int, quoted: Bool = true) -> String {
        guard let t = token(for: id) else { return "<id \(id)>" }
        var out = quoted ? "\"" : ""
        for x in t.unicodeScalars {
            switch x.value {
            case 0x22 where quoted: out += "\\\""
            case 0x5C where quoted: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0..<0x20, 0x7F..<0xA0, 0x2028, 0x2029:
                out += "\\u{\(String(x.value, radix: 16, uppercase: true))}"
            default:
                out.unicodeScalars.append(x)
            }
        }
        return quoted ? out + "\"" : out
    }
}
