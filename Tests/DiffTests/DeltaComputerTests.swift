import Foundation
import ILATestSupport
import XCTest
import ILADiff

final class DeltaComputerTests: XCTestCase {
    var tmp: TempDir!
    override func setUp() { tmp = TempDir("deltas") }
    override func tearDown() { tmp.remove() }

    /// Opens both checkpoints and computes every layer's delta.
    private func computeAll(base: String, aligned: String, options: DiffOptions = DiffOptions()) throws -> [LayerDelta] {
        let c = try DeltaComputer(base: ModelCheckpoint(path: base), aligned: .open(aligned), options: options)
        return try c.layers.map { try c.delta(for: $0) }
    }

    /// Checks full deltas against a naive computation over the raw bytes of both files.
    private func checkFull(_ deltas: [LayerDelta], base: RawSafetensors, aligned: RawSafetensors,
                           file: StaticString = #filePath, line: UInt = #line) {
        for d in deltas {
            guard case .full(let values) = d.payload else { return XCTFail("expected a full delta", file: file, line: line) }
            let w0 = base[d.layer.weightName]!.values, w1 = aligned[d.layer.weightName]!.values
            var expected = [Float](repeating: 0, count: w0.count)
            for i in 0..<w0.count { expected[i] = w1[i] - w0[i] }
            XCTAssertEqual(values.map(\.bitPattern), expected.map(\.bitPattern), d.layer.name, file: file, line: line)
            XCTAssertEqual(d.shape, base[d.layer.weightName]!.shape, file: file, line: line)
            assertClose(d.normDelta, naiveNorm(expected), rel: 1e-12, d.layer.name, file: file, line: line)
            assertClose(d.normBase, naiveNorm(w0), rel: 1e-12, d.layer.name, file: file, line: line)
            assertClose(d.relChange, naiveNorm(expected) / naiveNorm(w0), rel: 1e-12, file: file, line: line)
        }
    }

    func testFullDeltaAgainstNaiveBF16F32F16() throws {
        for (bt, at) in [("BF16", "BF16"), ("F32", "F32"), ("F16", "BF16"), ("F32", "F16")] {
            let basePath = try writeSafetensors(miniModelTensors(seed: 1, dtype: bt), to: tmp.path("base-\(bt)-\(at).safetensors"))
            let alignedPath = try writeSafetensors(miniModelTensors(seed: 1, dtype: at) { name, v in
                var rng = SplitMix(UInt64(name.count))
                for i in v.indices { v[i] += rng.float(0.05) }
            }, to: tmp.path("aligned-\(bt)-\(at).safetensors"))
            let deltas = try computeAll(base: basePath, aligned: alignedPath)
            XCTAssertEqual(deltas.map(\.layer.name), allMiniModules())
            checkFull(deltas, base: try RawSafetensors(path: basePath), aligned: try RawSafetensors(path: alignedPath))
        }
    }

    func testTinyFullFixture() throws {
        let base = try Paths.tinyModel("base-A"), aligned = try Paths.tinyModel("full-pyapi")
        let deltas = try computeAll(base: base.path, aligned: aligned.path)
        XCTAssertEqual(deltas.count, 14)
        checkFull(deltas, base: try RawSafetensors(path: base.appendingPathComponent("model.safetensors").path),
                  aligned: try RawSafetensors(path: aligned.appendingPathComponent("model.safetensors").path))
        XCTAssert(deltas.allSatisfy { $0.normDelta > 0 })
    }

    func testTinyLoRAFixture() throws {
        let base = try Paths.tinyModel("base-A"), adapter = try Paths.tinyModel("lora-pyapi")
        let deltas = try computeAll(base: base.path, aligned: adapter.path)
        let rawBase = try RawSafetensors(path: base.appendingPathComponent("model.safetensors").path)
        let rawAd = try RawSafetensors(path: adapter.appendingPathComponent("adapter_model.safetensors").path)
        XCTAssertEqual(deltas.count, 14)
        for d in deltas {
            guard case .factors(let a, let b, let r, let scale) = d.payload else { return XCTFail("expected factors") }
            let ra = rawAd["base_model.model.\(d.layer.name).lora_A.weight"]!, rb = rawAd["base_model.model.\(d.layer.name).lora_B.weight"]!
            XCTAssertEqual(a, ra.values)
            XCTAssertEqual(b, rb.values)
            XCTAssertEqual(r, 8)
            XCTAssertEqual(scale, 2)
            let naive = naiveLoRADelta(a: ra.values, b: rb.values, r: 8, inF: d.inFeatures, outF: d.outFeatures, scale: 2)
            assertClose(d.normDelta, naiveNorm(naive), rel: 1e-9, d.layer.name)
            assertClose(d.normBase, naiveNorm(rawBase[d.layer.weightName]!.values), rel: 1e-12)
            for (x, y) in zip(d.dense(), naive) { XCTAssertEqual(Double(x), y, accuracy: 1e-6 + 1e-5 * abs(y)) }
        }
    }

