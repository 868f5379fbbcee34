import Foundation

/// Writes a float32 safetensors file (8-byte header length, JSON header, little-endian data in
/// the order given), atomically: the file appears complete or not at all.
public enum SafetensorsOutput {
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        /// Called with the destination of the tensor's shape.product floats.
        public var fill: (UnsafeMutableBufferPointer<Float>) -> Void
        public init(name: String, shape: [Int], fill: @escaping (UnsafeMutableBufferPointer<Float>) -> Void) {
            self.name = name
            self.shape = shape
            self.fill = fill
        }
    }

    public static func encode(_ tensors: [Tensor], metadata: [String: String] = [:]) throws -> Data {
        var header = "{\"__metadata__\":" + jsonObject(metadata.merging(["format": "pt"]) { a, _ in a })
        var offset = 0
        for t in tensors {
            let n = t.shape.reduce(1, *) * 4
            header += ",\(jsonString(t.name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + n)]}"
            offset += n
        }
        header += "}"
        var head = Array(header.utf8)
        while head.count % 8 != 0 { head.append(0x20) }
        var data = Data(count: 8 + head.count + offset)
        data.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt64(head.count).littleEndian, toByteOffset: 0, as: UInt64.self)
            raw.baseAddress!.advanced(by: 8).copyMemory(from: head, byteCount: head.count)
            var at = 8 + head.count
            for t in tensors {
                let count = t.shape.reduce(1, *)
                let p = raw.baseAddress!.advanced(by: at).bindMemory(to: Float.self, capacity: count)
                t.fill(UnsafeMutableBufferPointer(start: p, count: count))
                // Little-endian on disk.
                for i in 0..<count { p[i] = Float(bitPattern: p[i].bitPattern.littleEndian) }
                at += count * 4
            }
        }
        return data
    }

    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], to path: String) throws {
        try AtomicOutput.write(try encode(tensors, metadata: metadata), to: path)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    static func jsonObject(_ d: [String: String]) -> String {
        "{" + d.keys.sorted().map { "\(jsonString($0)):\(jsonString(d[$0]!))" }.joined(separator: ",") + "}"
    }
}
