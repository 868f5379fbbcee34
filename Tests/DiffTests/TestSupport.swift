import Foundation
import ILATestSupport
import XCTest
import ILADiff

// Helpers shared by the DiffTests: a tiny safetensors writer, an independent safetensors decoder
// (its own header parsing and bf16/f16/f32 byte decoding, never the reader under test), temporary
// folders, fixture locations and a runner for the built `ila-diff` binary.

// MARK: - Locations

enum Paths {
    /// The repository root: Tests/DiffTests/<this file> → three levels up.
    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// fixtures/tiny inside the repository (copied from the shared test bed).
    static var tiny: URL { repoRoot.appendingPathComponent("fixtures/tiny") }

    /// The shared test bed beside the repository (`../shared/testbed`), or nil.
    static var sharedTestbed: URL {
        repoRoot.deletingLastPathComponent().appendingPathComponent("shared/testbed")
    }

    /// `../shared/testbed/small`, skipping the test with a clear message when absent.
    static func small() throws -> URL {
        let u = sharedTestbed.appendingPathComponent("small")
        guard FileManager.default.fileExists(atPath: u.appendingPathComponent("base-A/model.safetensors").path) else {
            throw XCTSkip("the shared test bed is absent (expected \(u.path) beside the repository); skipping the small-model checks")
        }
        return u
    }

    /// A fixture of the tiny set, failing clearly when the copy in fixtures/ is missing.
    static func tinyModel(_ name: String) throws -> URL {
        let u = tiny.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: u.path) else {
            XCTFail("fixture \(u.path) is missing (copy testbed/tiny into fixtures/tiny)")
            throw XCTSkip("fixture missing")
        }
        return u
    }

    /// The built `ila-diff`.
    static func ilaDiff() throws -> URL { URL(fileURLWithPath: try CommandRunner.binary("ila-diff")) }
}

// MARK: - Deterministic numbers

struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-scale, scale).
    mutating func float(_ scale: Float = 1) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in float(scale) } }
}

// MARK: - Encoding (writer side)

/// Float32 → bf16 bits, round to nearest even (finite inputs).
func bf16Bits(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN { return 0x7FC0 }
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }

/// One tensor to write: raw little-endian bytes plus header fields.
struct TestTensor {
    var name: String
    var dtype: String
    var shape: [Int]
    var bytes: [UInt8]

    static func f32(_ name: String, _ shape: [Int], _ values: [Float]) -> TestTensor {
        TestTensor(name: name, dtype: "F32", shape: shape, bytes: values.flatMap { le32($0.bitPattern) })
    }
    static func bf16(_ name: String, _ shape: [Int], _ values: [Float]) -> TestTensor {
        TestTensor(name: name, dtype: "BF16", shape: shape, bytes: values.flatMap { le16(bf16Bits($0)) })
    }
    static func f16(_ name: String, _ shape: [Int], _ values: [Float]) -> TestTensor {
        TestTensor(name: name, dtype: "F16", shape: shape, bytes: values.flatMap { le16(Float16($0).bitPattern) })
    }
    static func i64(_ name: String, _ shape: [Int], _ values: [Int64]) -> TestTensor {
        TestTensor(name: name, dtype: "I64", shape: shape, bytes: values.flatMap { le64(UInt64(bitPattern: $0)) })
    }
    /// From a decoded raw tensor (bytes copied unchanged).
    init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
    }
    init(_ raw: RawTensor) { self.init(name: raw.name, dtype: raw.dtype, shape: raw.shape, bytes: raw.bytes) }
}

func jsonString(_ s: String) -> String {
    let d = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
    let t = String(decoding: d, as: UTF8.self)
    return String(t.dropFirst().dropLast())
}

