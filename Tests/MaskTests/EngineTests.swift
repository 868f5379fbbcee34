import Foundation
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import XCTest

/// Paths of the bundled fixtures and of the optional shared test bed.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static var tiny: String { root.appendingPathComponent("fixtures/tiny").path }
    static var data: String { root.appendingPathComponent("fixtures/data").path }
    /// ../shared/testbed/small beside the repository, or nil.
    static var small: String? {
        let p = root.deletingLastPathComponent().appendingPathComponent("shared/testbed/small").path
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }
    static var sharedData: String {
        root.deletingLastPathComponent().appendingPathComponent("shared/testbed/data").path
    }

    static func reference(_ set: String) throws -> [String: Any] {
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: set + "/reference.json")))
        return try XCTUnwrap(obj as? [String: Any])
    }
}

/// Loads base + aligned into an engine, with deltas straight from the checkpoints.
func makeEngine(set: String, aligned: String, gemm: GEMMOptions = GEMMOptions()) throws -> (BaseModel, TransformerEngine, [LayerDelta]) {
    let base = try BaseModel(path: set + "/base-A")
    let computer = try DeltaComputer(base: base.checkpoint, aligned: try AlignedCheckpoint.open(set + "/" + aligned))
    let deltas = try computer.layers.map { try computer.delta(for: $0) }
    return (base, try TransformerEngine(weights: base.weights, deltas: deltas, gemm: gemm), deltas)
}

final class EngineTests: XCTestCase {
    /// mean NLL at γ = 0, 0.5, 1, per-token NLL of row 0, and the gate gradient, against PyTorch.
    func checkReference(set: String, dataDir: String, names: [String]? = nil, gemm: GEMMOptions = GEMMOptions()) throws {
        let ref = try Fixtures.reference(set)
        let aligned = try XCTUnwrap(ref["aligned"] as? [String: [String: Any]])
        for (name, entry) in aligned.sorted(by: { $0.key < $1.key }) where names == nil || names!.contains(name) {
            let (base, engine, _) = try makeEngine(set: set, aligned: name, gemm: gemm)
            let n = engine.maskedLayers.count
            let ds = try XCTUnwrap(entry["dataset"] as? String)
            let seqLen = try XCTUnwrap(ref["seq_len"] as? Int)

            // Row 0 per-token NLL (ids from reference, independent of the tokenizer).
            let first = try XCTUnwrap((entry["first_rows"] as? [[String: Any]])?.first)
            let row0 = TokenizedRow(ids: try XCTUnwrap(first["ids"] as? [Int]), labels: try XCTUnwrap(first["labels"] as? [Int]))
            for g in [0, 1] {
                let tokenNLL = try XCTUnwrap(entry["token_nll_row0_gamma_\(g)"] as? [Double])
                let r = try engine.evaluate(rows: [row0], gamma: [Float](repeating: Float(g), count: n))
                XCTAssertEqual(r.tokens, tokenNLL.count, "\(name) row 0 token count")
                let expected = tokenNLL.reduce(0, +) / Double(tokenNLL.count)
                XCTAssertEqual(r.meanNLL, expected, accuracy: 1e-4 * expected, "\(name) row 0 γ=\(g)")
            }

            let evalRows = try base.rows(path: "\(dataDir)/\(ds).eval.jsonl", template: .alpaca, seqLen: seqLen, limit: 64)
            for (g, key) in [(0.0, "mean_nll_gamma_0"), (0.5, "mean_nll_gamma_0.5"), (1.0, "mean_nll_gamma_1")] {
                let expected = try XCTUnwrap(entry[key] as? Double)
                let r = try engine.evaluate(rows: evalRows, gamma: [Float](repeating: Float(g), count: n))
                XCTAssertEqual(r.meanNLL, expected, accuracy: 1e-4 * expected, "\(name) \(key)")
            }

            let gc = try XCTUnwrap(entry["grad_check"] as? [String: Any])
            let trainRows = try base.rows(path: "\(dataDir)/\(ds).train.jsonl", template: .alpaca, seqLen: seqLen, limit: 8)
            let s = [Double](repeating: try XCTUnwrap(gc["s"] as? Double), count: n)
            let v = try MaskObjective(lambda: try XCTUnwrap(gc["lambda"] as? Double)).evaluate(engine: engine, rows: trainRows, scores: s)
            let refJ = try XCTUnwrap(gc["J"] as? Double), refNLL = try XCTUnwrap(gc["nll"] as? Double)
            XCTAssertEqual(v.j, refJ, accuracy: 1e-4 * refJ, "\(name) J")
            XCTAssertEqual(v.nll, refNLL, accuracy: 1e-4 * refNLL, "\(name) NLL")
            let dJ = try XCTUnwrap(gc["dJ_ds"] as? [String: Double])
            XCTAssertEqual(dJ.count, n)
            let scale = dJ.values.map(abs).max() ?? 1
            for (i, layer) in engine.maskedLayers.enumerated() {
                let want = try XCTUnwrap(dJ[layer.name], "reference has no gradient for \(layer.name)")
                // 1e-3 relative, with a floor relative to the largest entry for entries near 0.
                XCTAssertEqual(v.gradient[i], want, accuracy: max(1e-3 * abs(want), 1e-5 * scale), "\(name) dJ/ds \(layer.name)")
            }
        }
    }

