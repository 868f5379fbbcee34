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

/// Set by SIGINT/SIGTERM; the learn loop saves its state and stops at the next step boundary.
nonisolated(unsafe) private var stopSignal: Int32 = 0

struct LearnCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "learn",
        abstract: "Learn the ILA mask over the layers' deltas and write the layer ranking.",
        discussion: """
        Minimises J(s) = NLL(θ0 + Σ σ(s_i)·Δ_i) + λ·mean σ(s) with Adam over s, one batch of rows \
        (sampled with replacement from a seeded generator) per step. Writes ranking.json and, beside \
        it, ranking.h5 (the trajectory of s, /scores [steps, N]). Ctrl-C or SIGTERM saves the state \
        (ranking.state.json beside the output); --resume continues to the same result as an \
        uninterrupted run.

        Examples:
          ila-mask learn --base base/ --deltas deltas.h5 --data train.jsonl -o ranking.json
          ila-mask learn --base base/ --deltas deltas.h5 --data train.jsonl -o ranking.json --steps 100 --eval eval.jsonl
          ila-mask learn --base base/ --deltas deltas.h5 --data train.jsonl -o ranking.json --resume
          ila-mask learn --base base/ --deltas deltas.h5 --data train.jsonl -o ranking.json --stable-steps 20
        """)

    @OptionGroup var model: ModelDataOptions

    @Option(name: .shortAndLong, help: "Where to write ranking.json (ranking.h5 goes beside it).")
    var output: String

    @Option(help: "Adam steps.")
    var steps: Int = 300

    @Option(help: "Rows per step, sampled with replacement.")
    var batch: Int = 16

    @Option(help: "Adam learning rate.")
    var lr: Double = 0.05

    @Option(name: .customLong("lambda"), help: "Weight λ of the mean-γ sparsity term.")
    var lambda: Double = 1.0

    @Option(name: .customLong("s-init"), help: "Initial mask logit s for every layer (γ = σ(s)).")
    var sInit: Double = 3.0

    @Option(help: "Seed of the row sampler.")
    var seed: UInt64 = 0

    @Option(help: "Use only the first N rows of --data.")
    var limit: Int?

    @Option(help: "Held-out JSONL: report its NLL under the final mask, all deltas and none.")
    var eval: String?

    @Option(name: .customLong("eval-limit"), help: "Rows of --eval to use.")
    var evalLimit: Int = 64

    @Option(name: .customLong("save-every"), help: "Save the resumable state every N steps (0: only when interrupted).")
    var saveEvery: Int = 25

    @Option(name: .customLong("stable-steps"),
            help: "Stop early once the ranking is stable: the top-75% set unchanged over the last K steps and Spearman ≥ 0.99 with the scores K steps earlier (the step is recorded as objective.stopped_at).")
    var stableSteps: Int?

    @Flag(help: "Continue from the saved state beside the output.")
    var resume = false

    @Flag(help: "Print the ranking summary as JSON.")
    var json = false

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be positive") }
        if !lambda.isFinite || lambda < 0 { throw ValidationError("--lambda must be a non-negative number") }
        if !sInit.isFinite { throw ValidationError("--s-init must be finite") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if evalLimit < 1 { throw ValidationError("--eval-limit must be at least 1") }
        if saveEvery < 0 { throw ValidationError("--save-every must be 0 or more") }
        if let k = stableSteps, k < 1 { throw ValidationError("--stable-steps must be at least 1") }
        if !output.hasSuffix(".json") { throw ValidationError("--output must end in .json (ranking.h5 is written beside it)") }
    }

    var trajectoryPath: String { String(output.dropLast(5)) + ".h5" }
    var statePath: String { String(output.dropLast(5)) + ".state.json" }

    var options: LearnOptions {
        var o = LearnOptions()
        o.lambda = lambda; o.sInit = sInit; o.lr = lr; o.steps = steps; o.batch = batch
        o.seqLen = model.seqLen; o.seed = seed
        return o
    }

    func run() throws {
        try runReportingErrors {
            signal(SIGINT) { _ in stopSignal = SIGINT }
            signal(SIGTERM) { _ in stopSignal = SIGTERM }
            defer { signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL) }
            // Under mpirun: every rank runs its share of each step's rows; rank 0 alone writes.
            let comm = try joinJob(pipeline: model.pipeline)
            if comm.isRoot {
                // Fail on an unwritable output before minutes of work (this also removes temporaries
                // a killed earlier run left beside each output).
                try AtomicOutput(path: output).discard()
                try AtomicOutput(path: trajectoryPath).discard()
                try AtomicOutput(path: statePath).discard()
            }
            if let deltas = model.deltas,
               URL(fileURLWithPath: deltas).standardizedFileURL.resolvingSymlinksInPath()
                == URL(fileURLWithPath: trajectoryPath).standardizedFileURL.resolvingSymlinksInPath() {
                throw ILAError(file: trajectoryPath, "would overwrite the --deltas file with the trajectory; choose another -o")
            }
            let (base, engine, store, plan) = try model.loadEngine(requireDeltas: true, gradient: true, comm: comm)
            guard !engine.maskedLayers.isEmpty else { throw ILAError(file: model.deltas ?? "", "holds no layers") }
            let rows = try base.rows(path: model.data, format: model.format, seqLen: model.seqLen, limit: limit)
            let layerNames = engine.maskedLayers.map(\.name)
            let fingerprint = [model.base, model.deltas ?? "", model.data, model.format.description, model.precision.rawValue, "\(rows.count)",
                               "\(limit ?? 0)", layerNames.joined(separator: ",")].joined(separator: "|")
            // The state is rank 0's (only it reads and writes the state file); the others get a copy.
            // It does not depend on the number of ranks, so --resume may use another number.
            var state: LearnState = try fromRoot(comm) {
                guard resume else { return LearnState(options: options, fingerprint: fingerprint, layers: layerNames) }
                let state = try LearnState.load(path: statePath)
                guard state.fingerprint == fingerprint, state.layers == layerNames else {
                    throw ILAError(file: statePath, "was saved for other inputs (base, deltas, data or layers differ)")
                }
                guard state.options == options else {
                    throw ILAError(file: statePath, "was saved with other objective options; give the same ones to --resume")
                }
                return state
            }
            let learner = try MaskLearner(engine: engine, rows: rows, lambda: lambda, communicator: comm)

            let progress = ProgressBar(total: steps, label: "learn")
            var stoppedAt: Int?
            while state.step < steps {
                // Every rank stops at the same step boundary (a signal may reach the ranks apart).
                if try comm.any(stopSignal != 0) {
                    progress.finish()
                    if comm.isRoot { try state.save(path: statePath) }
                    reportError(ILAError("interrupted at step \(state.step) of \(steps); state saved to \(statePath); continue with --resume"))
                    throw ExitCode(128 + (stopSignal != 0 ? stopSignal : SIGTERM))
                }
                try learner.step(&state)
                if let h = state.history.last {
                    progress.update(state.step, detail: String(format: "nll %.4f  mean γ %.3f", h.nll, h.meanGamma))
                }
                if let k = stableSteps,
                   RankingStability.isStable(state.trajectory, at: state.trajectory.count - 1, window: k) {
                    stoppedAt = state.step
                    break
                }
                if comm.isRoot && saveEvery > 0 && state.step % saveEvery == 0 && state.step < steps {
                    try state.save(path: statePath)
                }
            }
            progress.finish()

            var evalReport: [String: Double]?
            if let eval {
                let evalRows = try base.rows(path: eval, format: model.format, seqLen: model.seqLen, limit: evalLimit)
                let n = engine.maskedLayers.count
                let masked = try evaluateWithProgress(engine, rows: evalRows, gamma: MaskObjective.gamma(state.scores), label: "eval", comm: comm)
                let full = try evaluateWithProgress(engine, rows: evalRows, gamma: [Float](repeating: 1, count: n), label: "eval γ=1", comm: comm)
                let none = try evaluateWithProgress(engine, rows: evalRows, gamma: [Float](repeating: 0, count: n), label: "eval γ=0", comm: comm)
                evalReport = ["nll_mask": masked.meanNLL, "nll_all_deltas": full.meanNLL, "nll_base": none.meanNLL,
                              "tokens": Double(masked.tokens)]
            }

            var objective = Ranking.Objective(lambda: lambda, sInit: sInit, lr: lr, steps: steps, batch: batch,
                                              seqLen: model.seqLen, seed: seed, template: model.format.description)
            objective.method = "ila"
            objective.stableSteps = stableSteps
            objective.stoppedAt = stoppedAt
            if model.precision != .float32 { objective.precision = model.precision.rawValue }
            var ranking = Ranking.from(scores: Array(zip(engine.maskedLayers, state.scores)),
                                       gammas: state.scores.map(MaskObjective.sigmoid),
                                       architecture: base.spec.architecture,
                                       blocks: base.spec.blocks, kinds: base.spec.kinds.map(\.rawValue),
                                       source: Ranking.Source(base: model.base, deltas: store?.path ?? "", data: model.data,
                                                              tool: "ila-mask \(ilaVersion)"),
                                       objective: objective,
                                       history: state.history.map { Ranking.HistoryEntry(step: $0.step, nll: $0.nll, meanGamma: $0.meanGamma, j: $0.j) })
            ranking.eval = evalReport
            let ranks = try RankFigures(engine, comm)
            guard comm.isRoot else { return }
            try writeFloatMatrixHDF5(path: trajectoryPath, dataset: "scores",
                                     values: state.trajectory.flatMap { $0.map(Float.init) },
                                     rows: state.trajectory.count, cols: layerNames.count,
                                     stringListAttribute: (name: "layers", values: layerNames),
                                     attributes: ["description": "mask logits s after each Adam step, [steps, layers]"])
            try ranking.write(path: output)
            unlink(statePath)
            report(ranking, memory: memoryReport(plan, engine, ranks: ranks), mpi: ranks.mpiReport, engine: engine)
        }
    }

    func report(_ r: Ranking, memory: [String: Any], mpi: [String: Any]?, engine: TransformerEngine) {
        if json {
            let top = r.ordered.prefix(10).map { ["name": $0.name, "score": $0.score, "rank": $0.rank] as [String: Any] }
            var o: [String: Any] = ["output": output, "trajectory": trajectoryPath, "top": top, "memory": memory,
                                    "gemm": engine.gemmOptions.summary]
            if let h = r.history?.last { o["final_nll"] = h.nll; o["final_mean_gamma"] = h.meanGamma }
            if let e = r.eval { o["eval"] = e }
            if let mpi { o["mpi"] = mpi }
            printOut((try? jsonText(o)) ?? "{}")
            return
        }
        let rows = r.ordered.map { l in
            [String(l.rank), l.name, String(format: "%.4f", l.score), String(format: "%.4f", l.gamma ?? 0)]
        }
        var text = renderTable(header: [" rank", "layer", " score", " γ"], rows: rows)
        if let h = r.history?.last { text += String(format: "\n\nlast step: batch NLL %.4f, mean γ %.4f", h.nll, h.meanGamma) }
        if let e = r.eval {
            text += String(format: "\nheld-out NLL: mask %.4f, all deltas %.4f, base %.4f", e["nll_mask"] ?? .nan,
                           e["nll_all_deltas"] ?? .nan, e["nll_base"] ?? .nan)
        }
        printOut(text + "\nwrote \(output) and \(trajectoryPath)")
    }
}