/// The header JSON of `tensors` laid out contiguously in order.
func safetensorsHeader(_ tensors: [TestTensor], metadata: [String: String]? = ["format": "pt"]) -> String {
    var parts: [String] = []
    if let metadata {
        let m = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
        parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
    }
    var offset = 0
    for t in tensors {
        parts.append("\(jsonString(t.name)):{\"dtype\":\"\(t.dtype)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}")
        offset += t.bytes.count
    }
    return "{" + parts.joined(separator: ",") + "}"
}

/// A complete safetensors file: 8-byte length, header padded with spaces to 8 bytes, data.
/// `headerLength` overrides the length field (for broken files).
func safetensorsBytes(header: String, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
    var h = Array(header.utf8)
    while (h.count % 8) != 0 { h.append(0x20) }
    return le64(headerLength ?? UInt64(h.count)) + h + data
}

@discardableResult
func writeSafetensors(_ tensors: [TestTensor], to path: String, metadata: [String: String]? = ["format": "pt"]) throws -> String {
    let bytes = safetensorsBytes(header: safetensorsHeader(tensors, metadata: metadata), data: tensors.flatMap(\.bytes))
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func writeJSON(_ object: Any, to path: String) throws {
    try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
}

// MARK: - Independent decoding (reader side)

struct RawTensor {
    let name: String
    let dtype: String
    let shape: [Int]
    let bytes: [UInt8]
    var count: Int { shape.reduce(1, *) }

    init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
    }
    /// The tensor a test is about to write, decoded the same way.
    init(_ t: TestTensor) { self.init(name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.bytes) }

    /// Values decoded from the bytes here, not by the reader under test.
    var values: [Float] {
        switch dtype {
        case "F32":
            return stride(from: 0, to: bytes.count, by: 4).map { i in
                Float(bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
            }
        case "BF16":
            return stride(from: 0, to: bytes.count, by: 2).map { i in
                Float(bitPattern: (UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8) << 16)
            }
        case "F16":
            return stride(from: 0, to: bytes.count, by: 2).map { i in
                decodeHalf(UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8)
            }
        default:
            XCTFail("test decoder: unsupported dtype \(dtype)")
            return []
        }
    }
}

/// IEEE half → Float by the textbook formula.
func decodeHalf(_ h: UInt16) -> Float {
    let sign: Double = (h & 0x8000) != 0 ? -1 : 1
    let e = Int((h >> 10) & 0x1F), m = Double(h & 0x3FF)
    if e == 0 { return Float(sign * m * pow(2, -24)) }
    if e == 31 { return m == 0 ? Float(sign) * .infinity : .nan }
    return Float(sign * (1 + m / 1024) * pow(2, Double(e - 15)))
}

/// A safetensors file parsed by the test itself.
struct RawSafetensors {
    let tensors: [String: RawTensor]
    let order: [String]

    init(path: String) throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var n = 0
        for i in 0..<8 { n |= Int(data[i]) << (8 * i) }
        let header = try JSONSerialization.jsonObject(with: Data(data[8..<(8 + n)])) as! [String: Any]
        var tensors: [String: RawTensor] = [:]
        var withOffsets: [(Int, String)] = []
        for (k, v) in header where k != "__metadata__" {
            let e = v as! [String: Any]
            let offs = (e["data_offsets"] as! [NSNumber]).map(\.intValue)
            let shape = (e["shape"] as! [NSNumber]).map(\.intValue)
            tensors[k] = RawTensor(name: k, dtype: e["dtype"] as! String, shape: shape,
                                   bytes: Array(data[(8 + n + offs[0])..<(8 + n + offs[1])]))
            withOffsets.append((offs[0], k))
        }
        self.tensors = tensors
        order = withOffsets.sorted { $0 < $1 }.map(\.1)
    }

    subscript(_ name: String) -> RawTensor? { tensors[name] }
}

// MARK: - Naive arithmetic

/// ‖x‖F in Double, plain loop.
func naiveNorm(_ x: [Float]) -> Double {
    var s = 0.0
    for v in x { s += Double(v) * Double(v) }
    return s.squareRoot()
}