    func testTinyReferenceParity() throws {
        try checkReference(set: Fixtures.tiny, dataDir: Fixtures.data)
    }

    /// Both GEMM backends are exact against PyTorch, whichever `auto` picks on this CPU.
    func testTinyReferenceParityOnEachBackend() throws {
        for backend in [GEMMBackend.openblas, .onednn] {
            try checkReference(set: Fixtures.tiny, dataDir: Fixtures.data, names: ["full-pyapi", "lora-pyapi"],
                               gemm: GEMMOptions(backend: backend))
        }
    }

    func testSmallReferenceParity() throws {
        guard let small = Fixtures.small else { throw XCTSkip("../shared/testbed/small is absent; small-set parity not checked") }
        try checkReference(set: small, dataDir: Fixtures.sharedData, names: ["lora-pyapi", "full-pyapi"])
    }

    /// dNLL/dγ against central finite differences of the NLL itself (Float64 accumulation).
    func testGateGradientMatchesFiniteDifferences() throws {
        for aligned in ["lora-whatis", "full-pyapi"] {
            let (base, engine, _) = try makeEngine(set: Fixtures.tiny, aligned: aligned)
            let rows = try base.rows(path: Fixtures.data + "/whatis.train.jsonl", template: .alpaca, seqLen: 64, limit: 4)
            let n = engine.maskedLayers.count
            var gamma = (0..<n).map { Float(0.3 + 0.5 * Double($0) / Double(n)) }
            let g = try engine.gradient(rows: rows, gamma: gamma)
            let h: Float = 0.05
            for i in [0, 3, n / 2, n - 1] {
                let g0 = gamma[i]
                gamma[i] = g0 + h
                let up = try engine.evaluate(rows: rows, gamma: gamma).nllSum
                gamma[i] = g0 - h
                let down = try engine.evaluate(rows: rows, gamma: gamma).nllSum
                gamma[i] = g0
                let fd = (up - down) / Double(2 * h)
                XCTAssertEqual(g.dNllSumDGamma[i], fd, accuracy: 2e-2 * abs(fd) + 2e-3, "\(aligned) layer \(i)")
            }
        }
    }

    /// bf16 weights kept as bf16 and widened tile by tile give the float32 path's results, in
    /// half the memory (LoRA and full deltas, forward and gate gradient).
    func testBF16ResidentWeightsEqualFloat32Path() throws {
        for aligned in ["lora-pyapi", "full-pyapi"] {
            let resident = try BaseModel(path: Fixtures.tiny + "/base-A")
            let widened = try BaseModel(path: Fixtures.tiny + "/base-A", widenWeights: true)
            XCTAssertEqual(resident.weights.blocks[0].linear[.q_proj]?.precision, .bfloat16)
            XCTAssertEqual(widened.weights.blocks[0].linear[.q_proj]?.precision, .float32)
            XCTAssertLessThan(Double(resident.weights.bytes), 0.52 * Double(widened.weights.bytes))
            let computer = try DeltaComputer(base: resident.checkpoint, aligned: try AlignedCheckpoint.open(Fixtures.tiny + "/" + aligned))
            let deltas = try computer.layers.map { try computer.delta(for: $0) }
            let rows = try resident.rows(path: Fixtures.data + "/pyapi.train.jsonl", template: .alpaca, seqLen: 64, limit: 6)
            let gamma = (0..<deltas.count).map { Float(0.2 + 0.6 * Double($0 % 5) / 4) }
            let a = try TransformerEngine(weights: resident.weights, deltas: deltas).gradient(rows: rows, gamma: gamma)
            // Tiles of a single row (every matrix, the lm_head included, crosses many tiles).
            let t = try TransformerEngine(weights: resident.weights, deltas: deltas, tileFloats: 1).gradient(rows: rows, gamma: gamma)
            XCTAssertEqual(t.nllSum, a.nllSum, accuracy: 1e-6 * a.nllSum, "\(aligned) one-row tiles")
            for i in 0..<gamma.count {
                XCTAssertEqual(t.dNllSumDGamma[i], a.dNllSumDGamma[i], accuracy: 1e-5 * abs(a.dNllSumDGamma[i]) + 1e-7, "\(aligned) tiles \(i)")
            }
            let b = try TransformerEngine(weights: widened.weights, deltas: deltas).gradient(rows: rows, gamma: gamma)
            XCTAssertEqual(a.tokens, b.tokens)
            XCTAssertEqual(a.nllSum, b.nllSum, accuracy: 1e-6 * b.nllSum, aligned)
            for i in 0..<gamma.count {
                XCTAssertEqual(a.dNllSumDGamma[i], b.dNllSumDGamma[i], accuracy: 1e-5 * abs(b.dNllSumDGamma[i]) + 1e-7, "\(aligned) \(i)")
            }
        }
    }

