import Foundation
import ILAEngine
import ILAModel
import ILADiff
import ILATestSupport
@testable import ILATune
import XCTest

final class TuneUnitTests: XCTestCase {
    /// AdamW against the algorithm written out in Double (torch's documented update).
    func testAdamWAgainstNaiveLoop() {
        let layer = LinearLayer(name: "model.layers.0.self_attn.q_proj")!
        let params = LoRAParameters(layers: [.init(layer: layer, rank: 1, inFeatures: 3, outFeatures: 2, scale: 1)])
        let opt = AdamW(sizes: LoRAParameters.sizes(params.layers), weightDecay: 0.1)
        var p = [0.5, -0.25, 1.0, 0.3, -0.7], m = [Double](repeating: 0, count: 5), v = m
        for (i, x) in p.enumerated() { if i < 3 { params.a(0)[i] = Float(x) } else { params.b(0)[i - 3] = Float(x) } }
        for t in 1...6 {
            let g = (0..<5).map { sin(Double(t * 7 + $0)) * 0.3 }
            for i in 0..<5 { if i < 3 { params.gradA(0)[i] = Float(g[i]) } else { params.gradB(0)[i - 3] = Float(g[i]) } }
            let lr = 0.01 * Double(t)
            opt.update(params, lr: lr)
            for i in 0..<5 {
                p[i] *= 1 - lr * 0.1
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i]
                let mh = m[i] / (1 - pow(0.9, Double(t))), vh = v[i] / (1 - pow(0.999, Double(t)))
                p[i] -= lr * mh / (vh.squareRoot() + 1e-8)
            }
        }
        for i in 0..<5 {
            let got = Double(i < 3 ? params.a(0)[i] : params.b(0)[i - 3])
            XCTAssertEqual(got, p[i], accuracy: 1e-6, "parameter \(i)")
        }
    }

    /// file order: consecutive rows, wrapping; shuffle: each epoch a permutation; any slice of
    /// steps gives the rows the whole plan gives (what resume relies on).
    func testBatchPlan() {
        let file = BatchPlan(rows: 5, rowsPerStep: 2, order: .file, seed: 0)
        XCTAssertEqual(file.indices(steps: 0..<4), [[0, 1], [2, 3], [4, 0], [1, 2]])
        XCTAssertEqual(file.steps(epochs: 2), 5)
        let shuffle = BatchPlan(rows: 7, rowsPerStep: 3, order: .shuffle, seed: 42)
        let all = shuffle.indices(steps: 0..<7).flatMap { $0 }
        for e in 0..<3 { XCTAssertEqual(Set(all[(7 * e)..<(7 * e + 7)]), Set(0..<7), "epoch \(e) is a permutation") }
        XCTAssertNotEqual(Array(all[0..<7]), Array(0..<7))
        XCTAssertNotEqual(Array(all[0..<7]), Array(all[7..<14]), "epochs draw different permutations")
        XCTAssertEqual(shuffle.indices(steps: 4..<6), Array(shuffle.indices(steps: 0..<7)[4..<6]))
        XCTAssertNotEqual(BatchPlan(rows: 7, rowsPerStep: 3, order: .shuffle, seed: 43).indices(steps: 0..<3), shuffle.indices(steps: 0..<3))
    }

    /// ε-stable point on the loss curve the test bed's define run recorded, against the
    /// definition evaluated directly.
    func testStablePointOnRecordedCurve() throws {
        let log = RepoPaths.fixtures.appendingPathComponent("tiny/lora-define-100/train_log.json")
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: log)) as? [String: Any])
        let curve = try XCTUnwrap(o["loss_curve"] as? [Double])
        XCTAssertGreaterThanOrEqual(curve.count, 8)
        let w = 3
        func naive(_ eps: Double) -> Int? {
            var t = 2 * w
            while t <= curve.count {
                var a = 0.0, b = 0.0
                for i in (t - w)..<t { a += curve[i] }
                for i in (t - 2 * w)..<(t - w) { b += curve[i] }
                if abs(a / Double(w) - b / Double(w)) < eps { return t }
                t += 1
            }
            return nil
        }
        var found = 0
        for eps in [0.001, 0.01, 0.03, 0.1, 0.3, 1.0] {
            XCTAssertEqual(LossStability.firstStableStep(curve, window: w, eps: eps), naive(eps), "eps \(eps)")
            if naive(eps) != nil { found += 1 }
        }
        XCTAssertGreaterThan(found, 0, "no ε gave a stable point: the check would be vacuous")
        XCTAssertNil(LossStability.firstStableStep(Array(curve.prefix(2 * w - 1)), window: w, eps: 10))
    }

    /// PEFT's default initialisation: A uniform in ±1/√in, B zero; the seed decides the values.
    func testPEFTDefaultInitialisation() {
        let layer = LinearLayer(name: "model.layers.0.mlp.down_proj")!
        let params = LoRAParameters(layers: [.init(layer: layer, rank: 4, inFeatures: 100, outFeatures: 6, scale: 2)])
        LoRAInitialisation.peftDefault(params, seed: 1)
        let a = params.a(0).array
        XCTAssertEqual(params.b(0).array, [Float](repeating: 0, count: 24))
        XCTAssertLessThanOrEqual(a.map { abs($0) }.max()!, 0.1)
        XCTAssertGreaterThan(a.map { abs($0) }.max()!, 0.09)
        let mean = a.reduce(0, +) / Float(a.count)
        XCTAssertLessThan(abs(mean), 0.02)
        let again = LoRAParameters(layers: params.layers)
        LoRAInitialisation.peftDefault(again, seed: 1)
        XCTAssertEqual(again.a(0).array, a)
        LoRAInitialisation.peftDefault(again, seed: 2)
        XCTAssertNotEqual(again.a(0).array, a)
    }
}
