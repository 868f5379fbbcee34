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

extension ScoreMethod: ExpressibleByArgument {}
extension TokenPositions: ExpressibleByArgument {}
extension LastState: ExpressibleByArgument {}

/// The options of `score` (and of `select-report`, which runs every method): the model, the
/// optional deltas and data, and each method's settings.
struct ScoreOptions: ParsableArguments {
    @Option(help: "The base model directory (config.json, safetensors, tokenizer.json).")
    var base: String

    @Option(help: "The deltas written by ila-diff (HDF5). Needed by rel-change, taylor, ablation and ila; with the others it restricts the ranking to the layers it holds.")
    var deltas: String?

    @Option(help: "Instruction data, JSONL (alpaca, messages, prompt/response or input_ids/labels rows). Needed by block-influence(-sublayer), angular, taylor, ablation and ila.")
    var data: String?

    @OptionGroup var dataFormat: DataFormatOptions

    @Option(name: .customLong("seq-len"), help: "Truncate each row to this many tokens.")
    var seqLen: Int = 256

    @Option(help: "Use only the first N rows of --data (every data-driven method's cost grows with it; ablation runs N+1 passes over them).")
    var limit: Int?

    @Option(help: ArgumentHelp("block-influence(-sublayer), angular: the positions averaged, all (every token of every row) or last (each row's last token). Default: all for block-influence (ShortGPT), last for angular (PruneMe).",
                               valueName: "all|last"))
    var positions: TokenPositions?

    @Option(help: "angular: the distance n in blocks between the compared states (PruneMe's layers_to_skip); a block's score is the mean distance of the windows of n blocks that contain it.")
    var distance: Int?

    @Option(name: .customLong("last-state"),
            help: ArgumentHelp("block-influence(-sublayer), angular: the state after the last block, normed (the final norm's output, as transformers' hidden_states[-1] that ShortGPT and PruneMe read) or raw (the residual stream).",
                               valueName: "normed|raw"))
    var lastState: LastState = .normed

    @Option(help: "block-influence(-sublayer), angular: run the model with every delta scaled by G (needs --deltas). Default 0: the base model, as ShortGPT and PruneMe measure the model before tuning.")
    var gamma: Double?

    @Option(help: "ila: Adam steps.")
    var steps: Int = 300

    @Option(help: "ila: rows per step, sampled with replacement.")
    var batch: Int = 16

    @Option(help: "ila: Adam learning rate.")
    var lr: Double = 0.05

    @Option(name: .customLong("lambda"), help: "ila: weight λ of the mean-γ sparsity term.")
    var lambda: Double = 1.0

    @Option(name: .customLong("s-init"), help: "ila: initial mask logit s for every layer.")
    var sInit: Double = 3.0

    @Option(help: "ila: seed of the row sampler.")
    var seed: UInt64 = 0

    @Option(name: .customLong("max-memory"),
            help: "Memory the run may use, e.g. 16G (default: what the machine has available).")
    var maxMemory: String?

    @Option(help: "GEMM library: auto, openblas or onednn.")
    var gemm: GEMMBackend = .auto

    @Option(help: "Inputs of the large GEMMs: float32 or bf16.")
    var precision: GEMMPrecision = .float32

