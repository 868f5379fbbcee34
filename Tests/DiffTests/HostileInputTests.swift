import Foundation
import ILADiff
import ILATestSupport
import XCTest

/// Hostile inputs against the built `ila-diff` and the deltas reader (issue #6): each ends in one
/// clear `error:` line and exit 1 within seconds, leaving no output file. Inputs found by the fuzz
/// harnesses are kept in fuzz/regressions/<harness>/.
final class HostileInputTests: XCTestCase {
    var tmp: TempDir!
    let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
    let regressions = RepoPaths.root.appendingPathComponent("fuzz/regressions").path

    override func setUpWithError() throws { tmp = TempDir("ila-hostile-diff") }
    override func tearDown() { tmp.remove() }

    /// Runs `ila-diff base aligned -o <tmp>/out.h5` and checks the failure contract.
    func assertRefused(base: String, aligned: String, mentions: [String],
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let out = tmp.path("out.h5")
        let before = tmp.contents()
        let start = Date()
        let r = try CommandRunner.run("ila-diff", [base, aligned, "-o", out])
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "stderr: \(r.stderr)", file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "expected '\(m)' in: \(r.stderr)", file: file, line: line) }
        XCTAssertLessThan(elapsed, 10, file: file, line: line)
        XCTAssertEqual(tmp.contents(), before, "output files were left", file: file, line: line)
    }

    /// A safetensors file: 8-byte length, `header` verbatim, then `data`.
    func raw(_ name: String, length: UInt64? = nil, header: String, data: [UInt8] = []) throws -> String {
        var bytes: [UInt8] = []
        let h = Array(header.utf8)
        withUnsafeBytes(of: (length ?? UInt64(h.count)).littleEndian) { bytes += $0 }
        bytes += h + data
        let p = tmp.path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func testHeaderLengthsAndShapesThatOverflow() throws {
        let huge = try raw("huge.safetensors", length: UInt64.max, header: "{}")
        try assertRefused(base: huge, aligned: huge, mentions: ["huge.safetensors", "header length"])
        let i64 = try raw("i64.safetensors", length: 1 << 63, header: "{}")
        try assertRefused(base: i64, aligned: i64, mentions: ["header length"])
        // 2^62 · 4 bytes overflows Int; 2^32 · 2^32 elements too.
        let shape = try raw("shape.safetensors", header: #"{"model.layers.0.self_attn.q_proj.weight":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#,
                            data: [UInt8](repeating: 0, count: 16))
        try assertRefused(base: shape, aligned: shape, mentions: ["overflows"])
        let wrap = try raw("wrap.safetensors", header: #"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#)
        try assertRefused(base: wrap, aligned: wrap, mentions: ["overflows"])
        // Offsets beyond Int64.
        let offs = try raw("offs.safetensors", header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]}}"#)
        try assertRefused(base: offs, aligned: offs, mentions: ["data_offsets"])
    }

    func testTensorDeclaredLargerThanTheFile() throws {
        let big = try raw("big.safetensors", header: #"{"model.layers.0.self_attn.q_proj.weight":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}}"#,
                          data: [UInt8](repeating: 0, count: 64))
        try assertRefused(base: big, aligned: big, mentions: ["beyond the data buffer"])
    }

    func testDeeplyNestedAndHugeJSON() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let nested = try raw("nested.safetensors", header: deep)
        try assertRefused(base: nested, aligned: nested, mentions: ["nested.safetensors", "JSON"])
        let deepObject = try raw("deepobj.safetensors", header: String(repeating: #"{"a":"#, count: 50_000) + "1" + String(repeating: "}", count: 50_000))
        try assertRefused(base: deepObject, aligned: deepObject, mentions: ["JSON"])
        // A header just over the 100 MB limit is refused before it is parsed.
        let over = try raw("over.safetensors", length: 100_000_001, header: "{}", data: [])
        try assertRefused(base: over, aligned: over, mentions: ["header length"])
        // A deeply nested adapter_config.json.
        let adapter = tmp.url.appendingPathComponent("adapter")
        try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
        try Data(deep.utf8).write(to: adapter.appendingPathComponent("adapter_config.json"))
        try FileManager.default.copyItem(atPath: "\(tiny)/lora-define-001/adapter_model.safetensors",
                                         toPath: adapter.appendingPathComponent("adapter_model.safetensors").path)
        try assertRefused(base: "\(tiny)/base-A", aligned: adapter.path, mentions: ["adapter_config.json"])
    }

    func testZeroSizedDimensions() throws {
        let zero = try raw("zero.safetensors", header: #"{"model.layers.0.self_attn.q_proj.weight":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}}"#)
        try assertRefused(base: zero, aligned: zero, mentions: ["q_proj", "[0, 4]"])
    }

    /// lora_A under `base_model.model.<module>` and lora_B under `<module>`: the adapter used to
    /// trap on a force-unwrap.
    func testLoRAFactorsUnderTwoSpellingsOfOneModule() throws {
        let adapter = tmp.url.appendingPathComponent("mixed")
        try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
        try Data(#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#.utf8).write(to: adapter.appendingPathComponent("adapter_config.json"))
        let header = #"{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[2,64],"data_offsets":[0,512]},"#
            + #""model.layers.0.self_attn.q_proj.lora_B.weight":{"dtype":"F32","shape":[64,2],"data_offsets":[512,1024]}}"#
        let p = try raw("mixed/adapter_model.safetensors", header: header, data: [UInt8](repeating: 0, count: 1024))
        XCTAssertTrue(p.hasSuffix("mixed/adapter_model.safetensors"))
        try assertRefused(base: "\(tiny)/base-A", aligned: adapter.path, mentions: ["q_proj", "same module name"])
    }

    /// A rank_pattern key with nested repetition made regex matching take minutes.
    func testCatastrophicPatternKeyIsRefused() throws {
        let adapter = tmp.url.appendingPathComponent("redos")
        try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
        try Data(#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "rank_pattern": {"(.*.*.*)*x": 4}}"#.utf8)
            .write(to: adapter.appendingPathComponent("adapter_config.json"))
        try FileManager.default.copyItem(atPath: "\(tiny)/lora-define-001/adapter_model.safetensors",
                                         toPath: adapter.appendingPathComponent("adapter_model.safetensors").path)
        try assertRefused(base: "\(tiny)/base-A", aligned: adapter.path, mentions: ["(.*.*.*)*x", "too costly"])
        for key in ["(a+)+b", "(x|xy)*z", ".*.*.*.*.*q"] {
            XCTAssertNotNil(riskOf(key), key)
        }
        for key in ["q_proj", "model.layers.0.self_attn.q_proj", "layers\\.(0|1)\\..*q_proj", "(.*\\.)?v_proj", "[a-z_]+_proj"] {
            XCTAssertNil(riskOf(key), key)
        }
    }

    private func riskOf(_ key: String) -> String? {
        let dir = tmp.url.appendingPathComponent("risk-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let cfg = ["peft_type": "LORA", "r": 8, "lora_alpha": 16, "rank_pattern": [key: 4]] as [String: Any]
        try? JSONSerialization.data(withJSONObject: cfg).write(to: dir.appendingPathComponent("adapter_config.json"))
        try? FileManager.default.copyItem(atPath: "\(tiny)/lora-define-001/adapter_model.safetensors",
                                          toPath: dir.appendingPathComponent("adapter_model.safetensors").path)
        defer { try? FileManager.default.removeItem(at: dir) }
        do { _ = try LoRAAdapter(path: dir.path); return nil } catch let e as ILAError {
            return e.message.contains("too costly") ? e.message : nil
        } catch { return nil }
    }

    // MARK: deltas.h5

    /// Opening and loading every layer fails with one ILAError naming the file.
    func assertDeltasRefused(_ name: String, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        let path = "\(regressions)/deltas_raw/\(name)"
        let start = Date()
        do {
            let store = try DeltaStore(path: path)
            for l in store.layers { _ = try store.delta(l) }
            XCTFail("\(name) was accepted", file: file, line: line)
        } catch let e as ILAError {
            XCTAssertTrue(e.message.hasPrefix(path), e.message, file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), e.message, file: file, line: line)
            for m in mentions { XCTAssertTrue(e.message.contains(m), "expected '\(m)' in: \(e.message)", file: file, line: line) }
        } catch {
            XCTFail("not an ILAError: \(error)", file: file, line: line)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, file: file, line: line)
    }

    func testDeltasDeclaringMoreThanTheyStore() {
        // 60000×60000 float32 (14 GB) declared, nothing stored: refused before allocating.
        assertDeltasRefused("declared-60000x60000-no-data.h5", mentions: ["[60000, 60000]", "stores only 0"])
        assertDeltasRefused("contiguous-declared-larger.h5", mentions: ["[30000, 30000]", "stores only"])
        assertDeltasRefused("shape-attribute-overflow.h5", mentions: ["attribute shape"])
    }

    /// Corrupt HDF5 containers on which libhdf5 itself crashes or hangs (fuzz/deltas_raw): the
    /// structure probe refuses them.
    func testCorruptContainersAreRefused() {
        assertDeltasRefused("corrupt-global-heap-segv.h5", mentions: ["internal structure is corrupt"])
        // Passed the generic structure walk but crashed DeltaStore's own attribute reads: the
        // probe now repeats those reads in the child too.
        assertDeltasRefused("corrupt-vlen-attribute-segv.h5", mentions: ["internal structure is corrupt"])
        setenv("ILA_HDF5_PROBE_MS", "1500", 1)
        defer { unsetenv("ILA_HDF5_PROBE_MS") }
        assertDeltasRefused("corrupt-hang.h5", mentions: ["hang"])
    }

    func testCorruptDeltasThroughTheBinary() throws {
        let r = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas",
                                                   "\(regressions)/deltas_raw/corrupt-global-heap-segv.h5",
                                                   "--data", RepoPaths.fixtures.appendingPathComponent("data/define.eval.jsonl").path,
                                                   "--limit", "2"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("corrupt-global-heap-segv.h5"), r.stderr)
    }
}
