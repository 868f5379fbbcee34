import ArgumentParser
import Foundation
import ILACommandLine
import ILACollective
import ILACommandOptions
import ILADiff
import ILAEngine
import ILAMask
import ILAModel
import ILARanking
import ILATune

/// Set by SIGINT/SIGTERM; the loop saves its state and stops at the next step boundary.
nonisolated(unsafe) private var stopSignal: Int32 = 0

extension LearningRateSchedule: ExpressibleByArgument {}
extension RowOrder: ExpressibleByArgument {}

@main
struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ila-tune",
        abstract: "LoRA fine-tuning on all linear layers or only the selected ones; writes a PEFT adapter.",
        discussion: """
        Trains LoRA factors A [r, in], B [out, r] of every linear layer of BASE, or of the layers a \
        selection names, on the loss of DESIGN.md section 5 (mean NLL of the response tokens of each \
        step's batch × grad-accum rows) with AdamW as torch.optim.AdamW and transformers' schedules. \
        Writes ADAPTER_DIR (adapter_config.json, adapter_model.safetensors, train_log.json) that \
        PeftModel.from_pretrained loads and ila-diff reads. Ctrl-C or SIGTERM saves the state \
        (ADAPTER_DIR.state.safetensors); --resume continues to the result of an uninterrupted run.

        Examples:
          ila-tune --base base/ --data train.jsonl -o adapter/ --steps 300
          ila-tune --base base/ --data train.jsonl -o adapter/ --ranking ranking.json --top 0.3 --steps 300
          ila-tune --base base/ --data train.jsonl -o adapter/ --until-stable 0.01 --steps 1000 --save-at 1,25,50,75,100
          ila-tune --base base/ --data train.jsonl -o adapter/ --layers 'model\\.layers\\.[0-3]\\..*' --epochs 2
        """)

    @Option(help: "The base model directory (config.json, safetensors, tokenizer.json).")
    var base: String

    @Option(help: "Training data, JSONL (alpaca, messages, prompt/response or input_ids/labels rows).")
    var data: String

    @OptionGroup var dataFormat: DataFormatOptions

    @Option(name: .shortAndLong, help: "The adapter directory to write (an existing adapter there is replaced).")
    var output: String

    @Option(help: "A ranking.json: train only its top --top fraction of layers.")
    var ranking: String?

    @Option(help: "With --ranking: the fraction of layers to train (e.g. 0.3).")
    var top: Double?

    @Option(help: "A selection file (ila-mask export --format json or ila-transfer): train the layers it marks selected.")
    var select: String?

    @Option(help: "Train only the linear layers whose full name matches this regular expression (whole name).")
    var layers: String?

    @Option(help: "LoRA rank.")
    var r: Int?

    @Option(help: "LoRA alpha (scale alpha/r, or alpha/√r with --rslora).")
    var alpha: Double?

    @Flag(help: "rsLoRA: scale alpha/√r.")
    var rslora = false

    @Option(name: .customLong("init"), help: "Start from this PEFT adapter's factors (and its r, alpha, rsLoRA) instead of PEFT's default initialisation.")
    var initAdapter: String?

    @Option(help: "Peak learning rate.")
    var lr: Double = 2e-4

    @Option(help: "Learning-rate schedule: cosine, linear or constant (with warmup), as transformers'.")
    var schedule: LearningRateSchedule = .cosine

    @Option(help: "Warmup: a fraction of the steps (< 1, rounded up) or a number of steps.")
    var warmup: Double = 0.03

    @Option(name: .customLong("weight-decay"), help: "AdamW's decoupled weight decay.")
    var weightDecay: Double = 0

    @Option(name: .customLong("max-grad-norm"), help: "Clip the global gradient norm to this, as clip_grad_norm_ (0: no clipping).")
    var maxGradNorm: Double = 0

    @Option(help: "Rows per micro-batch.")
    var batch: Int = 16

    @Option(name: .customLong("grad-accum"), help: "Micro-batches per optimizer step (the loss is the token mean over all of them).")
    var gradAccum: Int = 1

    @Option(help: "Optimizer steps (the schedule's length; the most steps with --until-stable).")
    var steps: Int?

    @Option(help: "Passes over the data, instead of --steps (default 1).")
    var epochs: Double?

    @Option(name: .customLong("seq-len"), help: "Truncate each row to this many tokens.")
    var seqLen: Int = 256

    @Option(help: "Seed of the LoRA initialisation and of the shuffled order.")
    var seed: UInt64 = 0

    @Option(help: "Row order: shuffle (a permutation per epoch from the seed) or file (consecutive rows in file order).")
    var order: RowOrder = .shuffle

    @Option(help: "Use only the first N rows of --data.")
    var limit: Int?

    @Option(help: "Held-out JSONL: its NLL is measured every --eval-every steps and at the end.")
    var eval: String?

    @Option(name: .customLong("eval-every"), help: "Steps between held-out evaluations (0: only at the end).")
    var evalEvery: Int = 0

    @Option(name: .customLong("eval-limit"), help: "Rows of --eval to use (default: all).")
    var evalLimit: Int?

    @Option(name: .customLong("save-at"), help: "Milestones in percent of --steps, e.g. 1,25,50,75,100: ADAPTER_DIR-001 … ADAPTER_DIR-100.")
    var saveAt: String?

    @Option(name: .customLong("until-stable"), help: "Stop at the first step where the mean loss of the last --window steps and of the window before differ by less than this (the paper's ε-stable point).")
    var untilStable: Double?

    @Option(help: "Window of --until-stable, in steps.")
    var window: Int = 20

    @Option(name: .customLong("save-every"), help: "Save the resumable state every N steps (0: only when interrupted).")
    var saveEvery: Int = 25

    @Flag(help: "Continue from ADAPTER_DIR.state.safetensors.")
    var resume = false

    @Option(name: .customLong("max-memory"), help: "Memory the run may use, e.g. 16G (default: what the machine has available).")
    var maxMemory: String?

    @OptionGroup var pipelineOptions: PipelineOptions

    @Option(help: "GEMM library: auto, openblas or onednn.")
    var gemm: GEMMBackend = .auto

    @Option(help: "Inputs of the large GEMMs: float32 (exact against PyTorch) or bf16.")
    var precision: GEMMPrecision = .float32

    @Flag(name: .customLong("widen-weights"),
          help: "Hold bf16/f16 base weights as float32 (twice the memory; no per-GEMM widening, faster where it fits).")
    var widenWeights = false

    @Flag(help: "Recompute each block's activations in the backward pass (less memory, one more forward).")
    var recompute = false

    @Flag(help: "Print the summary as JSON.")
    var json = false

    func validate() throws {
        try dataFormat.validate()
        if let r, r < 1 { throw ValidationError("--r must be at least 1") }
        if let alpha, !(alpha > 0 && alpha.isFinite) { throw ValidationError("--alpha must be positive") }
        if initAdapter != nil && (r != nil || alpha != nil || rslora) {
            throw ValidationError("--init brings its own r, alpha and rsLoRA; do not give --r, --alpha or --rslora with it")
        }
        if !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be positive") }
        if !(warmup >= 0 && warmup.isFinite) { throw ValidationError("--warmup must be 0 or more") }
        if !(weightDecay >= 0 && weightDecay.isFinite) { throw ValidationError("--weight-decay must be 0 or more") }
        if !(maxGradNorm >= 0 && maxGradNorm.isFinite) { throw ValidationError("--max-grad-norm must be 0 or more") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if gradAccum < 1 { throw ValidationError("--grad-accum must be at least 1") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let epochs, !(epochs > 0 && epochs.isFinite) { throw ValidationError("--epochs must be positive") }
        if steps != nil && epochs != nil { throw ValidationError("give --steps or --epochs, not both") }
        if seqLen < 2 { throw ValidationError("--seq-len must be at least 2") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if let evalLimit, evalLimit < 1 { throw ValidationError("--eval-limit must be at least 1") }
        if evalEvery < 0 { throw ValidationError("--eval-every must be 0 or more") }
        if evalEvery > 0 && eval == nil { throw ValidationError("--eval-every needs --eval") }
        if saveEvery < 0 { throw ValidationError("--save-every must be 0 or more") }
        if window < 1 { throw ValidationError("--window must be at least 1") }
        if let e = untilStable, !(e > 0 && e.isFinite) { throw ValidationError("--until-stable must be positive") }
        _ = try milestones()
        let selections = [ranking != nil, select != nil, layers != nil].filter { $0 }.count
        if selections > 1 { throw ValidationError("give one of --ranking, --select or --layers") }
        if ranking != nil && top == nil { throw ValidationError("--ranking needs --top (the fraction of layers to train)") }
        if top != nil && ranking == nil { throw ValidationError("--top needs --ranking") }
        if let top, !(top > 0 && top <= 1) { throw ValidationError("--top must be in (0, 1]") }
        if let layers, (try? NSRegularExpression(pattern: layers)) == nil {
            throw ValidationError("--layers \(layers) is not a valid regular expression")
        }
        if let m = maxMemory, MemoryPlan.parseSize(m) == nil { throw ValidationError("--max-memory \(m) is not a size (e.g. 16G)") }
    }

    func milestones() throws -> [Int] {
        guard let saveAt else { return [] }
        var out: [Int] = []
        for part in saveAt.split(separator: ",", omittingEmptySubsequences: false) {
            guard let p = Int(part.trimmingCharacters(in: .whitespaces)), p >= 1, p <= 100 else {
                throw ValidationError("--save-at takes percentages 1…100 separated by commas, e.g. 1,25,50,75,100; got \(saveAt)")
            }
            out.append(p)
        }
        return Array(Set(out)).sorted()
    }

    var outputPath: String {
        var p = output
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }
    var statePath: String { outputPath + ".state.safetensors" }

    /// The step at which milestone p% is saved.
    static func milestoneStep(_ percent: Int, of steps: Int) -> Int {
        max(1, min(steps, Int((Double(percent) / 100 * Double(steps)).rounded())))
    }

    func run() throws {
        try runReportingErrors {
            signal(SIGINT) { _ in stopSignal = SIGINT }
            signal(SIGTERM) { _ in stopSignal = SIGTERM }
            defer { signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL) }
            let started = Date()
            // Under mpirun: every rank runs its share of each step's rows; rank 0 alone writes.
            let comm = try joinJob(pipeline: pipelineOptions.pipeline)
            let link = pipelineStage(comm)
            let milestones = try milestones()
            if comm.isRoot {
                try AdapterOutput.check(outputPath)
                for p in milestones { try AdapterOutput.check(outputPath + String(format: "-%03d", p)) }
                try AtomicOutput(path: statePath).discard()
            }
            let format = try dataFormat.format()

            // Base model, within the memory budget (LoRA tensors, gradients and both moments included).
            var tokenBudget = 4096
            var planned: MemoryPlan?
            var selected: [LinearLayer] = []
            var initial: LoRAAdapter?
            // A pipeline stage reads its own blocks only (a failure there ends every rank).
            let partOf = stagePart(link, base: base)
            let model = try onEveryRank(comm) {
                try BaseModel(path: base, widenWeights: widenWeights, part: partOf) { checkpoint, spec in
                    selected = try selectLayers(spec)
                    initial = try initAdapter.map { try LoRAAdapter(path: $0) }
                    var plan = MemoryPlan(spec: spec, checkpoint: checkpoint, deltas: nil, gradient: true, widenWeights: widenWeights,
                                          part: try partOf?(spec))
                    plan.runtime = MemoryPlan.runtimeBytes(gemm)
                    let rank = initial?.config.r ?? r ?? 8
                    plan.deltas += 4 * 4 * selected.reduce(0) { n, l in
                        let s = spec.shape(of: l.kind)!
                        return n + rank * (s.in + s.out)
                    }
                    tokenBudget = try plan.tokenBudget(maxMemory: maxMemory, rowTokens: seqLen, what: base, forceRecompute: recompute)
                    planned = plan
                }
            }
            tokenBudget = pipelineOptions.tokens(planned: tokenBudget)
            let spec = model.spec

            // LoRA tensors: PEFT's default initialisation, or an adapter's factors.
            var options = TuneOptions()
            options.r = initial?.config.r ?? r ?? 8
            options.alpha = initial?.config.loraAlpha ?? alpha ?? 16
            options.rsLoRA = initial?.config.useRSLoRA ?? rslora
            options.lr = lr; options.schedule = schedule; options.warmup = warmup; options.weightDecay = weightDecay
            options.batch = batch; options.gradAccum = gradAccum; options.seqLen = seqLen; options.seed = seed
            options.order = order; options.maxGradNorm = maxGradNorm
            var loraLayers: [LoRAParameters.Layer] = []
            var factors: [LoRAAdapter.Factors] = []
            for l in selected {
                let s = spec.shape(of: l.kind)!
                if let initial {
                    guard initial.layers.contains(l) else {
                        throw ILAError(file: initial.path, "has no factors for \(l.name), which is selected for training")
                    }
                    let f = try initial.factors(l)
                    guard f.inFeatures == s.in, f.outFeatures == s.out else {
                        throw ILAError(file: initial.path, "\(l.name): factors are for [\(f.outFeatures), \(f.inFeatures)] but the model's layer is [\(s.out), \(s.in)]")
                    }
                    factors.append(f)
                    loraLayers.append(.init(layer: l, rank: f.rank, inFeatures: s.in, outFeatures: s.out, scale: f.scale))
                } else {
                    loraLayers.append(.init(layer: l, rank: options.r, inFeatures: s.in, outFeatures: s.out,
                                            scale: Float(options.scale(rank: options.r, alpha: options.alpha))))
                }
            }
            let params = LoRAParameters(layers: loraLayers)
            if factors.isEmpty {
                LoRAInitialisation.peftDefault(params, seed: seed)
            } else {
                for (i, f) in factors.enumerated() {
                    guard f.a.allSatisfy(\.isFinite), f.b.allSatisfy(\.isFinite) else {
                        throw ILAError(file: initAdapter ?? "", "\(f.layer.name): factors hold NaN or Inf")
                    }
                    f.a.withUnsafeBufferPointer { params.a(i).p.update(from: $0.baseAddress!, count: f.a.count) }
                    f.b.withUnsafeBufferPointer { params.b(i).p.update(from: $0.baseAddress!, count: f.b.count) }
                }
            }

            let allRows = try model.rows(path: data, format: format, seqLen: seqLen, limit: limit)
            guard !allRows.isEmpty else { throw ILAError(file: data, "holds no rows") }
            // A row whose response is cut off entirely by --seq-len adds nothing to any step.
            let rows = Tuner.trainingRows(allRows)
            guard !rows.isEmpty else {
                throw ILAError(file: data, "no row has a response token within --seq-len \(seqLen)")
            }
            if rows.count < allRows.count && !silentOutput {
                FileHandle.standardError.write(Data("note: \(data): \(allRows.count - rows.count) of \(allRows.count) rows have no response token within --seq-len \(seqLen); they are left out\n".utf8))
            }
            let evalRows = try eval.map { try model.rows(path: $0, format: format, seqLen: seqLen, limit: evalLimit) }
            let plan = BatchPlan(rows: rows.count, rowsPerStep: options.rowsPerStep, order: order, seed: seed)
            options.steps = steps ?? plan.steps(epochs: epochs ?? 1)

            let engine = try TransformerEngine(weights: model.weights, training: params, maxSequenceLength: seqLen,
                                               tokenBudget: tokenBudget, gemm: GEMMOptions(backend: gemm, precision: precision))
            engine.recompute = planned?.recompute ?? recompute
            try attach(engine, to: link, comm)
            let layerNames = selected.map(\.name)
            let fingerprint = [base, data, format.description, precision.rawValue, "\(rows.count)", "\(limit ?? 0)",
                               initAdapter ?? "", eval ?? "", "\(evalLimit ?? 0)", "\(evalEvery)", untilStable.map { "\($0)/\(window)" } ?? "",
                               layerNames.joined(separator: ",")].joined(separator: "|")
            let tuner = try Tuner(engine: engine, rows: rows,
                                  progress: TuneProgress(options: options, fingerprint: fingerprint, layers: layerNames))
            if comm.size > 1 {
                tuner.share = { comm.share(of: $0) }
                tuner.allreduce = { sums, floats in
                    try comm.allreduceSum(&sums)
                    if !floats.isEmpty { try comm.allreduceSum(&floats) }
                }
            }
            if resume {
                // Rank 0 reads the state; the others receive its log and tensors (any number of ranks).
                tuner.progress = try fromRoot(comm) {
                    try tuner.loadState(path: statePath)
                    return tuner.progress
                }
                if comm.size > 1 {
                    tuner.optimizer.step = tuner.progress.step
                    for buf in tuner.stateBuffers {
                        var bytes = [UInt8](UnsafeRawBufferPointer(start: buf.p, count: 4 * buf.count))
                        try comm.broadcast(&bytes, root: 0)
                        bytes.withUnsafeBytes { UnsafeMutableRawPointer(buf.p).copyMemory(from: $0.baseAddress!, byteCount: 4 * buf.count) }
                    }
                }
            }

            let total = options.steps
            let progressBar = ProgressBar(total: total, label: "tune")
            var tokensDone = 0
            let loopStart = Date()
            var loopSeconds = 0.0
            func evaluateHeldOut() throws {
                guard let evalRows else { return }
                let r = try tuner.evaluate(evalRows)
                tuner.progress.evals.append(TuneEval(step: tuner.progress.step, nll: r.meanNLL, tokens: r.tokens))
            }
            while tuner.progress.step < total && tuner.progress.stableAt == nil {
                // Every rank stops at the same step boundary (a signal may reach the ranks apart).
                if try comm.any(stopSignal != 0) {
                    progressBar.finish()
                    if comm.isRoot { try tuner.saveState(path: statePath) }
                    reportError(ILAError("interrupted at step \(tuner.progress.step) of \(total); state saved to \(statePath); continue with --resume"))
                    throw ExitCode(128 + (stopSignal != 0 ? stopSignal : SIGTERM))
                }
                let s = try tuner.step()
                tokensDone += s.tokens
                let rate = Double(tokensDone) / max(Date().timeIntervalSince(loopStart), 1e-9)
                progressBar.update(s.step, detail: String(format: "loss %.4f  lr %.2e  %.0f tok/s", s.loss, s.lr, rate))
                if evalEvery > 0 && s.step % evalEvery == 0 && s.step < total { try evaluateHeldOut() }
                if let eps = untilStable, LossStability.isStable(tuner.progress.log.map(\.loss), window: window, eps: eps) {
                    tuner.progress.stableAt = s.step
                }
                for p in milestones where Self.milestoneStep(p, of: total) == s.step && !tuner.progress.savedAt.contains(p) {
                    if comm.isRoot { try write(outputPath + String(format: "-%03d", p), tuner: tuner, selected: selected, spec: spec,
                              seconds: Date().timeIntervalSince(started)) }
                    tuner.progress.savedAt.append(p)
                }
                if comm.isRoot && saveEvery > 0 && s.step % saveEvery == 0 && s.step < total && tuner.progress.stableAt == nil {
                    try tuner.saveState(path: statePath)
                }
            }
            progressBar.finish()
            loopSeconds = Date().timeIntervalSince(loopStart)
            if tuner.progress.evals.last?.step != tuner.progress.step { try evaluateHeldOut() }
            let ranks = try RankFigures(engine, comm)
            if comm.isRoot {
                try write(outputPath, tuner: tuner, selected: selected, spec: spec, seconds: Date().timeIntervalSince(started))
                unlink(statePath)
            }
            report(tuner, seconds: Date().timeIntervalSince(started), loopSeconds: loopSeconds, ranks: ranks)
        }
    }

    /// The layers to train: every linear layer, or those of the selection.
    func selectLayers(_ spec: TransformerSpec) throws -> [LinearLayer] {
        let all = spec.allLayers
        let byName = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
        func named(_ names: [String], file: String) throws -> [LinearLayer] {
            for n in names where byName[n] == nil {
                throw ILAError(file: file, "names layer \(n), which \(base) does not have (a ranking of another model? use ila-transfer)")
            }
            let set = Set(names)
            return all.filter { set.contains($0.name) }
        }
        var chosen: [LinearLayer]
        if let ranking, let top {
            let r = try Ranking.load(path: ranking)
            chosen = try named(Array(r.top(top)), file: ranking)
        } else if let select {
            chosen = try named(try Self.selectedNames(path: select), file: select)
        } else if let layers {
            let re = try NSRegularExpression(pattern: "^(?:\(layers))$")
            chosen = all.filter { re.firstMatch(in: $0.name, range: NSRange($0.name.startIndex..., in: $0.name)) != nil }
            if chosen.isEmpty { throw ILAError("--layers \(layers) matches none of the \(all.count) linear layers of \(base) (e.g. \(all.first?.name ?? ""))") }
        } else {
            chosen = all
        }
        if chosen.isEmpty { throw ILAError(file: ranking ?? select ?? base, "selects no layers") }
        return chosen
    }

    /// The layers an ila-selection file marks selected.
    static func selectedNames(path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ILAError(file: path, "cannot read") }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw ILAError(file: path, "is not a JSON object") }
        guard o["format"] as? String == "ila-selection" else {
            throw ILAError(file: path, "is not an ila-selection file (ila-mask export --format json); for a ranking use --ranking R --top F")
        }
        guard let layers = o["layers"] as? [[String: Any]] else { throw ILAError(file: path, "has no layers list") }
        var names: [String] = []
        for (i, l) in layers.enumerated() {
            guard let n = l["name"] as? String, let s = l["selected"] as? Bool else {
                throw ILAError(file: path, "layers[\(i)] lacks name or selected")
            }
            if s { names.append(n) }
        }
        return names
    }

    func write(_ path: String, tuner: Tuner, selected: [LinearLayer], spec: TransformerSpec, seconds: Double) throws {
        let o = tuner.options
        let out = AdapterOutput(path: path, r: o.r, alpha: o.alpha, rsLoRA: o.rsLoRA, baseModel: base, allLayers: spec.allLayers)
        try out.write(tuner.parameters, log: try trainLog(tuner, seconds: seconds))
    }

    func trainLog(_ tuner: Tuner, seconds: Double) throws -> Data {
        let p = tuner.progress, o = p.options
        var log: [String: Any] = [
            "format": "ila-train-log", "version": 1, "tool": "ila-tune \(ilaVersion)",
            "step": p.step, "of": o.steps,
            "loss_curve": p.log.map(\.loss),
            "steps": p.log.map { ["step": $0.step, "loss": $0.loss, "lr": $0.lr, "tokens": $0.tokens, "loss_tokens": $0.lossTokens,
                                  "grad_norm": $0.gradNorm] as [String: Any] },
            "eval": p.evals.map { ["step": $0.step, "nll": $0.nll, "tokens": $0.tokens] as [String: Any] },
            "stable_at": p.stableAt.map { $0 as Any } ?? NSNull(),
            "layers": p.layers, "trainable_parameters": tuner.parameters.parameterCount,
            "seconds": seconds,
            "options": [
                "r": o.r, "alpha": o.alpha, "rslora": o.rsLoRA, "lr": o.lr, "schedule": o.schedule.rawValue,
                "warmup": o.warmup, "warmup_steps": o.warmupSteps, "weight_decay": o.weightDecay, "batch": o.batch,
                "grad_accum": o.gradAccum, "steps": o.steps, "seq_len": o.seqLen, "seed": o.seed, "order": o.order.rawValue,
                "max_grad_norm": o.maxGradNorm, "base": base, "data": data, "init": initAdapter ?? NSNull(),
                "until_stable": untilStable.map { $0 as Any } ?? NSNull(), "window": window,
            ] as [String: Any],
        ]
        if let e = p.evals.last { log["eval_nll"] = e.nll }
        return try JSONSerialization.data(withJSONObject: log, options: [.prettyPrinted, .sortedKeys])
    }

    func report(_ tuner: Tuner, seconds: Double, loopSeconds: Double, ranks: RankFigures) {
        let p = tuner.progress
        let tokens = p.log.map(\.tokens).reduce(0, +)
        if json {
            var o: [String: Any] = ["output": outputPath, "steps": p.step, "of": p.options.steps, "layers": p.layers.count,
                                    "trainable_parameters": tuner.parameters.parameterCount, "seconds": seconds,
                                    "train_seconds": loopSeconds, "final_loss": p.log.last?.loss ?? Double.nan, "tokens": tokens,
                                    "peak_rss_bytes": MemoryPlan.peakResidentBytes()]
            for (k, v) in ranks.report { o[k] = v }
            if let mpi = ranks.mpiReport { o["mpi"] = mpi }
            if let s = p.stableAt { o["stable_at"] = s }
            if let e = p.evals.last { o["eval_nll"] = e.nll }
            printOut((try? jsonText(o)) ?? "{}")
            return
        }
        var text = String(format: "trained %d layers (%d parameters) for %d of %d steps in %.1f s; last loss %.4f",
                          p.layers.count, tuner.parameters.parameterCount, p.step, p.options.steps, seconds, p.log.last?.loss ?? .nan)
        if let s = p.stableAt { text += "\nε-stable at step \(s)" }
        if let e = p.evals.last { text += String(format: "\nheld-out NLL %.4f (%d tokens)", e.nll, e.tokens) }
        printOut(text + "\nwrote \(outputPath)")
    }

    static func main() {
        Collective.superviseRank()
        mainWithDesignExitCodes(cleanUpOnInterrupt: false)
    }
}