/// scale · B·A with B [out, r], A [r, in] in Double, returned as Double.
func naiveLoRADelta(a: [Float], b: [Float], r: Int, inF: Int, outF: Int, scale: Double) -> [Double] {
    var out = [Double](repeating: 0, count: outF * inF)
    for i in 0..<outF {
        for j in 0..<inF {
            var s = 0.0
            for k in 0..<r { s += Double(b[i * r + k]) * Double(a[k * inF + j]) }
            out[i * inF + j] = scale * s
        }
    }
    return out
}

func naiveNorm(_ x: [Double]) -> Double { x.reduce(0) { $0 + $1 * $1 }.squareRoot() }

func assertClose(_ a: Double, _ b: Double, rel: Double = 1e-9, abs absTol: Double = 1e-12, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssert(Swift.abs(a - b) <= max(absTol, rel * max(Swift.abs(a), Swift.abs(b))),
              "\(a) != \(b) (rel tol \(rel)) \(message)", file: file, line: line)
}

// MARK: - Fixture checkpoints written by tests

let linearKinds: [(parent: String, kind: String)] = [
    ("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
    ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"),
]

/// A miniature Llama-shaped checkpoint: `blocks` blocks of the 7 linear kinds with hidden `h`,
/// kv width `kv`, mlp width `m`, plus a norm and an embedding. Returns [layer name: shape].
func miniModelTensors(blocks: Int = 2, h: Int = 8, kv: Int = 4, m: Int = 12, seed: UInt64 = 1,
                      dtype: String = "BF16", perturb: ((String, inout [Float]) -> Void)? = nil) -> [TestTensor] {
    var rng = SplitMix(seed)
    var tensors: [TestTensor] = []
    func make(_ name: String, _ shape: [Int]) {
        var v = rng.floats(shape.reduce(1, *), scale: 0.5)
        perturb?(name, &v)
        switch dtype {
        case "F32": tensors.append(.f32(name, shape, v))
        case "F16": tensors.append(.f16(name, shape, v))
        default: tensors.append(.bf16(name, shape, v))
        }
    }
    make("model.embed_tokens.weight", [16, h])
    for b in 0..<blocks {
        for (parent, kind) in linearKinds {
            let shape: [Int]
            switch kind {
            case "k_proj", "v_proj": shape = [kv, h]
            case "gate_proj", "up_proj": shape = [m, h]
            case "down_proj": shape = [h, m]
            default: shape = [h, h]
            }
            make("model.layers.\(b).\(parent).\(kind).weight", shape)
        }
        make("model.layers.\(b).input_layernorm.weight", [h])
    }
    make("model.norm.weight", [h])
    return tensors
}

// MARK: - Running ila-diff

typealias RunResult = CommandResult

/// Runs the built ila-diff with `arguments`.
func runILADiff(_ arguments: [String]) throws -> RunResult { try CommandRunner.run("ila-diff", arguments) }

// MARK: - Error assertions

/// Runs `body`, expecting an ILAError whose message starts with `file` and contains every
/// fragment (case-insensitive), on a single line.
func assertILAError(file: String, contains fragments: [String], _ body: () throws -> Void,
                    sourceFile: StaticString = #filePath, line: UInt = #line) {
    do {
        try body()
        XCTFail("expected an error naming \(file) (\(fragments))", file: sourceFile, line: line)
    } catch let e as ILAError {
        XCTAssert(e.message.hasPrefix(file + ": "), "message does not start with \(file): \(e.message)", file: sourceFile, line: line)
        XCTAssertFalse(e.message.contains("\n"), "multi-line message: \(e.message)", file: sourceFile, line: line)
        for f in fragments {
            XCTAssert(e.message.lowercased().contains(f.lowercased()), "message lacks \"\(f)\": \(e.message)", file: sourceFile, line: line)
        }
    } catch {
        XCTFail("expected ILAError, got \(type(of: error)): \(error)", file: sourceFile, line: line)
    }
}
