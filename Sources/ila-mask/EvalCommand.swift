import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILAMask
import ILAModel
import ILAEngine
import ILARanking
import ILACollective

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Mean response-token NLL of a model under a mask of its deltas.",
        discussion: """
        Without --deltas the base model is evaluated. With --gamma G every delta is scaled by G; \
        with --ranking R --top F only the top-F layers' deltas are applied (γ = 1) and the rest \
        dropped (γ = 0): what the model keeps if only those layers had been tuned.

        Examples:
          ila-mask eval --base base/ --data eval.jsonl --limit 64
          ila-mask eval --base base/ --deltas deltas.h5 --gamma 1 --data eval.jsonl
          ila-mask eval --base base/ --deltas deltas.h5 --ranking ranking.json --top 0.3 --data eval.jsonl --json
        """)

    @OptionGroup var model: ModelDataOptions

    @Option(help: "Scale every delta by this factor (default 1 with --deltas).")
    var gamma: Double?

    @Option(help: "A ranking.json from `ila-mask learn`: apply only its top layers' deltas.")
    var ranking: String?

    @Option(help: "With --ranking: the fraction of layers to keep, in (0, 1].")
    var top: Double?

    @Option(help: "Evaluate only the first N rows.")
    var limit: Int?

    @Flag(help: "Print {\"mean_nll\", \"tokens\", \"rows\"} as JSON.")
    var json = false

    func validate() throws {
        if gamma != nil && ranking != nil { throw ValidationError("--gamma and --ranking exclude each other") }
        if (gamma != nil || ranking != nil) && model.deltas == nil { throw ValidationError("--gamma and --ranking need --deltas") }
        if ranking != nil && top == nil { throw ValidationError("--ranking needs --top F") }
        if top != nil && ranking == nil { throw ValidationError("--top needs --ranking") }
        if let top, !(top > 0 && top <= 1) { throw ValidationError("--top must be in (0, 1]") }
        if let gamma, !gamma.isFinite { throw ValidationError("--gamma must be a finite number") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        try runReportingErrors {
            let comm = try joinJob(pipeline: model.pipeline)
            let (base, engine, _, plan) = try model.loadEngine(requireDeltas: false, comm: comm)
            let rows = try base.rows(path: model.data, format: model.format, seqLen: model.seqLen, limit: limit)
            var mask = [Float](repeating: Float(gamma ?? 1), count: engine.maskedLayers.count)
            if let ranking, let top {
                let r = try Ranking.load(path: ranking)
                let selected = r.top(top)
                let masked = Set(engine.maskedLayers.map(\.name))
                for name in selected where !masked.contains(name) {
                    throw ILAError(file: ranking, "selects \(name), which has no delta in \(model.deltas ?? "")")
                }
                mask = engine.maskedLayers.map { selected.contains($0.name) ? 1 : 0 }
            }
            let r = try evaluateWithProgress(engine, rows: rows, gamma: mask, label: "eval", comm: comm)
            guard r.tokens > 0 else { throw ILAError(file: model.data, "no response tokens to score (all labels are -100)") }
            let ranks = try RankFigures(engine, comm)
            if json {
                var o: [String: Any] = ["mean_nll": r.meanNLL, "tokens": r.tokens, "rows": r.rows,
                                        "memory": memoryReport(plan, engine, ranks: ranks), "gemm": engine.gemmOptions.summary]
                if let mpi = ranks.mpiReport { o["mpi"] = mpi }
                printOut(try jsonText(o))
            } else {
                printOut(String(format: "mean NLL %.6f over %d response tokens in %d rows", r.meanNLL, r.tokens, r.rows))
            }
        }
    }
}