    /// Dense float16 deltas (ila-diff --dtype f16) are held as float16, half the bytes, with the
    /// results of the same values held as float32.
    func testFloat16DeltasStayFloat16() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ila-f16-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("d.h5").path
        let base = try BaseModel(path: Fixtures.tiny + "/base-A")
        let computer = try DeltaComputer(base: base.checkpoint, aligned: try AlignedCheckpoint.open(Fixtures.tiny + "/full-pyapi"))
        let writer = try DeltaStoreWriter(path: path, info: DeltaFileInfo(kind: "full", base: "b", aligned: "a", tool: "test"), storeF16: true)
        for l in computer.layers { try writer.append(try computer.delta(for: l)) }
        try writer.finish()
        let store = try DeltaStore(path: path)
        let held = try TransformerEngine(weights: base.weights, store: store)
        let widened = try TransformerEngine(weights: base.weights, deltas: try store.layers.map { try store.delta($0) })
        XCTAssertEqual(held.maskedLayers.map(\.name), widened.maskedLayers.map(\.name))
        XCTAssertEqual(Double(held.deltaBytes), 0.5 * Double(widened.deltaBytes), accuracy: 1)
        let rows = try base.rows(path: Fixtures.data + "/pyapi.train.jsonl", template: .alpaca, seqLen: 64, limit: 6)
        let gamma = (0..<held.maskedLayers.count).map { Float(0.3 + 0.5 * Double($0 % 3) / 2) }
        let a = try held.gradient(rows: rows, gamma: gamma), b = try widened.gradient(rows: rows, gamma: gamma)
        XCTAssertEqual(a.nllSum, b.nllSum, accuracy: 1e-6 * b.nllSum)
        for i in 0..<gamma.count {
            XCTAssertEqual(a.dNllSumDGamma[i], b.dNllSumDGamma[i], accuracy: 1e-5 * abs(b.dNllSumDGamma[i]) + 1e-7, "layer \(i)")
        }
        // The float16 values differ from the float32 deltas (the test holds real float16 data).
        let f32 = try computer.delta(for: computer.layers[0])
        guard case .full(let x) = f32.payload, case .full(let y) = try store.delta(computer.layers[0]).payload else { return XCTFail("dense") }
        XCTAssertNotEqual(x, y)
    }

    /// Recomputing each block's activations in the backward pass (checkpointing) gives the same
    /// sums as keeping them, for LoRA and full deltas, in less activation memory.
    func testRecomputationGivesTheSameResult() throws {
        for aligned in ["lora-pyapi", "full-pyapi"] {
            let (base, engine, _) = try makeEngine(set: Fixtures.tiny, aligned: aligned)
            let rows = try base.rows(path: Fixtures.data + "/pyapi.train.jsonl", template: .alpaca, seqLen: 64, limit: 6)
            let gamma = (0..<engine.maskedLayers.count).map { Float(0.2 + 0.6 * Double($0 % 5) / 4) }
            let kept = try engine.gradient(rows: rows, gamma: gamma)
            let (_, recomputing, _) = try makeEngine(set: Fixtures.tiny, aligned: aligned)
            recomputing.recompute = true
            let again = try recomputing.gradient(rows: rows, gamma: gamma)
            XCTAssertLessThan(recomputing.activationBytesAllocated, engine.activationBytesAllocated, "\(aligned): activations kept")
            XCTAssertEqual(again.tokens, kept.tokens)
            XCTAssertEqual(again.nllSum, kept.nllSum, accuracy: 1e-9 * kept.nllSum, aligned)
            for i in 0..<gamma.count {
                XCTAssertEqual(again.dNllSumDGamma[i], kept.dNllSumDGamma[i], accuracy: 1e-9 * abs(kept.dNllSumDGamma[i]) + 1e-12, "\(aligned) \(i)")
            }
            let spec = base.spec
            let full = TransformerEngine.activationBytesPerToken(spec), less = TransformerEngine.activationBytesPerToken(spec, recompute: true)
            XCTAssertLessThan(less, full, "\(spec.blocks) blocks")
        }
    }

    /// Splitting a batch into micro-batches changes nothing.
    func testMicroBatchesGiveTheSameResult() throws {
        let (base, engine, _) = try makeEngine(set: Fixtures.tiny, aligned: "lora-define-100")
        let rows = try base.rows(path: Fixtures.data + "/define.train.jsonl", template: .alpaca, seqLen: 64, limit: 6)
        let gamma = [Float](repeating: 0.7, count: engine.maskedLayers.count)
        let whole = try engine.gradient(rows: rows, gamma: gamma)
        engine.tokenBudget = 1
        let split = try engine.gradient(rows: rows, gamma: gamma)
        XCTAssertEqual(whole.tokens, split.tokens)
        XCTAssertEqual(whole.nllSum, split.nllSum, accuracy: 1e-5 * whole.nllSum)
        for i in 0..<gamma.count {
            XCTAssertEqual(whole.dNllSumDGamma[i], split.dNllSumDGamma[i], accuracy: 1e-4 * abs(whole.dNllSumDGamma[i]) + 1e-6)
        }
    }
}
