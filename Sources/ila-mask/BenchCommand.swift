import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILABLAS
import ILAMask
import ILAModel
import ILAEngine
import ILARanking

/// Times the engine for bench/engine and bench/learn (hidden from help).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-engine", abstract: "Time forward and forward+gate-backward (for bench/).",
        shouldDisplay: false)

    @OptionGroup var model: ModelDataOptions

    @Option(help: "Rows per batch.")
    var rows: Int = 16

    @Option(help: "Timed repetitions (best is reported).")
    var repeats: Int = 5

    func run() throws {
        try runReportingErrors {
            if model.pipeline > 1 { throw ILAError("bench times one process; --pipeline is for learn, eval and ila-tune under mpirun (bench/mpi times those)") }
            let (base, engine, _, _) = try model.loadEngine(requireDeltas: true, gradient: true)
            let data = try base.rows(path: model.data, format: model.format, seqLen: model.seqLen, limit: rows)
            let n = engine.maskedLayers.count
            let gamma = [Float](repeating: Float(MaskObjective.sigmoid(3)), count: n)
            func best(_ body: () throws -> Void) throws -> Double {
                try body()  // warm-up
                var b = Double.infinity
                for _ in 0..<repeats {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    try body()
                    b = min(b, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                }
                return b
            }
            let tokens = data.map(\.ids.count).reduce(0, +)
            let fwd = try best { _ = try engine.evaluate(rows: data, gamma: gamma) }
            let bwd = try best { _ = try engine.gradient(rows: data, gamma: gamma) }
            let objective = MaskObjective(lambda: 1)
            var adam = AdamOptimizer(count: n, lr: 0.05)
            var s = [Double](repeating: 3, count: n)
            let step = try best {
                let v = try objective.evaluate(engine: engine, rows: data, scores: s)
                adam.update(&s, grad: v.gradient)
            }
            // OpenBLAS sgemm at the model's largest linear shape with this batch's tokens.
            let c = base.spec
            let (m, k, nn) = (tokens, c.hiddenSize, c.intermediateSize)
            let a = FloatBuffer(m * k), b = FloatBuffer(nn * k), out = FloatBuffer(m * nn)
            for i in 0..<a.count { a[i] = Float(i % 7) * 0.1 }
            for i in 0..<b.count { b[i] = Float(i % 5) * 0.1 }
            // Multi-threaded OpenBLAS as a user would call it (the engine itself runs BLAS single-threaded).
            let engineBLASThreads = BLAS.threads
            BLAS.threads = ProcessInfo.processInfo.activeProcessorCount
            let g = try best { BLAS.gemm(transB: true, m: m, n: nn, k: k, a.p, b.p, out.p) }
            BLAS.threads = engineBLASThreads
            let gemmGflops = 2.0 * Double(m * k * nn) / g / 1e9
            // oneDNN at the same shape: float32, and bf16 × bf16 → f32 where the CPU has it.
            let gd = try best {
                try OneDNN.sgemm(transA: false, transB: true, m: m, n: nn, k: k, alpha: 1, a.p, lda: k, b.p, ldb: k,
                                 beta: 0, out.p, ldc: nn)
            }
            var bf16Gflops: Double?
            if OneDNN.bf16Implementation != nil {
                let ah = [UInt16](repeating: 0x3F80, count: m * k), bh = [UInt16](repeating: 0x3F00, count: nn * k)
                let t = try best {
                    try ah.withUnsafeBufferPointer { ap in
                        try bh.withUnsafeBufferPointer { bp in
                            guard let pa = ap.baseAddress, let pb = bp.baseAddress else { return }
                            try OneDNN.gemmBF16(transA: false, transB: true, m: m, n: nn, k: k, alpha: 1, pa, lda: k, pb, ldb: k,
                                                beta: 0, out.p, ldc: nn)
                        }
                    }
                }
                bf16Gflops = 2.0 * Double(m * k * nn) / t / 1e9
            }
            // Forward FLOPs: linear layers, attention (QKᵀ and PV, full square), lm_head on loss positions.
            let linear = c.linears.map { $0.outFeatures * $0.inFeatures }.reduce(0, +) * c.blocks
            var flops = 2.0 * Double(tokens) * Double(linear)
            for r in data { flops += 4.0 * Double(r.ids.count * r.ids.count) * Double(c.qDim) * Double(c.blocks) }
            let lossTokens = data.map { r in r.labels.dropFirst().filter { $0 != -100 }.count }.reduce(0, +)
            flops += 2.0 * Double(lossTokens) * Double(c.hiddenSize * c.vocabSize)
            var o: [String: Any] = [
                "rows": data.count, "tokens": tokens, "threads": ProcessInfo.processInfo.activeProcessorCount,
                "forward_s": fwd, "forward_tok_s": Double(tokens) / fwd,
                "backward_s": bwd, "backward_tok_s": Double(tokens) / bwd,
                "step_s": step,
                "forward_gflops": flops / fwd / 1e9, "sgemm_gflops": gemmGflops,
                "gemm": engine.gemmOptions.summary, "gemm_shape": [m, k, nn],
                "gemm_gflops": ["openblas_f32": gemmGflops, "onednn_f32": 2.0 * Double(m * k * nn) / gd / 1e9],
            ]
            if let bf16Gflops, var g = o["gemm_gflops"] as? [String: Double] {
                g["onednn_bf16"] = bf16Gflops
                o["gemm_gflops"] = g
            }
            printOut(try jsonText(o))
        }
    }
}