    func testIncludeFilter() throws {
        let base = try Paths.tinyModel("base-A").path, aligned = try Paths.tinyModel("full-pyapi").path
        var c = try DeltaComputer(base: ModelCheckpoint(path: base), aligned: .open(aligned), options: DiffOptions(include: #"layers\.1\."#))
        XCTAssertEqual(c.layers.map(\.name), allMiniModules().filter { $0.contains("layers.1.") })
        c = try DeltaComputer(base: ModelCheckpoint(path: base), aligned: .open(aligned), options: DiffOptions(include: "(q|v)_proj"))
        XCTAssertEqual(c.layers.map(\.kind), [.q_proj, .v_proj, .q_proj, .v_proj])
        let lora = try Paths.tinyModel("lora-pyapi").path
        c = try DeltaComputer(base: ModelCheckpoint(path: base), aligned: .open(lora), options: DiffOptions(include: "mlp"))
        XCTAssertEqual(c.layers.count, 6)
        XCTAssertThrowsError(try DeltaComputer(base: ModelCheckpoint(path: base), aligned: .open(aligned), options: DiffOptions(include: "(")))
        { XCTAssert(($0 as? ILAError)?.message.contains("--include") == true, "\($0)") }
        XCTAssertThrowsError(try DeltaComputer(base: ModelCheckpoint(path: base), aligned: .open(aligned), options: DiffOptions(include: "nothing")))
        { XCTAssert(($0 as? ILAError)?.message.contains("matches no linear layer") == true, "\($0)") }
    }

    /// Δ with known singular values: entries s_k at (perm(k), k) of an [m, n] matrix.
    func testRankTruncationError() throws {
        let (m, n) = (10, 6)
        let singular: [Float] = [4, 3, 2, 1, 0.5, 0.25]
        let perm = [7, 2, 9, 0, 4, 5]
        var rng = SplitMix(5)
        let w0 = rng.floats(m * n, scale: 1)
        var w1 = w0
        // Keep the delta exact in float32: w0 values rounded, then add the entries.
        for k in 0..<n { w1[perm[k] * n + k] = w0[perm[k] * n + k] + singular[k] }
        let name = "model.layers.0.self_attn.q_proj.weight"
        let basePath = try writeSafetensors([.f32(name, [m, n], w0)], to: tmp.path("b.safetensors"))
        let alignedPath = try writeSafetensors([.f32(name, [m, n], w1)], to: tmp.path("a.safetensors"))
        let full = try computeAll(base: basePath, aligned: alignedPath)[0]
        guard case .full(let delta) = full.payload else { return XCTFail() }
        let total = singular.map { Double($0) * Double($0) }.reduce(0, +)
        for r in [1, 2, 3, 6, 50] {
            let d = try computeAll(base: basePath, aligned: alignedPath, options: DiffOptions(rank: r))[0]
            guard case .factors(let a, let b, let rank, let scale) = d.payload else { return XCTFail("rank \(r): no factors") }
            XCTAssertEqual(rank, min(r, n))
            XCTAssertEqual(scale, 1)
            XCTAssertEqual(a.count, rank * n)
            XCTAssertEqual(b.count, m * rank)
            let rest = singular.dropFirst(min(r, n)).map { Double($0) * Double($0) }.reduce(0, +)
            let expected = (rest / total).squareRoot()
            XCTAssertEqual(d.reconstructionError ?? -1, expected, accuracy: 1e-5, "rank \(r)")
            assertClose(d.normDelta, total.squareRoot(), rel: 1e-6)
            // The factors reproduce the top-r part: compare against a naive product.
            let approx = naiveLoRADelta(a: a, b: b, r: rank, inF: n, outF: m, scale: 1)
            var err = 0.0
            for i in 0..<delta.count { err += pow(Double(delta[i]) - approx[i], 2) }
            XCTAssertEqual(err.squareRoot() / total.squareRoot(), expected, accuracy: 1e-5)
        }
    }

    func testRankOnRandomDeltaMatchesDiscardedSingularValues() throws {
        let base = try Paths.tinyModel("base-A").path, aligned = try Paths.tinyModel("full-pyapi").path
        let opts = DiffOptions(rank: 4, include: #"layers\.0\.self_attn\.k_proj"#)
        let d = try computeAll(base: base, aligned: aligned, options: opts)[0]
        let full = try computeAll(base: base, aligned: aligned, options: DiffOptions(include: opts.include))[0]
        guard case .full(let delta) = full.payload, case .factors = d.payload else { return XCTFail() }
        // err² = Σ_{k>r} s_k² / Σ s_k²; check against an error recomputed by hand from the factors.
        let approx = d.dense()
        var e = 0.0
        for i in 0..<delta.count { e += pow(Double(delta[i]) - Double(approx[i]), 2) }
        XCTAssertEqual(d.reconstructionError!, e.squareRoot() / naiveNorm(delta), accuracy: 1e-6)
        XCTAssert(d.reconstructionError! > 0 && d.reconstructionError! < 1)
        assertClose(d.normDelta, full.normDelta, rel: 1e-12)
    }

    // MARK: mismatches, each one line naming the file

    private func writePair(baseEdit: ((inout [TestTensor]) -> Void)? = nil,
                           alignedEdit: ((inout [TestTensor]) -> Void)? = nil) throws -> (String, String) {
        var b = miniModelTensors(seed: 1, dtype: "F32")
        var a = miniModelTensors(seed: 2, dtype: "F32")
        baseEdit?(&b)
        alignedEdit?(&a)
        let tag = UUID().uuidString.prefix(6)
        return (try writeSafetensors(b, to: tmp.path("base-\(tag).safetensors")),
                try writeSafetensors(a, to: tmp.path("aligned-\(tag).safetensors")))
    }

    private func setValue(_ t: inout [TestTensor], _ name: String, index: Int, _ v: Float) {
        let i = t.firstIndex { $0.name == name }!
        var values = RawTensor(t[i]).values
        values[index] = v
        t[i] = .f32(name, t[i].shape, values)
    }

    func testMissingTensorInAligned() throws {
        let (b, a) = try writePair(alignedEdit: { $0.removeAll { $0.name == "model.layers.1.mlp.up_proj.weight" } })
        assertILAError(file: a, contains: ["missing tensor model.layers.1.mlp.up_proj.weight"]) { _ = try self.computeAll(base: b, aligned: a) }
        // ... unless --include leaves it out.
        XCTAssertEqual(try computeAll(base: b, aligned: a, options: DiffOptions(include: "self_attn")).count, 8)
    }

    func testShapeMismatch() throws {
        let (b, a) = try writePair(alignedEdit: { t in
            let i = t.firstIndex { $0.name == "model.layers.0.self_attn.k_proj.weight" }!
            t[i] = .f32(t[i].name, [8, 4], RawTensor(t[i]).values)
        })
        assertILAError(file: a, contains: ["model.layers.0.self_attn.k_proj.weight", "[8, 4]", "[4, 8]"]) { _ = try self.computeAll(base: b, aligned: a) }
    }

    func testNaNAndInfInDelta() throws {
        for bad in [Float.nan, .infinity, -.infinity] {
            let (b, a) = try writePair(alignedEdit: { self.setValue(&$0, "model.layers.1.self_attn.o_proj.weight", index: 3, bad) })
            assertILAError(file: a, contains: ["model.layers.1.self_attn.o_proj", "NaN or Inf"]) { _ = try self.computeAll(base: b, aligned: a) }
        }
        // Finite inputs whose difference overflows float32.
        let (b2, a2) = try writePair(baseEdit: { self.setValue(&$0, "model.layers.0.mlp.down_proj.weight", index: 0, -3e38) },
                                     alignedEdit: { self.setValue(&$0, "model.layers.0.mlp.down_proj.weight", index: 0, 3e38) })
        assertILAError(file: a2, contains: ["model.layers.0.mlp.down_proj", "NaN or Inf"]) { _ = try self.computeAll(base: b2, aligned: a2) }
        // NaN in the base is blamed on the base.
        let (b3, a3) = try writePair(baseEdit: { self.setValue(&$0, "model.layers.0.mlp.gate_proj.weight", index: 1, .nan) })
        assertILAError(file: b3, contains: ["model.layers.0.mlp.gate_proj", "NaN or Inf"]) { _ = try self.computeAll(base: b3, aligned: a3) }
    }

    func testOtherMismatches() throws {
        // Aligned has a linear layer the base lacks.
        let (b, a) = try writePair(baseEdit: { $0.removeAll { $0.name.hasPrefix("model.layers.1.") } })
        assertILAError(file: a, contains: ["model.layers.1.self_attn.q_proj.weight", "no counterpart"]) { _ = try self.computeAll(base: b, aligned: a) }
        // Integer weights are refused.
        let (b2, a2) = try writePair(alignedEdit: { t in
            let i = t.firstIndex { $0.name == "model.layers.0.self_attn.v_proj.weight" }!
            t[i] = .i64(t[i].name, t[i].shape, [Int64](repeating: 1, count: 32))
        })
        assertILAError(file: a2, contains: ["model.layers.0.self_attn.v_proj.weight", "I64"]) { _ = try self.computeAll(base: b2, aligned: a2) }
        // A base without linear layers.
        let empty = try writeSafetensors([.f32("model.norm.weight", [2], [1, 1])], to: tmp.path("nolayers.safetensors"))
        assertILAError(file: empty, contains: ["no linear layers"]) { _ = try self.computeAll(base: empty, aligned: a) }
        // An adapter whose layers the base lacks, or whose shape differs.
        let adapterDir = tmp.sub("adapter")
        try writeAdapter(in: adapterDir, config: adapterConfig(), ranks: ["model.layers.5.self_attn.q_proj": 4])
        let adapterWeights = adapterDir.appendingPathComponent("adapter_model.safetensors").path
        let fullBase = try writeSafetensors(miniModelTensors(), to: tmp.path("mini.safetensors"))
        assertILAError(file: adapterWeights, contains: ["model.layers.5.self_attn.q_proj"]) { _ = try self.computeAll(base: fullBase, aligned: adapterDir.path) }
        let wide = tmp.sub("wide-adapter")
        try writeAdapter(in: wide, config: adapterConfig(), ranks: ["model.layers.0.self_attn.q_proj": 4])
        let wideBase = try writeSafetensors(miniModelTensors(h: 6, kv: 3, m: 9), to: tmp.path("mini-h6.safetensors"))
        assertILAError(file: wide.appendingPathComponent("adapter_model.safetensors").path,
                       contains: ["model.layers.0.self_attn.q_proj", "[8, 8]", "[6, 6]"]) {
            _ = try self.computeAll(base: wideBase, aligned: wide.path)
        }
    }

    // MARK: HDF5 round trip

    func testHDF5RoundTrip() throws {
        let base = try Paths.tinyModel("base-A").path
        let full = try computeAll(base: base, aligned: try Paths.tinyModel("full-pyapi").path)
        let lora = try computeAll(base: base, aligned: try Paths.tinyModel("lora-pyapi").path)
        let ranked = try computeAll(base: base, aligned: try Paths.tinyModel("full-pyapi").path,
                                    options: DiffOptions(rank: 3, include: "layers.0"))
        for (label, deltas, kind, f16) in [("full", full, "full", false), ("full16", full, "full", true),
                                           ("lora", lora, "lora", false), ("ranked", ranked, "full", false)] {
            let path = tmp.path("\(label).h5")
            let info = DeltaFileInfo(kind: kind, base: base, aligned: "aligned-\(label)", tool: "tests")
            let w = try DeltaStoreWriter(path: path, info: info, storeF16: f16)
            for d in deltas { try w.append(d) }
            try w.finish()
            XCTAssertEqual(tmp.contents().filter { $0.contains("tmp") }, [], "temporary file left behind")
            let store = try DeltaStore(path: path)
            XCTAssertEqual(store.kind, kind)
            XCTAssertEqual(store.info, info)
            XCTAssertEqual(store.layers, deltas.map(\.layer))
            for d in deltas {
                let back = try store.delta(d.layer)
                XCTAssertEqual(back.shape, d.shape)
                XCTAssertEqual(back.normDelta, d.normDelta)
                XCTAssertEqual(back.normBase, d.normBase)
                XCTAssertEqual(back.reconstructionError, d.reconstructionError)
                switch (d.payload, back.payload) {
                case (.full(let x), .full(let y)):
                    XCTAssertEqual(y.map(\.bitPattern), (f16 ? x.map { Float(Float16($0)) } : x).map(\.bitPattern), label)
                case (.factors(let a, let b, let r, let s), .factors(let a2, let b2, let r2, let s2)):
                    XCTAssertEqual(a, a2); XCTAssertEqual(b, b2); XCTAssertEqual(r, r2); XCTAssertEqual(s, s2)
                default:
                    XCTFail("\(label): payload kind changed for \(d.layer.name)")
                }
            }
        }
        // An aborted writer leaves nothing.
        let aborted = tmp.path("aborted.h5")
        let w = try DeltaStoreWriter(path: aborted, info: DeltaFileInfo(kind: "full", base: "b", aligned: "a", tool: "t"), storeF16: false)
        try w.append(full[0])
        w.abort()
        XCTAssertFalse(FileManager.default.fileExists(atPath: aborted))
        XCTAssertEqual(tmp.contents().filter { $0.hasPrefix(".") }, [])
    }
}
