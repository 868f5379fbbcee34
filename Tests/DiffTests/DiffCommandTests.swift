import Foundation
import ILATestSupport
import XCTest
import ILADiff

/// Runs the built `ila-diff` binary end to end.
final class DiffCommandTests: XCTestCase {
    var tmp: TempDir!
    override func setUp() { tmp = TempDir("diff-cmd") }
    override func tearDown() { tmp.remove() }

    // MARK: helpers

    /// Expects exit 1, exactly one stderr line `error: …` naming `names` (a path or file name),
    /// nothing written to the (initially empty) output folder, and no output file.
    private func expectFailure(_ args: [String], output: String, naming names: [String], contains fragments: [String] = [],
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let outDir = URL(fileURLWithPath: output).deletingLastPathComponent().path
        let before = (try? FileManager.default.contentsOfDirectory(atPath: outDir))?.sorted() ?? []
        let r = try runILADiff(args + ["-o", output])
        XCTAssertEqual(r.status, 1, "exit status; stderr: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderrLines.count, 1, "stderr should be one line, got: \(r.stderr)", file: file, line: line)
        let first = r.stderrLines.first ?? ""
        XCTAssert(first.hasPrefix("error: "), "stderr: \(first)", file: file, line: line)
        XCTAssert(r.stderr.hasSuffix("\n"), file: file, line: line)
        for n in names { XCTAssert(first.contains(n), "error line does not name \(n): \(first)", file: file, line: line) }
        for f in fragments { XCTAssert(first.lowercased().contains(f.lowercased()), "error line lacks \"\(f)\": \(first)", file: file, line: line) }
        XCTAssertEqual(r.stdout, "", "nothing on stdout on failure", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output) && !before.contains(URL(fileURLWithPath: output).lastPathComponent),
                       "output file was created", file: file, line: line)
        let after = (try? FileManager.default.contentsOfDirectory(atPath: outDir))?.sorted() ?? []
        XCTAssertEqual(after, before, "output folder changed (temporary file left?)", file: file, line: line)
    }