    func validate() throws {
        try dataFormat.validate()
        if seqLen < 2 { throw ValidationError("--seq-len must be at least 2") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if let distance, distance < 1 { throw ValidationError("--distance must be at least 1") }
        if let gamma, !gamma.isFinite { throw ValidationError("--gamma must be a finite number") }
        if gamma != nil && gamma != 0 && deltas == nil { throw ValidationError("--gamma needs --deltas") }
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be positive") }
        if !lambda.isFinite || lambda < 0 { throw ValidationError("--lambda must be a non-negative number") }
        if !sInit.isFinite { throw ValidationError("--s-init must be finite") }
        if let m = maxMemory, MemoryPlan.parseSize(m) == nil {
            throw ValidationError("--max-memory \(m) is not a size (e.g. 16G, 12GiB, 800M)")
        }
    }

    /// Usage errors of one method: what it needs, and options that do not apply to it.
    func check(_ method: ScoreMethod) throws {
        if method.needsDeltas && deltas == nil { throw ValidationError("--method \(method.rawValue) needs --deltas") }
        if method.needsData && data == nil { throw ValidationError("--method \(method.rawValue) needs --data") }
        let hidden: Set<ScoreMethod> = [.blockInfluence, .blockInfluenceSublayer, .angular]
        if distance != nil && method != .angular { throw ValidationError("--distance applies only to --method angular") }
        if positions != nil && !hidden.contains(method) {
            throw ValidationError("--positions applies only to block-influence, block-influence-sublayer and angular")
        }
        if gamma != nil && !hidden.contains(method) {
            throw ValidationError("--gamma applies only to block-influence, block-influence-sublayer and angular")
        }
    }

    var gemmOptions: GEMMOptions { GEMMOptions(backend: gemm, precision: precision) }
    var format: DataFormat { (try? dataFormat.format()) ?? DataFormat(template: dataFormat.template, trainOn: dataFormat.trainOn) }

    func progressBar(_ label: String) -> ScoreProgress {
        var bar: ProgressBar?
        return { done, total, detail in
            if bar == nil { bar = ProgressBar(total: total, label: label) }
            bar?.update(done, detail: detail)
            if done == total { bar?.finish() }
        }
    }

    /// Computes one method's ranking. `engine` may be shared between methods (select-report).
    /// Under several ranks (`comm`) the data-driven methods run each rank's contiguous share of the
    /// rows and add their sums with allreduce, so every rank ends with the same scores; the
    /// data-free ones (rel-change, spectrum) compute the same on every rank. Callers write on rank 0.
    func ranking(_ method: ScoreMethod, loaded: (BaseModel, TransformerEngine, DeltaStore?)? = nil,
                 rows preloaded: [TokenizedRow]? = nil,
                 comm: Communicator = SingleProcess.shared) throws -> (Ranking, seconds: Double) {
        let started = Date()
        var objective = Ranking.Objective(method: method.rawValue)
        var architecture = "", blocks = 0, kinds: [String]? = nil
        var scores: LayerScores
        var history: [Ranking.HistoryEntry]?
        let progress = progressBar(method.rawValue)

        switch method {
        case .relChange:
            guard let deltas else { throw ILAError("--deltas is required") }
            let store = try loaded?.2 ?? DeltaStore(path: deltas)
            scores = try relChangeScores(store: store)
            (architecture, blocks, kinds) = try Self.describe(base: base, fallback: scores.layers)
        case .spectrum:
            let checkpoint = try loaded?.0.checkpoint ?? ModelCheckpoint(path: base)
            (architecture, blocks, kinds) = try Self.describe(base: base, fallback: LinearLayer.layers(in: checkpoint))
            var layers = LinearLayer.layers(in: checkpoint).filter { kinds?.contains($0.kind.rawValue) ?? $0.kind.isLinearKind }
            if let deltas {
                let store = try loaded?.2 ?? DeltaStore(path: deltas)
                let have = Set(layers)
                for l in store.layers where !have.contains(l) {
                    throw ILAError(file: deltas, "layer \(l.name) is not a linear layer of \(base)")
                }
                layers = store.layers
            }
            guard !layers.isEmpty else { throw ILAError(file: base, "holds no linear layers of transformer blocks") }
            scores = try Spectrum.scores(checkpoint: checkpoint, layers: layers, progress: progress)
        default:
            guard let data else { throw ILAError("--data is required") }
            let (model, engine, _) = try loaded ?? {
                let (m, e, s, _) = try loadModelEngine(base: base, deltas: deltas, seqLen: seqLen, maxMemory: maxMemory, recompute: false,
                                                       gemm: gemmOptions, requireDeltas: method.needsDeltas,
                                                       gradient: method == .taylor || method == .ila)
                return (m, e, s)
            }()
            architecture = model.spec.architecture; blocks = model.spec.blocks; kinds = model.spec.kinds.map(\.rawValue)
            let rows = try preloaded ?? model.rows(path: data, format: format, seqLen: seqLen, limit: limit)
            guard !rows.isEmpty else { throw ILAError(file: data, "holds no rows") }
            objective.seqLen = seqLen
            objective.template = format.description
            if precision != .float32 { objective.precision = precision.rawValue }
            if method.needsDeltas && engine.maskedLayers.isEmpty {
                throw ILAError(file: deltas ?? "", "holds no layers")
            }
            switch method {
            case .taylor:
                scores = try taylorScores(engine: engine, rows: rows, progress: progress, comm: comm)
            case .ablation:
                scores = try ablationScores(engine: engine, rows: rows, progress: progress, comm: comm)
            case .ila:
                (scores, history) = try learnILA(engine: engine, rows: rows, objective: &objective, comm: comm)
            default:
                let sel = positions ?? (method == .angular ? .last : .all)
                let n = method == .angular ? (distance ?? 1) : 1
                let g = Float(gamma ?? 0)
                let st = try HiddenStateStatistics.measure(engine: engine, rows: rows,
                                                           gamma: [Float](repeating: g, count: engine.maskedLayers.count),
                                                           positions: sel, distance: n, lastState: lastState, progress: progress,
                                                           comm: comm)
                let layers = engine.maskedLayers.isEmpty ? modelLayers(model.spec) : engine.maskedLayers
                switch method {
                case .angular: scores = spreadBlockScores(layers, perBlock: st.angularPerBlock); objective.distance = n
                case .blockInfluenceSublayer:
                    scores = spreadBlockScores(layers, perBlock: st.blockInfluence, attention: st.attentionInfluence, mlp: st.mlpInfluence)
                default: scores = spreadBlockScores(layers, perBlock: st.blockInfluence)
                }
                scores.tokens = st.tokens; scores.rows = st.rows
                objective.positions = sel.rawValue
                objective.lastState = lastState.rawValue
                if g != 0 { objective.gamma = Double(g) }
            }
            objective.rows = rows.count
            objective.tokens = scores.tokens > 0 ? scores.tokens : nil
        }
        for (l, s) in zip(scores.layers, scores.scores) where !s.isFinite {
            throw ILAError("layer \(l.name): the \(method.rawValue) score is not finite")
        }
        let r = Ranking.from(scores: Array(zip(scores.layers, scores.scores)), architecture: architecture, blocks: blocks,
                             kinds: kinds,
                             source: Ranking.Source(base: base, deltas: deltas ?? "", data: method.needsData ? (data ?? "") : "",
                                                    tool: "ila-mask \(ilaVersion)"),
                             objective: objective, history: history)
        return (r, Date().timeIntervalSince(started))
    }

    /// The ILA learner as `learn` runs it (no trajectory file, no resume): under several ranks each
    /// step's batch is split across them and the NLL sums, tokens and dΣNLL/dγ are all-reduced.
    func learnILA(engine: TransformerEngine, rows: [TokenizedRow], objective: inout Ranking.Objective,
                  comm: Communicator = SingleProcess.shared) throws -> (LayerScores, [Ranking.HistoryEntry]) {
        var o = LearnOptions()
        o.lambda = lambda; o.sInit = sInit; o.lr = lr; o.steps = steps; o.batch = batch; o.seqLen = seqLen; o.seed = seed
        var state = LearnState(options: o, fingerprint: "", layers: engine.maskedLayers.map(\.name))
        let learner = try MaskLearner(engine: engine, rows: rows, lambda: lambda, communicator: comm)
        let progress = ProgressBar(total: steps, label: "ila")
        while state.step < steps {
            try learner.step(&state)
            if let h = state.history.last { progress.update(state.step, detail: String(format: "nll %.4f  mean γ %.3f", h.nll, h.meanGamma)) }
        }
        progress.finish()
        objective.lambda = lambda; objective.sInit = sInit; objective.lr = lr; objective.steps = steps
        objective.batch = batch; objective.seed = seed; objective.optimizer = "adam"
        return (LayerScores(layers: engine.maskedLayers, scores: state.scores),
                state.history.map { Ranking.HistoryEntry(step: $0.step, nll: $0.nll, meanGamma: $0.meanGamma, j: $0.j) })
    }

    /// Architecture, blocks and kinds from config.json, or from the layers when there is none.
    static func describe(base: String, fallback layers: [LinearLayer]) throws -> (String, Int, [String]?) {
        let checkpoint = try ModelCheckpoint(path: base)
        if let config = checkpoint.sidecar("config.json") {
            let spec = try Architectures.load(configAt: config)
            return (spec.architecture, spec.blocks, spec.kinds.map(\.rawValue))
        }
        return ("unknown", (layers.map(\.block).max() ?? 0) + 1, nil)
    }
}

struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Rank the layers by another importance measure (Spectrum, Block Influence, angular distance, Taylor, ablation, ‖Δ‖/‖W0‖) or by ILA.",
        discussion: """
        Writes a ranking.json like `learn`'s (objective.method names the method), which compare, \
        export, eval --ranking and ila-transfer take as they take ILA's. Higher score = more important:
          rel-change       ‖Δ_i‖/‖W0_i‖ from deltas.h5 (--deltas)
          spectrum         Spectrum's SNR of the base weight (singular values
                           above the Marchenko–Pastur threshold); base only
          block-influence  ShortGPT: 1 − mean cos(h_in, h_out) of each block
                           on --data, given to all its layers
          block-influence-sublayer
                           the same for the attention half (q k v o) and the
                           MLP half (gate up down) of each block
          angular          PruneMe: arccos(cos(h_l, h_l+n))/π, n = --distance
                           (1), on each row's last token (--positions)
          taylor           |∂NLL/∂γ_i| at γ = 1 on --data (one pass)
          ablation         NLL(γ = 1 but γ_i = 0) − NLL(γ = 1) on --data
                           (one pass per layer)
          ila              ILA's learned mask logits, as `learn`

        Under mpirun the data-driven methods split the rows across the ranks and add their sums; \
        rank 0 alone writes and prints.

        Examples:
          ila-mask score --method spectrum --base base/ -o spectrum.json
          ila-mask score --method rel-change --base base/ --deltas deltas.h5 -o rel.json
          ila-mask score --method block-influence --base base/ --deltas deltas.h5 --data train.jsonl --limit 64 -o bi.json
          ila-mask score --method angular --distance 2 --base base/ --data train.jsonl --limit 64 -o angular.json
          ila-mask score --method ablation --base base/ --deltas deltas.h5 --data train.jsonl --limit 32 -o ablation.json
        """)

    @Option(help: ArgumentHelp("The measure: \(ScoreMethod.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "method"))
    var method: ScoreMethod

    @OptionGroup var options: ScoreOptions

    @Option(name: .shortAndLong, help: "Where to write ranking.json.")
    var output: String

    @Flag(help: "Print {\"output\", \"method\", \"seconds\", \"top\"} as JSON.")
    var json = false

    func validate() throws {
        try options.check(method)
        if !output.hasSuffix(".json") { throw ValidationError("--output must end in .json") }
    }

    func run() throws {
        try runReportingErrors {
            // Under mpirun: the data-driven methods split the rows across the ranks; rank 0 alone
            // writes and prints (joinJob silences the others).
            let comm = try joinJob()
            if comm.isRoot { try AtomicOutput(path: output).discard() }
            let (ranking, seconds) = try options.ranking(method, comm: comm)
            guard comm.isRoot else { return }
            try ranking.write(path: output)
            if json {
                let top = ranking.ordered.prefix(10).map { ["name": $0.name, "score": $0.score, "rank": $0.rank] as [String: Any] }
                printOut(try jsonText(["output": output, "method": method.rawValue, "seconds": seconds, "layers": ranking.layers.count,
                                       "top": top] as [String: Any]))
                return
            }
            let rows = ranking.ordered.map { [String($0.rank), $0.name, String(format: "%.6g", $0.score)] }
            printOut(renderTable(header: [" rank", "layer", " score"], rows: rows)
                     + String(format: "\n\n%@ scores of %d layers in %.2f s\nwrote %@", method.rawValue, ranking.layers.count, seconds, output))
        }
    }
}
