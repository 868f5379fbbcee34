import Foundation
import ILATestSupport
import XCTest
import ILADiff

final class SafetensorsTests: XCTestCase {
    var tmp: TempDir!
    override func setUp() { tmp = TempDir("safetensors") }
    override func tearDown() { tmp.remove() }

    // MARK: reading

    func testWidensF32F16BF16AgainstOwnDecoding() throws {
        var rng = SplitMix(7)
        let v32 = rng.floats(12, scale: 3), v16 = rng.floats(6, scale: 2), vb = rng.floats(10, scale: 100)
        let path = try writeSafetensors([
            .f32("a", [3, 4], v32), .f16("b", [6], v16), .bf16("c", [2, 5], vb),
            .i64("ids", [2], [7, -1]),
        ], to: tmp.path("m.safetensors"), metadata: ["format": "pt", "note": "x"])
        let raw = try RawSafetensors(path: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.names, ["a", "b", "c", "ids"])
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "x"])
        XCTAssertEqual(f.info("a")?.shape, [3, 4])
        XCTAssertEqual(f.info("a")?.dtype, .F32)
        XCTAssertEqual(f.info("c")?.dtype, .BF16)
        XCTAssertEqual(f.info("c")?.count, 10)
        XCTAssertNil(f.info("zzz"))
        for name in ["a", "b", "c"] {
            let mine = raw[name]!.values, theirs = try f.floats(name)
            XCTAssertEqual(mine.map(\.bitPattern), theirs.map(\.bitPattern), name)
        }
        // F32 is exact; bf16 keeps the top 16 bits (rounded); f16 matches Float16 rounding.
        XCTAssertEqual(try f.floats("a"), v32)
        XCTAssertEqual(try f.floats("b"), v16.map { Float(Float16($0)) })
        for (x, y) in zip(try f.floats("c"), vb) { XCTAssertEqual(x, y, accuracy: abs(y) / 128) }
        assertILAError(file: path, contains: ["ids", "I64", "F32"]) { _ = try f.floats("ids") }
        assertILAError(file: path, contains: ["nope"]) { _ = try f.floats("nope") }
    }

    func testHalfSpecialValues() throws {
        // subnormal, max, -0, inf, one
        let bits: [UInt16] = [0x0001, 0x03FF, 0x7BFF, 0x8000, 0x7C00, 0x3C00, 0xC000]
        let path = tmp.path("h.safetensors")
        try writeSafetensors([TestTensor(name: "h", dtype: "F16", shape: [bits.count], bytes: bits.flatMap(le16))], to: path)
        let got = try SafetensorsFile(path: path).floats("h")
        XCTAssertEqual(got.map(\.bitPattern), bits.map { decodeHalf($0).bitPattern })
        let bfBits: [UInt16] = [0x0001, 0x8000, 0x7F80, 0x3F80, 0xC2F7]
        let bpath = tmp.path("b.safetensors")
        try writeSafetensors([TestTensor(name: "b", dtype: "BF16", shape: [bfBits.count], bytes: bfBits.flatMap(le16))], to: bpath)
        XCTAssertEqual(try SafetensorsFile(path: bpath).floats("b").map(\.bitPattern), bfBits.map { UInt32($0) << 16 })
    }

    func testEmptyTensorsAndNoTensors() throws {
        let path = try writeSafetensors([.f32("e", [0, 4], []), .f32("x", [1], [2])], to: tmp.path("e.safetensors"))
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.floats("e"), [])
        XCTAssertEqual(try f.floats("x"), [2])
        let none = try writeSafetensors([], to: tmp.path("none.safetensors"), metadata: nil)
        XCTAssertEqual(try SafetensorsFile(path: none).names, [])
    }

    func testHeaderOrderDoesNotMatterOffsetsDo() throws {
        // Header lists b before a, but a's bytes come first.
        let a = TestTensor.f32("a", [2], [1, 2]), b = TestTensor.f32("b", [1], [3])
        let header = "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
        let path = tmp.path("o.safetensors")
        try writeBytes(safetensorsBytes(header: header, data: a.bytes + b.bytes), to: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.floats("a"), [1, 2])
        XCTAssertEqual(try f.floats("b"), [3])
    }

    func testReadsTinyFixture() throws {
        let path = try Paths.tinyModel("base-A").appendingPathComponent("model.safetensors").path
        let raw = try RawSafetensors(path: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(Set(f.names), Set(raw.tensors.keys))
        for name in raw.order {
            XCTAssertEqual(f.info(name)?.shape, raw[name]!.shape)
            XCTAssertEqual(try f.floats(name).map(\.bitPattern), raw[name]!.values.map(\.bitPattern), name)
        }
    }

    // MARK: malformed files: one clear error naming the file

    /// Writes `bytes` and expects opening to fail naming the file and mentioning `fragments`.
    private func expectBroken(_ bytes: [UInt8], _ fragments: [String], line: UInt = #line) throws {
        let path = tmp.path("broken-\(line).safetensors")
        try writeBytes(bytes, to: path)
        assertILAError(file: path, contains: fragments, { _ = try SafetensorsFile(path: path) }, line: line)
    }

    private func entry(_ name: String, _ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
    }

    func testShortFiles() throws {
        try expectBroken([], ["0 bytes", "too short"])
        try expectBroken([1, 0, 0], ["3 bytes", "too short"])
    }

    func testHeaderLengthBeyondFile() throws {
        try expectBroken(le64(1000) + Array("{}".utf8), ["header length 1000", "exceeds file size 10"])
        try expectBroken(le64(9_000_000_000_000_000_000) + Array("{}      ".utf8), ["header length 9000000000000000000", "exceeds file size 16"])
    }

    func testHeaderLengthOverLimit() throws {
        // A sparse file larger than the limit, so the length is within the file but too big.
        let path = tmp.path("huge.safetensors")
        try writeBytes(le64(100_000_001) + Array("{}      ".utf8), to: path)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.truncate(atOffset: 100_000_100)
        try h.close()
        assertILAError(file: path, contains: ["header length 100000001", "limit of 100000000"]) { _ = try SafetensorsFile(path: path) }
    }

    func testBadJSON() throws {
        try expectBroken(safetensorsBytes(header: "{\"a\": {\"dtype\": ", data: []), ["not valid JSON"])
        try expectBroken(safetensorsBytes(header: "[1, 2]", data: []), ["not a JSON object"])
        try expectBroken(le64(8) + [0x7B, 0xFF, 0xFE, 0x7D, 0x20, 0x20, 0x20, 0x20], ["UTF-8"])
        try expectBroken(safetensorsBytes(header: "{\"a\": 3}", data: []), ["tensor a", "not an object"])
        try expectBroken(safetensorsBytes(header: "{\"__metadata__\": {\"k\": 1}}", data: []), ["__metadata__"])
    }

    func testUnknownDtype() throws {
        try expectBroken(safetensorsBytes(header: "{" + entry("w", "F33", [2], 0, 8) + "}", data: [UInt8](repeating: 0, count: 8)),
                         ["tensor w", "unknown dtype F33"])
        try expectBroken(safetensorsBytes(header: "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", data: [UInt8](repeating: 0, count: 8)),
                         ["tensor w", "missing dtype"])
    }

    func testOverlappingOffsets() throws {
        let h = "{" + entry("a", "F32", [2], 0, 8) + "," + entry("b", "F32", [2], 4, 12) + "}"
        try expectBroken(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 12)), ["tensor b", "overlap"])
    }

    func testGappedOffsets() throws {
        let h = "{" + entry("a", "F32", [1], 0, 4) + "," + entry("b", "F32", [1], 8, 12) + "}"
        try expectBroken(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 12)), ["tensor b", "gap"])
        // Leading gap.
        let h2 = "{" + entry("a", "F32", [1], 4, 8) + "}"
        try expectBroken(safetensorsBytes(header: h2, data: [UInt8](repeating: 0, count: 8)), ["tensor a", "gap"])
        // Trailing bytes not covered by any tensor.
        let h3 = "{" + entry("a", "F32", [1], 0, 4) + "}"
        try expectBroken(safetensorsBytes(header: h3, data: [UInt8](repeating: 0, count: 12)), ["cover 4 bytes", "holds 12"])
    }

    func testOutOfRangeOffsets() throws {
        let h = "{" + entry("a", "F32", [4], 0, 16) + "}"
        try expectBroken(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 8)), ["tensor a", "beyond the data buffer"])
        let h2 = "{" + entry("a", "F32", [1], 8, 4) + "}"
        try expectBroken(safetensorsBytes(header: h2, data: [UInt8](repeating: 0, count: 8)), ["tensor a", "data_offsets"])
        let h3 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}"
        try expectBroken(safetensorsBytes(header: h3, data: []), ["tensor a", "data_offsets"])
        let h4 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}"
        try expectBroken(safetensorsBytes(header: h4, data: [0, 0, 0, 0]), ["tensor a", "data_offsets"])
    }

    func testByteLengthNotMatchingShape() throws {
        let h = "{" + entry("a", "BF16", [2, 3], 0, 8) + "}"
        try expectBroken(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 8)),
                         ["tensor a", "hold 8 bytes", "needs 12"])
    }

    func testShapeOverflowAndNegative() throws {
        let h = "{" + entry("a", "F32", [4_000_000_000, 4_000_000_000, 4_000_000_000], 0, 8) + "}"
        try expectBroken(safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 8)), ["tensor a", "overflow"])
        let h2 = "{" + entry("a", "F32", [-2], 0, 8) + "}"
        try expectBroken(safetensorsBytes(header: h2, data: [UInt8](repeating: 0, count: 8)), ["tensor a", "shape"])
        let h3 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}"
        try expectBroken(safetensorsBytes(header: h3, data: [0, 0, 0, 0]), ["tensor a", "shape"])
        // Foundation bridges true and 1.0 to the integer 1; the reader must not.
        let h4 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}"
        try expectBroken(safetensorsBytes(header: h4, data: [0, 0, 0, 0]), ["tensor a", "shape"])
        let h5 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}"
        try expectBroken(safetensorsBytes(header: h5, data: [0, 0, 0, 0]), ["tensor a", "data_offsets"])
    }

    func testMissingFileAndDirectory() throws {
        let p = tmp.path("absent.safetensors")
        assertILAError(file: p, contains: ["no such file"]) { _ = try SafetensorsFile(path: p) }
        assertILAError(file: tmp.url.path, contains: ["not a regular file"]) { _ = try SafetensorsFile(path: self.tmp.url.path) }
    }

    // MARK: checkpoints: single file, directory, shards

    func testModelCheckpointSingleFileAndDirectory() throws {
        let tensors = miniModelTensors()
        let file = try writeSafetensors(tensors, to: tmp.path("model.safetensors"))
        let a = try ModelCheckpoint(path: file)
        XCTAssertNil(a.directory)
        XCTAssertEqual(a.names, tensors.map(\.name).sorted())
        let dir = tmp.sub("model")
        try writeSafetensors(tensors, to: dir.appendingPathComponent("model.safetensors").path)
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        let b = try ModelCheckpoint(path: dir.path)
        XCTAssertEqual(b.directory, dir.path)
        XCTAssertNotNil(b.sidecar("config.json"))
        XCTAssertNil(b.sidecar("tokenizer.json"))
        XCTAssertEqual(LinearLayer.layers(in: b).map(\.name).count, 14)
        XCTAssertEqual(LinearLayer.layers(in: b).first?.name, "model.layers.0.self_attn.q_proj")
        XCTAssertEqual(LinearLayer.layers(in: b).last?.name, "model.layers.1.mlp.down_proj")
        for t in tensors { XCTAssertEqual(try b.floats(t.name), try a.floats(t.name)) }
    }

    /// Splits `tensors` into shards plus an index; returns the directory.
    private func writeSharded(_ tensors: [TestTensor], shards: Int, into dir: URL,
                              editMap: ((inout [String: String]) -> Void)? = nil) throws {
        var map: [String: String] = [:]
        let per = (tensors.count + shards - 1) / shards
        for s in 0..<shards {
            let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
            let part = Array(tensors[(s * per)..<min(tensors.count, (s + 1) * per)])
            try writeSafetensors(part, to: dir.appendingPathComponent(name).path)
            for t in part { map[t.name] = name }
        }
        editMap?(&map)
        try writeJSON(["metadata": ["total_size": tensors.map(\.bytes.count).reduce(0, +)], "weight_map": map],
                      to: dir.appendingPathComponent("model.safetensors.index.json").path)
    }

    func testShardedCheckpoint() throws {
        let tensors = miniModelTensors(blocks: 3)
        let dir = tmp.sub("sharded")
        try writeSharded(tensors, shards: 3, into: dir)
        let c = try ModelCheckpoint(path: dir.path)
        XCTAssertEqual(c.names, tensors.map(\.name).sorted())
        for t in tensors {
            XCTAssertEqual(try c.floats(t.name).map(\.bitPattern), RawTensor(name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.bytes).values.map(\.bitPattern))
        }
        XCTAssertTrue(c.file(of: tensors[0].name)!.hasSuffix("model-00001-of-00003.safetensors"))
        XCTAssertTrue(c.file(of: tensors.last!.name)!.hasSuffix("model-00003-of-00003.safetensors"))
        XCTAssertEqual(LinearLayer.layers(in: c).count, 21)
    }

    func testShardedIndexErrors() throws {
        let tensors = miniModelTensors()
        let index = "model.safetensors.index.json"
        // weight_map names a tensor that the shard does not hold.
        let d1 = tmp.sub("wrong-shard")
        try writeSharded(tensors, shards: 2, into: d1) { map in
            map["model.layers.0.self_attn.q_proj.weight"] = "model-00002-of-00002.safetensors"
        }
        assertILAError(file: d1.appendingPathComponent(index).path,
                       contains: ["model.layers.0.self_attn.q_proj.weight", "model-00002-of-00002.safetensors", "no such tensor"]) {
            _ = try ModelCheckpoint(path: d1.path)
        }
        // weight_map names a shard that is missing.
        let d2 = tmp.sub("missing-shard")
        try writeSharded(tensors, shards: 2, into: d2) { map in map["model.norm.weight"] = "model-00009-of-00009.safetensors" }
        assertILAError(file: d2.appendingPathComponent("model-00009-of-00009.safetensors").path, contains: ["no such file"]) {
            _ = try ModelCheckpoint(path: d2.path)
        }
        // weight_map names a file outside the directory.
        let d3 = tmp.sub("escape")
        try writeSharded(tensors, shards: 2, into: d3) { map in map["model.norm.weight"] = "../x.safetensors" }
        assertILAError(file: d3.appendingPathComponent(index).path, contains: ["outside"]) { _ = try ModelCheckpoint(path: d3.path) }
        // index without weight_map / not JSON.
        let d4 = tmp.sub("no-map")
        try writeJSON(["metadata": [:] as [String: Any]], to: d4.appendingPathComponent(index).path)
        assertILAError(file: d4.appendingPathComponent(index).path, contains: ["weight_map"]) { _ = try ModelCheckpoint(path: d4.path) }
        let d5 = tmp.sub("bad-json")
        try Data("{weight_map".utf8).write(to: d5.appendingPathComponent(index))
        assertILAError(file: d5.appendingPathComponent(index).path, contains: ["not valid JSON"]) { _ = try ModelCheckpoint(path: d5.path) }
        // A broken shard is reported by its own name.
        let d6 = tmp.sub("broken-shard")
        try writeSharded(tensors, shards: 2, into: d6)
        let shard2 = d6.appendingPathComponent("model-00002-of-00002.safetensors")
        let bytes = [UInt8](try Data(contentsOf: shard2))
        try writeBytes(Array(bytes.dropLast(2)), to: shard2.path)
        assertILAError(file: shard2.path, contains: ["beyond the data buffer"]) { _ = try ModelCheckpoint(path: d6.path) }
    }

    func testCheckpointDirectoryErrors() throws {
        let empty = tmp.sub("empty")
        assertILAError(file: empty.path, contains: ["no model.safetensors"]) { _ = try ModelCheckpoint(path: empty.path) }
        let bin = tmp.sub("bin")
        try Data([0]).write(to: bin.appendingPathComponent("pytorch_model.bin"))
        assertILAError(file: bin.path, contains: ["pytorch_model.bin"]) { _ = try ModelCheckpoint(path: bin.path) }
        let adapter = tmp.sub("adapter")
        try writeJSON(["r": 8, "lora_alpha": 16], to: adapter.appendingPathComponent("adapter_config.json").path)
        assertILAError(file: adapter.path, contains: ["LoRA adapter"]) { _ = try ModelCheckpoint(path: adapter.path) }
        let missing = tmp.path("nowhere")
        assertILAError(file: missing, contains: ["no such file"]) { _ = try ModelCheckpoint(path: missing) }
    }
}