    private func run(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> RunResult {
        let r = try runILADiff(args)
        XCTAssertEqual(r.status, 0, "ila-diff \(args.joined(separator: " ")) failed: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr, "", "stderr should be quiet when not a tty", file: file, line: line)
        return r
    }

    private func jsonObject(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "stdout is not a JSON object: \(text)")
    }

    /// A sharded copy of a single-file model directory, written by the test's own writer.
    private func shardedCopy(of model: URL, shards: Int, into dir: URL) throws {
        let raw = try RawSafetensors(path: model.appendingPathComponent("model.safetensors").path)
        for side in ["config.json", "tokenizer.json"] {
            let s = model.appendingPathComponent(side)
            if FileManager.default.fileExists(atPath: s.path) { try FileManager.default.copyItem(at: s, to: dir.appendingPathComponent(side)) }
        }
        var map: [String: String] = [:]
        let names = raw.order
        let per = (names.count + shards - 1) / shards
        for s in 0..<shards {
            let shard = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
            let part = names[(s * per)..<min(names.count, (s + 1) * per)].map { TestTensor(raw[$0]!) }
            try writeSafetensors(part, to: dir.appendingPathComponent(shard).path)
            for t in part { map[t.name] = shard }
        }
        try writeJSON(["metadata": ["total_size": 0], "weight_map": map], to: dir.appendingPathComponent("model.safetensors.index.json").path)
    }

    // MARK: successful runs

    func testLoRAFixtureTableAndFile() throws {
        let base = try Paths.tinyModel("base-A"), adapter = try Paths.tinyModel("lora-pyapi")
        let out = tmp.sub("out").appendingPathComponent("deltas.h5").path
        let r = try run([base.path, adapter.path, "-o", out])
        XCTAssertEqual(tmp.contents("out"), ["deltas.h5"])
        // The table: one row per layer, sorted by rel change, then the per-kind summary.
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssert(lines.first?.hasPrefix("lora deltas, 14 linear layers") == true, r.stdout)
        let rows = lines.filter { $0.hasPrefix("model.layers.") }
        XCTAssertEqual(rows.count, 14)
        let rel = rows.compactMap { Double($0.split(separator: " ").last!) }
        XCTAssertEqual(rel.count, 14)
        XCTAssertEqual(rel, rel.sorted(by: >), "table not sorted by rel change")
        XCTAssert(r.stdout.contains("per kind:"))
        for k in LayerKind.llama { XCTAssert(lines.contains { $0.hasPrefix(k.rawValue + " ") }, "no summary row for \(k)") }
        XCTAssert(r.stdout.contains("wrote \(out)"))

        // The file: factors exactly as stored in the adapter, scale alpha/r, norms as computed naively.
        let store = try DeltaStore(path: out)
        XCTAssertEqual(store.kind, "lora")
        XCTAssertEqual(store.info.base, base.path)
        XCTAssertEqual(store.info.aligned, adapter.path)
        XCTAssert(store.info.tool.hasPrefix("ila-diff "))
        XCTAssertEqual(store.layers.count, 14)
        let rawAd = try RawSafetensors(path: adapter.appendingPathComponent("adapter_model.safetensors").path)
        let rawBase = try RawSafetensors(path: base.appendingPathComponent("model.safetensors").path)
        for layer in store.layers {
            let d = try store.delta(layer)
            guard case .factors(let a, let b, let rank, let scale) = d.payload else { return XCTFail("expected factors") }
            let ra = rawAd["base_model.model.\(layer.name).lora_A.weight"]!.values
            let rb = rawAd["base_model.model.\(layer.name).lora_B.weight"]!.values
            XCTAssertEqual(a, ra)
            XCTAssertEqual(b, rb)
            XCTAssertEqual(rank, 8)
            XCTAssertEqual(scale, 2)
            let naive = naiveLoRADelta(a: ra, b: rb, r: 8, inF: d.inFeatures, outF: d.outFeatures, scale: 2)
            assertClose(d.normDelta, naiveNorm(naive), rel: 1e-9)
            assertClose(d.normBase, naiveNorm(rawBase[layer.weightName]!.values), rel: 1e-12)
        }
    }

    func testFullFixtureJSONAndFile() throws {
        let base = try Paths.tinyModel("base-A"), aligned = try Paths.tinyModel("full-pyapi")
        let out = tmp.path("full.h5")
        let r = try run([base.path, aligned.path, "-o", out, "--json"])
        let obj = try jsonObject(r.stdout)
        XCTAssertEqual(obj["kind"] as? String, "full")
        let layers = try XCTUnwrap(obj["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 14)
        let rawBase = try RawSafetensors(path: base.appendingPathComponent("model.safetensors").path)
        let rawAligned = try RawSafetensors(path: aligned.appendingPathComponent("model.safetensors").path)
        let store = try DeltaStore(path: out)
        XCTAssertEqual(store.kind, "full")
        XCTAssertEqual(layers.compactMap { $0["name"] as? String }, allMiniModules(), "JSON layers in canonical order")
        for l in layers {
            for key in ["name", "block", "kind", "shape", "norm_delta", "norm_base", "rel_change"] {
                XCTAssertNotNil(l[key], "layer lacks \(key)")
            }
            let name = try XCTUnwrap(l["name"] as? String)
            let layer = try XCTUnwrap(LinearLayer(name: name))
            XCTAssertEqual((l["block"] as? NSNumber)?.intValue, layer.block)
            XCTAssertEqual(l["kind"] as? String, layer.kind.rawValue)
            let w0 = rawBase[layer.weightName]!.values, w1 = rawAligned[layer.weightName]!.values
            XCTAssertEqual((l["shape"] as? [NSNumber])?.map(\.intValue), rawBase[layer.weightName]!.shape)
            var expected = [Float](repeating: 0, count: w0.count)
            for i in 0..<w0.count { expected[i] = w1[i] - w0[i] }
            let nd = try XCTUnwrap((l["norm_delta"] as? NSNumber)?.doubleValue)
            let nb = try XCTUnwrap((l["norm_base"] as? NSNumber)?.doubleValue)
            let rel = try XCTUnwrap((l["rel_change"] as? NSNumber)?.doubleValue)
            assertClose(nd, naiveNorm(expected), rel: 1e-12, name)
            assertClose(nb, naiveNorm(w0), rel: 1e-12, name)
            assertClose(rel, naiveNorm(expected) / naiveNorm(w0), rel: 1e-12, name)
            // The stored delta is exactly aligned − base in float32 (bf16 inputs).
            let d = try store.delta(layer)
            guard case .full(let values) = d.payload else { return XCTFail("expected a full delta") }
            XCTAssertEqual(values.map(\.bitPattern), expected.map(\.bitPattern), name)
            // (Foundation's JSON parser on Linux may be off by an ulp, so not bit-exact here.)
            assertClose(d.normDelta, nd, rel: 1e-15)
        }
    }

    func testShardedBaseGivesTheSameDeltas() throws {
        let base = try Paths.tinyModel("base-A"), aligned = try Paths.tinyModel("full-pyapi")
        let sharded = tmp.sub("base-A-sharded")
        try shardedCopy(of: base, shards: 3, into: sharded)
        let shardedAligned = tmp.sub("full-sharded")
        try shardedCopy(of: aligned, shards: 2, into: shardedAligned)
        let ref = tmp.path("ref.h5"), a = tmp.path("a.h5"), b = tmp.path("b.h5")
        _ = try run([base.path, aligned.path, "-o", ref])
        _ = try run([sharded.path, aligned.path, "-o", a])
        _ = try run([sharded.path, shardedAligned.path, "-o", b])
        let s0 = try DeltaStore(path: ref)
        for other in [try DeltaStore(path: a), try DeltaStore(path: b)] {
            XCTAssertEqual(other.layers, s0.layers)
            for l in s0.layers {
                let x = try s0.delta(l), y = try other.delta(l)
                guard case .full(let dx) = x.payload, case .full(let dy) = y.payload else { return XCTFail() }
                XCTAssertEqual(dx, dy)
                XCTAssertEqual(x.normDelta, y.normDelta)
                XCTAssertEqual(x.normBase, y.normBase)
            }
        }
        // A LoRA adapter against the sharded base too.
        let lora = tmp.path("lora.h5")
        _ = try run([sharded.path, try Paths.tinyModel("lora-pyapi").path, "-o", lora, "--json"])
        XCTAssertEqual(try DeltaStore(path: lora).layers.count, 14)
        // A single .safetensors file as BASE.
        _ = try run([base.appendingPathComponent("model.safetensors").path, aligned.path, "-o", tmp.path("file.h5")])
    }

    func testOptionsIncludeRankDtype() throws {
        let base = try Paths.tinyModel("base-A").path, aligned = try Paths.tinyModel("full-pyapi").path
        // --include
        let inc = tmp.path("inc.h5")
        let r = try run([base, aligned, "-o", inc, "--include", #"layers\.1\.(self_attn|mlp)\.(q|down)"#, "--json"])
        let names = try XCTUnwrap(try jsonObject(r.stdout)["layers"] as? [[String: Any]]).compactMap { $0["name"] as? String }
        XCTAssertEqual(names, ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"])
        XCTAssertEqual(try DeltaStore(path: inc).layers.map(\.name), names)
        // --dtype f16: deltas rounded to float16, norms still those of the float32 delta.
        let f32 = tmp.path("f32.h5"), f16 = tmp.path("f16.h5")
        _ = try run([base, aligned, "-o", f32])
        _ = try run([base, aligned, "-o", f16, "--dtype", "f16"])
        let s32 = try DeltaStore(path: f32), s16 = try DeltaStore(path: f16)
        for l in s32.layers {
            XCTAssertEqual(s16.layerInfo(l)?.dtype, "float16")
            XCTAssertEqual(s32.layerInfo(l)?.dtype, "float32")
            guard case .full(let x) = try s32.delta(l).payload, case .full(let y) = try s16.delta(l).payload else { return XCTFail() }
            XCTAssertEqual(y, x.map { Float(Float16($0)) })
            XCTAssertEqual(s16.layerInfo(l)?.normDelta, s32.layerInfo(l)?.normDelta)
        }
        // --rank R: factors with scale 1 and a reconstruction error in the JSON.
        let ranked = tmp.path("rank.h5")
        let rr = try run([base, aligned, "-o", ranked, "--rank", "4", "--json"])
        let layers = try XCTUnwrap(try jsonObject(rr.stdout)["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 14)
        let store = try DeltaStore(path: ranked)
        for l in layers {
            let err = try XCTUnwrap((l["reconstruction_error"] as? NSNumber)?.doubleValue)
            XCTAssert(err > 0 && err < 1)
            XCTAssertEqual((l["rank"] as? NSNumber)?.intValue, 4)
            let info = try XCTUnwrap(store.layerInfo(LinearLayer(name: l["name"] as! String)!))
            XCTAssertEqual(info.rank, 4)
            XCTAssertEqual(info.scale, 1)
            XCTAssertEqual(info.reconstructionError ?? -1, err, accuracy: 1e-12)
        }
        // The table shows the SVD error column.
        let t = try run([base, aligned, "-o", tmp.path("rank2.h5"), "--rank", "2"])
        XCTAssert(t.stdout.contains("svd err"))
    }

    /// A zero base weight with a nonzero update: rel change is infinite, JSON says null.
    func testZeroBaseWeight() throws {
        let zero = "model.layers.0.self_attn.q_proj.weight"
        let base = try writeSafetensors(miniModelTensors(seed: 1, dtype: "F32") { name, v in
            if name == zero { v = [Float](repeating: 0, count: v.count) }
        }, to: tmp.path("base.safetensors"))
        let aligned = try writeSafetensors(miniModelTensors(seed: 2, dtype: "F32"), to: tmp.path("aligned.safetensors"))
        let r = try run([base, aligned, "-o", tmp.path("z.h5"), "--json"])
        let layers = try XCTUnwrap(try jsonObject(r.stdout)["layers"] as? [[String: Any]])
        let q = try XCTUnwrap(layers.first { $0["name"] as? String == "model.layers.0.self_attn.q_proj" })
        XCTAssert(q["rel_change"] is NSNull, "\(q)")
        XCTAssertEqual((q["norm_base"] as? NSNumber)?.doubleValue, 0)
        let t = try run([base, aligned, "-o", tmp.path("z2.h5")])
        XCTAssert(t.stdout.split(separator: "\n").contains { $0.hasPrefix("model.layers.0.self_attn.q_proj ") && $0.hasSuffix("inf") }, t.stdout)
    }

    func testOverwritesExistingOutput() throws {
        let out = tmp.path("deltas.h5")
        try Data("old".utf8).write(to: URL(fileURLWithPath: out))
        _ = try run([try Paths.tinyModel("base-A").path, try Paths.tinyModel("lora-pyapi").path, "-o", out])
        XCTAssertEqual(try DeltaStore(path: out).kind, "lora")
        XCTAssertEqual(tmp.contents(), ["deltas.h5"])
    }

    func testHelpAndUsage() throws {
        let h = try runILADiff(["--help"])
        XCTAssertEqual(h.status, 0)
        XCTAssert(h.stdout.contains("Examples") && h.stdout.contains("--rank") && h.stdout.contains("--include"), h.stdout)
        XCTAssertEqual(try runILADiff([]).status, 2)
        let base = try Paths.tinyModel("base-A").path
        XCTAssertEqual(try runILADiff([base, base]).status, 2, "missing -o is a usage error")
        XCTAssertEqual(try runILADiff([base, base, "-o", tmp.path("x.h5"), "--dtype", "bf16"]).status, 2)
        XCTAssertEqual(try runILADiff([base, base, "-o", tmp.path("x.h5"), "--rank", "0"]).status, 2)
        XCTAssertEqual(tmp.contents(), [])
    }

    /// The progress bar is drawn on stderr only when it is a terminal (here a pty from `script`).
    func testProgressBarOnlyOnTTY() throws {
        let script = "/usr/bin/script"
        guard FileManager.default.isExecutableFile(atPath: script) else { throw XCTSkip("util-linux script(1) not installed") }
        let exe = try Paths.ilaDiff().path
        let base = try Paths.tinyModel("base-A").path, adapter = try Paths.tinyModel("lora-pyapi").path
        let out = tmp.path("tty.h5")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: script)
        // Only stderr reaches the pty: stdout goes to /dev/null inside.
        p.arguments = ["-qec", "'\(exe)' '\(base)' '\(adapter)' -o '\(out)' > /dev/null", "/dev/null"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let text = String(decoding: data, as: UTF8.self)
        XCTAssert(text.contains("\rdiff ") && text.contains("14/14"), "no progress bar on a tty: \(text.debugDescription)")
        XCTAssert(text.hasSuffix("\r\u{1B}[K"), "progress line not cleared at the end: \(text.suffix(40).debugDescription)")
        XCTAssert(FileManager.default.fileExists(atPath: out))
        // Without a tty (every other test here) stderr stays empty.
        XCTAssertEqual(try runILADiff([base, adapter, "-o", out]).stderr, "")
    }

    // MARK: failures: exit 1, one line naming the file, no output

    func testMissingPaths() throws {
        let base = try Paths.tinyModel("base-A").path
        let out = tmp.sub("out").appendingPathComponent("d.h5").path
        let nowhere = tmp.path("nowhere")
        try expectFailure([nowhere, base], output: out, naming: [nowhere], contains: ["no such file"])
        try expectFailure([base, nowhere], output: out, naming: [nowhere], contains: ["no such file"])
        let emptyDir = tmp.sub("empty-model").path
        try expectFailure([base, emptyDir], output: out, naming: [emptyDir], contains: ["no model.safetensors"])
    }

    func testUnwritableOutput() throws {
        let base = try Paths.tinyModel("base-A").path, adapter = try Paths.tinyModel("lora-pyapi").path
        // Folder missing.
        let missing = tmp.path("no-such-folder/deltas.h5")
        let r = try runILADiff([base, adapter, "-o", missing])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
        XCTAssert(r.stderr.hasPrefix("error: \(missing): "), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("no-such-folder")))
        // The output path is a folder.
        let folder = tmp.sub("is-a-folder")
        try expectFailure([base, adapter], output: folder.path, naming: [folder.path], contains: ["directory"])
        // The parent is a regular file.
        let plain = tmp.path("plain")
        try Data("x".utf8).write(to: URL(fileURLWithPath: plain))
        let r2 = try runILADiff([base, adapter, "-o", plain + "/deltas.h5"])
        XCTAssertEqual(r2.status, 1)
        XCTAssertEqual(r2.stderrLines.count, 1, r2.stderr)
        XCTAssert(r2.stderr.hasPrefix("error: \(plain)/deltas.h5: "), r2.stderr)
        // A read-only folder (root may write anywhere, so only checked for other users).
        if getuid() != 0 {
            let ro = tmp.sub("read-only")
            chmod(ro.path, 0o555)
            defer { chmod(ro.path, 0o755) }
            try expectFailure([base, adapter], output: ro.appendingPathComponent("d.h5").path,
                              naming: [ro.appendingPathComponent("d.h5").path], contains: ["not writable"])
        }
    }

    /// Every malformed-safetensors case as BASE (a bare file) and as ALIGNED (inside a model directory).
    func testMalformedSafetensors() throws {
        let good = try Paths.tinyModel("base-A")
        let goodFile = good.appendingPathComponent("model.safetensors").path
        let raw = [UInt8](try Data(contentsOf: URL(fileURLWithPath: goodFile)))
        var n = 0
        for i in 0..<8 { n |= Int(raw[i]) << (8 * i) }
        let header = String(decoding: raw[8..<(8 + n)], as: UTF8.self)
        let data = Array(raw[(8 + n)...])
        let firstName = "model.embed_tokens.weight"

        func replacing(_ a: String, _ b: String) -> String {
            guard let r = header.range(of: a) else { XCTFail("fixture header lacks \(a)"); return header }
            return header.replacingCharacters(in: r, with: b)
        }
        // Find the first tensor's entry to bend its offsets.
        let obj = try JSONSerialization.jsonObject(with: Data(header.utf8)) as! [String: Any]
        let e0 = obj[firstName] as! [String: Any]
        let offs0 = (e0["data_offsets"] as! [NSNumber]).map(\.intValue)
        let offsText = "\"data_offsets\":[\(offs0[0]),\(offs0[1])]"
        XCTAssert(header.contains(offsText), "fixture header layout changed")
        let dtypeText = "\"dtype\":\"BF16\""
        // The tensor stored right after the first one.
        let (secondName, second) = obj.compactMap { k, v -> (String, [Int])? in
            guard let e = v as? [String: Any], let o = e["data_offsets"] as? [NSNumber] else { return nil }
            return (k, o.map(\.intValue))
        }.first { $0.1[0] == offs0[1] }!
        let offs1 = second
        let secondText = "\"data_offsets\":[\(offs1[0]),\(offs1[1])]"
        XCTAssert(header.contains(secondText))

        let cases: [(String, [UInt8], [String])] = [
            ("short", [0x10, 0, 0], ["3 bytes", "too short"]),
            ("header-beyond-file", le64(UInt64(raw.count)) + Array(raw[8...]), ["header length \(raw.count)", "exceeds file size"]),
            ("header-huge", le64(9_000_000_000_000_000_000) + Array(raw[8...]), ["header length 9000000000000000000"]),
            ("bad-json", safetensorsBytes(header: "{\"" + firstName + "\": {", data: data), ["not valid JSON"]),
            ("unknown-dtype", safetensorsBytes(header: header.replacingOccurrences(of: dtypeText, with: "\"dtype\":\"BF17\""), data: data),
             ["unknown dtype BF17"]),
            ("overlap", safetensorsBytes(header: replacing(secondText, "\"data_offsets\":[\(offs1[0] - 2),\(offs1[1] - 2)]"), data: data),
             ["overlap", secondName]),
            ("gap", safetensorsBytes(header: replacing(offsText, "\"data_offsets\":[\(offs0[0]),\(offs0[1] - 128)]")
                .replacingOccurrences(of: "\"shape\":[512,64]", with: "\"shape\":[511,64]"), data: data), ["gap", secondName]),
            ("out-of-range", Array(raw.dropLast(6)), ["beyond the data buffer"]),
            ("byte-length", safetensorsBytes(header: replacing(offsText, "\"data_offsets\":[\(offs0[0]),\(offs0[1] - 2)]"), data: data),
             ["needs"]),
        ]
        let out = tmp.sub("out").appendingPathComponent("deltas.h5").path
        for (label, bytes, fragments) in cases {
            // As BASE: the bare file.
            let f = tmp.path("\(label).safetensors")
            try writeBytes(bytes, to: f)
            try expectFailure([f, try Paths.tinyModel("full-pyapi").path], output: out, naming: [f], contains: fragments)
            // As ALIGNED: a model directory whose model.safetensors is broken.
            let dir = tmp.sub("aligned-\(label)")
            let inner = dir.appendingPathComponent("model.safetensors").path
            try writeBytes(bytes, to: inner)
            try expectFailure([good.path, dir.path], output: out, naming: [inner], contains: fragments)
        }
        // As a shard of a sharded BASE.
        let sharded = tmp.sub("sharded")
        try shardedCopy(of: good, shards: 2, into: sharded)
        let shard2 = sharded.appendingPathComponent("model-00002-of-00002.safetensors")
        let s2 = [UInt8](try Data(contentsOf: shard2))
        try writeBytes(Array(s2.dropLast(1)), to: shard2.path)
        try expectFailure([sharded.path, try Paths.tinyModel("full-pyapi").path], output: out, naming: [shard2.path],
                          contains: ["beyond the data buffer"])
    }

    func testShardIndexNamesMissingTensor() throws {
        let good = try Paths.tinyModel("base-A")
        let sharded = tmp.sub("sharded")
        try shardedCopy(of: good, shards: 2, into: sharded)
        let indexPath = sharded.appendingPathComponent("model.safetensors.index.json")
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: indexPath)) as! [String: Any]
        var map = index["weight_map"] as! [String: String]
        let moved = "model.layers.0.self_attn.q_proj.weight"
        let other = map[moved] == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors"
        map[moved] = other
        index["weight_map"] = map
        try writeJSON(index, to: indexPath.path)
        let out = tmp.sub("out").appendingPathComponent("d.h5").path
        try expectFailure([sharded.path, try Paths.tinyModel("lora-pyapi").path], output: out,
                          naming: [indexPath.path], contains: [moved, other])
    }

    /// Base/aligned mismatches found while computing: missing tensor, shape, NaN/Inf.
    func testMismatchedAligned() throws {
        let good = try Paths.tinyModel("base-A")
        let raw = try RawSafetensors(path: try Paths.tinyModel("full-pyapi").appendingPathComponent("model.safetensors").path)
        func alignedDir(_ label: String, _ edit: (inout [TestTensor]) -> Void) throws -> URL {
            var tensors = raw.order.map { TestTensor(raw[$0]!) }
            edit(&tensors)
            let dir = tmp.sub("aligned-\(label)")
            try writeSafetensors(tensors, to: dir.appendingPathComponent("model.safetensors").path)
            return dir
        }
        let out = tmp.sub("out").appendingPathComponent("deltas.h5").path
        let victim = "model.layers.1.mlp.up_proj.weight"

        let missing = try alignedDir("missing") { $0.removeAll { $0.name == victim } }
        try expectFailure([good.path, missing.path], output: out, naming: [missing.path], contains: ["missing tensor \(victim)"])

        let shape = try alignedDir("shape") { t in
            let i = t.firstIndex { $0.name == victim }!
            t[i].shape = [64, 176]
        }
        try expectFailure([good.path, shape.path], output: out, naming: [shape.appendingPathComponent("model.safetensors").path],
                          contains: [victim, "[64, 176]", "[176, 64]"])

        // NaN / Inf: bf16 bits 0x7FC0 / 0x7F80 in the middle of the last layer, so earlier layers are
        // already written to the temporary file when the error is found.
        let lastLayer = "model.layers.1.mlp.down_proj.weight"
        for (label, bits) in [("nan", UInt16(0x7FC0)), ("inf", UInt16(0x7F80)), ("-inf", UInt16(0xFF80))] {
            let dir = try alignedDir(label) { t in
                let i = t.firstIndex { $0.name == lastLayer }!
                t[i].bytes[100] = UInt8(bits & 0xFF)
                t[i].bytes[101] = UInt8(bits >> 8)
            }
            try expectFailure([good.path, dir.path], output: out, naming: [dir.appendingPathComponent("model.safetensors").path],
                              contains: ["model.layers.1.mlp.down_proj", "NaN or Inf"])
        }
        // The same with --dtype f16 and --rank, which take other paths.
        let nanDir = tmp.url.appendingPathComponent("aligned-nan")
        try expectFailure([good.path, nanDir.path, "--dtype", "f16"], output: out, naming: [nanDir.path], contains: ["NaN or Inf"])
        try expectFailure([good.path, nanDir.path, "--rank", "2"], output: out, naming: [nanDir.path], contains: ["NaN or Inf"])
    }

    func testBrokenAdapters() throws {
        let base = try Paths.tinyModel("base-A").path
        let src = try Paths.tinyModel("lora-pyapi")
        let out = tmp.sub("out").appendingPathComponent("deltas.h5").path
        func adapterCopy(_ label: String) throws -> URL {
            let dir = tmp.url.appendingPathComponent("adapter-\(label)")
            try FileManager.default.copyItem(at: src, to: dir)
            return dir
        }
        func editConfig(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
            let p = dir.appendingPathComponent("adapter_config.json")
            var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: p)) as! [String: Any]
            edit(&cfg)
            try writeJSON(cfg, to: p.path)
        }
        let dora = try adapterCopy("dora")
        try editConfig(dora) { $0["use_dora"] = true }
        try expectFailure([base, dora.path], output: out, naming: [dora.appendingPathComponent("adapter_config.json").path], contains: ["DoRA"])

        let rank = try adapterCopy("rank")
        try editConfig(rank) { $0["r"] = 4 }
        try expectFailure([base, rank.path], output: out, naming: [rank.appendingPathComponent("adapter_model.safetensors").path],
                          contains: ["rank 8", "r=4"])

        let embed = try adapterCopy("embed")
        let rawAd = try RawSafetensors(path: src.appendingPathComponent("adapter_model.safetensors").path)
        var tensors = rawAd.order.map { TestTensor(rawAd[$0]!) }
        tensors.append(.f32("base_model.model.model.embed_tokens.lora_embedding_A", [8, 512], [Float](repeating: 0, count: 8 * 512)))
        try writeSafetensors(tensors, to: embed.appendingPathComponent("adapter_model.safetensors").path)
        try expectFailure([base, embed.path], output: out, naming: [embed.appendingPathComponent("adapter_model.safetensors").path],
                          contains: ["embedding", "not supported"])

        let broken = try adapterCopy("broken")
        let wp = broken.appendingPathComponent("adapter_model.safetensors")
        let bytes = [UInt8](try Data(contentsOf: wp))
        try writeBytes(Array(bytes.prefix(5)), to: wp.path)
        try expectFailure([base, broken.path], output: out, naming: [wp.path], contains: ["too short"])

        let badCfg = try adapterCopy("bad-config")
        try Data("{".utf8).write(to: badCfg.appendingPathComponent("adapter_config.json"))
        try expectFailure([base, badCfg.path], output: out, naming: [badCfg.appendingPathComponent("adapter_config.json").path],
                          contains: ["not valid JSON"])

        // The base of another shape (tiny base-B) for this adapter.
        let baseB = try Paths.tinyModel("base-B").path
        try expectFailure([baseB, src.path], output: out, naming: [src.appendingPathComponent("adapter_model.safetensors").path], contains: [])
    }

    func testInvalidIncludeIsOneLine() throws {
        let base = try Paths.tinyModel("base-A").path, adapter = try Paths.tinyModel("lora-pyapi").path
        let out = tmp.sub("out").appendingPathComponent("d.h5").path
        try expectFailure([base, adapter, "--include", "(unclosed"], output: out, naming: ["--include"], contains: ["regular expression"])
        try expectFailure([base, adapter, "--include", "lm_head"], output: out, naming: ["--include"], contains: ["matches no linear layer"])
    }

    // MARK: the small test bed (skipped when absent)

    func testSmallTestbedAgainstRawValues() throws {
        let small = try Paths.small()
        let base = small.appendingPathComponent("base-A")
        let rawBase = try RawSafetensors(path: base.appendingPathComponent("model.safetensors").path)
        // full-pyapi: stored deltas exactly aligned − base in float32.
        let aligned = small.appendingPathComponent("full-pyapi")
        let rawAligned = try RawSafetensors(path: aligned.appendingPathComponent("model.safetensors").path)
        let out = tmp.path("small-full.h5")
        _ = try run([base.path, aligned.path, "-o", out])
        let store = try DeltaStore(path: out)
        XCTAssertEqual(store.layers.count, 56)
        for l in store.layers {
            let w0 = rawBase[l.weightName]!.values, w1 = rawAligned[l.weightName]!.values
            guard case .full(let d) = try store.delta(l).payload else { return XCTFail() }
            var mismatches = 0
            for i in 0..<d.count where d[i].bitPattern != (w1[i] - w0[i]).bitPattern { mismatches += 1 }
            XCTAssertEqual(mismatches, 0, l.name)
        }
        // lora-pyapi: factors exact.
        let adapter = small.appendingPathComponent("lora-pyapi")
        let rawAd = try RawSafetensors(path: adapter.appendingPathComponent("adapter_model.safetensors").path)
        let lout = tmp.path("small-lora.h5")
        _ = try run([base.path, adapter.path, "-o", lout])
        let ls = try DeltaStore(path: lout)
        XCTAssertEqual(ls.layers.count, 56)
        for l in ls.layers {
            guard case .factors(let a, let b, _, let scale) = try ls.delta(l).payload else { return XCTFail() }
            XCTAssertEqual(a, rawAd["base_model.model.\(l.name).lora_A.weight"]!.values)
            XCTAssertEqual(b, rawAd["base_model.model.\(l.name).lora_B.weight"]!.values)
            XCTAssertEqual(scale, 2)
        }
    }
}
