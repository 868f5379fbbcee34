import Foundation
import ILADiff
import ILAEngine
import ILAMask
import ILAModel
import ILATestSupport
@testable import ILATune
import XCTest

/// dΣNLL/dA and dΣNLL/dB of every LoRA tensor against central finite differences of the NLL
/// (Float64 accumulation), along a random direction per tensor, on the tiny Llama test bed and
/// on every family fixture (fused Phi-3 projections, q/k norms, sandwich norms, soft-capping).
final class LoRAGradientTests: XCTestCase {
    static let arch = RepoPaths.fixtures.appendingPathComponent("arch")

    func check(base: BaseModel, rows: [TokenizedRow], what: String, recompute: Bool = false, tokenBudget: Int? = nil) throws {
        let spec = base.spec
        let layers = spec.allLayers.map { l -> LoRAParameters.Layer in
            let s = spec.shape(of: l.kind)!
            return .init(layer: l, rank: 3, inFeatures: s.in, outFeatures: s.out, scale: 1.5)
        }
        let params = LoRAParameters(layers: layers)
        var rng = SplitMix64(seed: 7)
        func uniform() -> Float { Float(rng.next() >> 40) * 0x1p-24 * 2 - 1 }
        // B ≠ 0 so that dA is not zero.
        for t in 0..<params.values.count {
            let v = params.values[t], bound: Float = t % 2 == 0 ? 0.3 : 0.2
            for i in 0..<v.count { v[i] = uniform() * bound }
        }
        let engine = try TransformerEngine(weights: base.weights, training: params, maxSequenceLength: 128, tokenBudget: tokenBudget)
        engine.recompute = recompute
        let ones = [Float](repeating: 1, count: layers.count)
        params.zeroGradients()
        _ = try engine.gradient(rows: rows, gamma: ones)
        let grads = params.gradients.map(\.array)
        let h: Float = 1e-2
        var checked = 0
        for t in 0..<params.values.count {
            let v = params.values[t]
            let dir = (0..<v.count).map { _ in uniform() }
            let norm = Float(dir.map { Double($0 * $0) }.reduce(0, +).squareRoot())
            let d = dir.map { $0 / norm }
            let saved = v.array
            func nll(_ step: Float) throws -> Double {
                for i in 0..<v.count { v[i] = saved[i] + step * d[i] }
                return try engine.evaluate(rows: rows, gamma: ones).nllSum
            }
            let fd = (try nll(h) - nll(-h)) / Double(2 * h)
            for i in 0..<v.count { v[i] = saved[i] }
            let analytic = zip(grads[t], d).map { Double($0) * Double($1) }.reduce(0, +)
            XCTAssertEqual(analytic, fd, accuracy: 2e-2 * abs(fd) + 2e-3, "\(what) \(params.tensorName(t))")
            checked += 1
        }
        XCTAssertEqual(checked, 2 * spec.allLayers.count)
    }

    func testTinyLlama() throws {
        let base = try BaseModel(path: RepoPaths.fixtures.appendingPathComponent("tiny/base-A").path)
        let rows = try base.rows(path: RepoPaths.fixtures.appendingPathComponent("data/pyapi.train.jsonl").path,
                                 template: .alpaca, seqLen: 48, limit: 3)
        try check(base: base, rows: rows, what: "tiny")
        // Micro-batches of one row and recomputed activations accumulate the same gradient.
        try check(base: base, rows: rows, what: "tiny recompute, 1-row micro-batches", recompute: true, tokenBudget: 1)
    }

    func testEveryFamily() throws {
        for name in ["mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"] {
            let dir = Self.arch.appendingPathComponent(name)
            let base = try BaseModel(path: dir.appendingPathComponent("base").path)
            let text = try String(contentsOf: dir.appendingPathComponent("rows.jsonl"), encoding: .utf8)
            let rows = try text.split(separator: "\n").prefix(2).map { line in
                let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                return TokenizedRow(ids: try XCTUnwrap(o["input_ids"] as? [Int]), labels: try XCTUnwrap(o["labels"] as? [Int]))
            }
            try check(base: base, rows: rows, what: name)
        }
    }
}
