import Foundation
import ILABLAS
import ILADiff
@testable import ILAEngine
import ILAMask
import ILAModel
import ILARanking
import XCTest

/// The GEMM seam against naive loops in Float64: each backend and precision, strided and
/// transposed operands, accumulation, bf16-resident weights and W0 + γΔ tiles.
final class GEMMSeamTests: XCTestCase {
    struct Rng {
        var s: UInt64
        mutating func next() -> Float {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s >> 11) % 2001 - 1000) / 1000
        }
    }

    func randomArray(_ n: Int, _ rng: inout Rng) -> [Float] { (0..<n).map { _ in rng.next() } }

    /// The value the seam should give for op(A)·op(B), inputs rounded to bf16 when asked.
    func naive(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, _ a: [Float], lda: Int, _ b: [Float], ldb: Int,
               bf16: Bool) -> [Double] {
        func r(_ x: Float) -> Double { Double(bf16 ? bf16Rounded(x) : x) }
        var c = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p]
                    let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += r(x) * r(y)
                }
                c[i * n + j] = s
            }
        }
        return c
    }

    func assertClose(_ got: [Float], _ want: [Double], scale: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what, file: file, line: line)
        var worst = 0.0
        for i in 0..<min(got.count, want.count) { worst = max(worst, abs(Double(got[i]) - want[i])) }
        // float32 accumulation of k ≤ 300 products of magnitude ≤ 1.
        XCTAssertLessThan(worst, 2e-5 * scale, "\(what): max |Δ| \(worst)", file: file, line: line)
    }

    func testGEMMMatchesNaiveLoopOnEveryBackendAndPrecision() throws {
        var rng = Rng(s: 7)
        for backend in [GEMMBackend.openblas, .onednn] {
            for precision in [GEMMPrecision.float32, .bf16] {
                let seam = GEMMSeam(GEMMOptions(backend: backend, precision: precision), tileFloats: 0)
                for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                    let (m, n, k) = (37, 53, 211)
                    // Strided operands: two spare columns each.
                    let lda = (transA ? m : k) + 2, ldb = (transB ? k : n) + 2, ldc = n + 3
                    let a = randomArray((transA ? k : m) * lda, &rng), b = randomArray((transB ? n : k) * ldb, &rng)
                    let c0 = randomArray(m * ldc, &rng)
                    var c = c0
                    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                        seam.gemmAtPrecision(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, ap.baseAddress!, lda: lda,
                                             bp.baseAddress!, ldb: ldb, beta: 1, cp.baseAddress!, ldc: ldc)
                    } } }
                    let p = naive(transA: transA, transB: transB, m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, bf16: precision == .bf16)
                    var got: [Float] = [], want: [Double] = []
                    for i in 0..<m {
                        for j in 0..<n { got.append(c[i * ldc + j]); want.append(0.5 * p[i * n + j] + Double(c0[i * ldc + j])) }
                        // Columns past n are untouched.
                        for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j]) }
                    }
                    assertClose(got, want, scale: Double(k), "\(backend) \(precision) transA \(transA) transB \(transB)")
                }
            }
        }
    }

    /// x·Wᵀ and dY·W through the tiles: bf16-resident W, with and without a full delta, one-row tiles.
    func testLinearOpsMatchNaiveLoop() throws {
        var rng = Rng(s: 11)
        let (T, O, I) = (19, 45, 64)
        let w0 = randomArray(O * I, &rng).map { bf16Rounded($0) }
        let bits = w0.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
        let wm = WeightMatrix(halfBits: bits, precision: .bfloat16, rows: O, cols: I)
        let delta = randomArray(O * I, &rng).map { $0 * 0.01 }
        let x = randomArray(T * I, &rng), dy = randomArray(T * O, &rng)
        for backend in [GEMMBackend.openblas, .onednn] {
            for precision in [GEMMPrecision.float32, .bf16] {
                for tileFloats in [0, I] {
                    for gamma: Float in [0, 0.7] {
                        let seam = GEMMSeam(GEMMOptions(backend: backend, precision: precision), tileFloats: max(tileFloats, I))
                        let weff = (0..<(O * I)).map { w0[$0] + gamma * delta[$0] }
                        let what = "\(backend) \(precision) tile \(tileFloats) γ \(gamma)"
                        do {
                            let dm = WeightMatrix(float32: delta, rows: O, cols: I)
                            let e = EffectiveWeight(w: wm, delta: gamma == 0 ? nil : dm, gamma: gamma)
                            var out = [Float](repeating: 0, count: T * O)
                            var dx = [Float](repeating: 1, count: T * I)
                            x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                                seam.linearForward(op.baseAddress!, ldOut: O, xp.baseAddress!, e, nil, T: T)
                            } }
                            dy.withUnsafeBufferPointer { yp in dx.withUnsafeMutableBufferPointer { dp in
                                seam.linearBackwardInput(dp.baseAddress!, yp.baseAddress!, ldOut: O, e, T: T)
                            } }
                            let bf = precision == .bf16
                            assertClose(out, naive(transA: false, transB: true, m: T, n: O, k: I, x, lda: I, weff, ldb: I, bf16: bf),
                                        scale: Double(I), "forward \(what)")
                            let back = naive(transA: false, transB: false, m: T, n: I, k: O, dy, lda: O, weff, ldb: I, bf16: bf)
                            assertClose(dx, back.map { $0 + 1 }, scale: Double(O), "backward \(what)")
                        }
                    }
                }
            }
        }
    }

    /// oneDNN's native bf16 matmul, on CPUs that have one (AVX512-BF16 or AMX).
    func testNativeBF16MatmulMatchesNaiveLoop() throws {
        guard OneDNN.bf16Implementation != nil else {
            throw XCTSkip("this CPU has no bf16 GEMM in oneDNN \(OneDNN.version) (no AVX512-BF16/AMX); the emulated bf16 path is tested instead")
        }
        let seam = GEMMSeam(GEMMOptions(backend: .onednn, precision: .bf16), tileFloats: 0)
        XCTAssertTrue(seam.nativeBF16)
        var rng = Rng(s: 3)
        let (m, n, k) = (33, 70, 150)
        let a = randomArray(m * k, &rng), b = randomArray(n * k, &rng)
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            seam.gemmAtPrecision(transB: true, m: m, n: n, k: k, ap.baseAddress!, bp.baseAddress!, cp.baseAddress!)
        } } }
        assertClose(c, naive(transA: false, transB: true, m: m, n: n, k: k, a, lda: k, b, ldb: k, bf16: true), scale: Double(k), "native bf16")
    }

    /// `auto` is a rule of the CPU alone.
    func testAutoBackendFollowsTheCPU() {
        XCTAssertEqual(GEMMBackend.auto.resolved, OneDNN.cpuHasAVX512 ? .onednn : .openblas)
        XCTAssertEqual(GEMMBackend.openblas.resolved, .openblas)
        XCTAssertEqual(GEMMBackend.onednn.resolved, .onednn)
    }

    /// The bf16 mode ranks the layers as float32 does: 40 Adam steps on the tiny test bed.
    func testBF16RankingAgreesWithFloat32() throws {
        var scores: [[Double]] = []
        for precision in [GEMMPrecision.float32, .bf16] {
            let (base, engine, _) = try makeEngine(set: Fixtures.tiny, aligned: "lora-pyapi", gemm: GEMMOptions(precision: precision))
            let rows = try base.rows(path: Fixtures.data + "/pyapi.train.jsonl", template: .alpaca, seqLen: 64, limit: 32)
            let learner = try MaskLearner(engine: engine, rows: rows, lambda: 1)
            var o = LearnOptions()
            o.steps = 40; o.batch = 8; o.seqLen = 64; o.lr = 0.1
            var state = LearnState(options: o, fingerprint: "x", layers: engine.maskedLayers.map(\.name))
            for _ in 0..<o.steps { try learner.step(&state) }
            scores.append(state.scores)
        }
        let rho = RankingComparison.spearman(scores[0], scores[1])
        func top(_ s: [Double]) -> Set<Int> {
            Set(s.indices.sorted { s[$0] > s[$1] }.prefix(Int((0.75 * Double(s.count)).rounded(.up))))
        }
        let jac = RankingComparison.jaccard(top(scores[0]), top(scores[1]))
        XCTAssertGreaterThanOrEqual(rho, 0.99, "Spearman of bf16 vs float32 scores")
        XCTAssertGreaterThanOrEqual(jac, 0.95, "top-75% Jaccard of bf16 vs float32")
        // The modes do differ (the bf16 path really rounds).
        XCTAssertNotEqual(scores[0], scores[1])
    }
}
