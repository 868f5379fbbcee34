import ArgumentParser
import Foundation
import ILACommandLine
import ILADiff
import ILAMask
import ILAModel
import ILAEngine
import ILACollective

extension PromptTemplate: ExpressibleByArgument {
    public static var allValueStrings: [String] { allNames }
}
extension TrainOn: ExpressibleByArgument {}
extension GEMMBackend: ExpressibleByArgument {}
extension GEMMPrecision: ExpressibleByArgument {}

/// The data options every command that reads rows shares (eval, learn, bench, tokenize, ila-tune).
public struct DataFormatOptions: ParsableArguments {
    public init() {}

    @Option(help: ArgumentHelp("Prompt template: \(PromptTemplate.allNames.joined(separator: ", ")). `model` is the tokenizer's own chat template (tokenizer_config.json's chat_template or chat_template.jinja), rendered as transformers' apply_chat_template renders it. Default: model for messages rows when the tokenizer has a chat template, alpaca otherwise.",
                               valueName: "name"))
    public var template: PromptTemplate?

    @Option(name: .customLong("train-on"),
            help: ArgumentHelp("Which assistant turns of a chat carry labels: last (the last assistant turn) or all-assistant (every assistant turn, by prefix differences of the chat template; needs --template model for rows with several assistant turns).",
                               valueName: "turns"))
    public var trainOn: TrainOn = .last

    @Option(name: .customLong("chat-template-kwargs"),
            help: ArgumentHelp("A JSON object of extra chat-template variables, as apply_chat_template's keyword arguments, e.g. '{\"enable_thinking\": false}'. A row's own chat_template_kwargs win.",
                               valueName: "json"))
    public var chatTemplateKwargs: String?

    public func validate() throws { _ = try format() }

    public func format() throws -> DataFormat {
        var kwargs: [String: JValue] = [:]
        if let text = chatTemplateKwargs {
            guard case .dict(let d)? = try? JValue.parseJSON(Array(text.utf8)) else {
                throw ValidationError("--chat-template-kwargs must be a JSON object, e.g. '{\"enable_thinking\": false}'")
            }
            for (k, v) in d.pairs { kwargs[k] = v }
        }
        return DataFormat(template: template, trainOn: trainOn, templateKwargs: kwargs)
    }
}

/// Options every model-running subcommand shares.
public struct ModelDataOptions: ParsableArguments {
    public init() {}

    @Option(help: "The base model directory (config.json, safetensors, tokenizer.json).")
    public var base: String

    @Option(help: "The deltas written by ila-diff (HDF5).")
    public var deltas: String?

    @Option(help: "Instruction data, JSONL (alpaca, messages, prompt/response or input_ids/labels rows).")
    public var data: String

    @OptionGroup public var dataFormat: DataFormatOptions

    @Option(name: .customLong("seq-len"), help: "Truncate each row to this many tokens.")
    public var seqLen: Int = 256

    @Option(name: .customLong("max-memory"),
            help: "Memory the run may use, e.g. 16G or 12GiB (default: what the machine has available). The micro-batch shrinks to fit; a run that cannot fit is refused before loading.")
    public var maxMemory: String?

    @Option(help: "GEMM library: auto (oneDNN where the CPU has AVX-512, else OpenBLAS), openblas or onednn.")
    public var gemm: GEMMBackend = .auto

    @Option(help: "Inputs of the large GEMMs: float32 (exact against PyTorch) or bf16 (rounded to bfloat16, float32 accumulation; fast where the CPU has bf16 GEMMs).")
    public var precision: GEMMPrecision = .float32

    @Flag(help: "Recompute each block's activations in the backward pass instead of keeping them (less memory, one more forward; chosen by itself when one row does not fit otherwise).")
    public var recompute = false

    @OptionGroup public var pipelineOptions: PipelineOptions
    public var pipeline: Int { pipelineOptions.pipeline }

    public var gemmOptions: GEMMOptions { GEMMOptions(backend: gemm, precision: precision) }

    public var format: DataFormat { (try? dataFormat.format()) ?? DataFormat(template: dataFormat.template, trainOn: dataFormat.trainOn) }

    public func validate() throws {
        try dataFormat.validate()
        if seqLen < 2 { throw ValidationError("--seq-len must be at least 2") }
        if let m = maxMemory, MemoryPlan.parseSize(m) == nil {
            throw ValidationError("--max-memory \(m) is not a size (e.g. 16G, 12GiB, 800M)")
        }
    }

    /// Loads the base model and the deltas (in the store's canonical order) into an engine,
    /// after the memory plan says they fit.
    /// Under `--pipeline`, this rank's stage only.
    public func loadEngine(requireDeltas: Bool, gradient: Bool = false,
                           comm: Communicator = SingleProcess.shared) throws -> (BaseModel, TransformerEngine, DeltaStore?, MemoryPlan) {
        let (model, engine, store, plan) = try loadModelEngine(base: base, deltas: deltas, seqLen: seqLen, maxMemory: maxMemory,
                                                               recompute: recompute, gemm: gemmOptions, requireDeltas: requireDeltas,
                                                               gradient: gradient, comm: comm)
        engine.tokenBudget = pipelineOptions.tokens(planned: engine.tokenBudget)
        return (model, engine, store, plan)
    }
}

/// Loads the base model and the deltas (in the store's canonical order) into an engine, after the
/// memory plan says they fit (ModelDataOptions.loadEngine; also for commands whose --data is optional).
public func loadModelEngine(base: String, deltas: String?, seqLen: Int, maxMemory: String?, recompute: Bool, gemm gemmOptions: GEMMOptions,
                     requireDeltas: Bool, gradient: Bool,
                     comm: Communicator = SingleProcess.shared) throws -> (BaseModel, TransformerEngine, DeltaStore?, MemoryPlan) {
    // A pipeline stage's failure (its own tensors) ends every rank.
    let link = pipelineStage(comm)
    let (model, engine, store, plan) = try onEveryRank(comm) {
        try loadModelEngineHere(base: base, deltas: deltas, seqLen: seqLen, maxMemory: maxMemory, recompute: recompute,
                                gemm: gemmOptions, requireDeltas: requireDeltas, gradient: gradient, pipeline: link)
    }
    try attach(engine, to: link, comm)
    return (model, engine, store, plan)
}

/// The part of the model a pipeline stage holds, or a refusal when there are more stages than blocks.
public func stagePart(_ link: PipelineLink?, base: String) -> ((TransformerSpec) throws -> ModelPart)? {
    guard let link else { return nil }
    return { spec in
        guard link.stages <= spec.blocks else {
            throw ILAError(file: base, "has \(spec.blocks) blocks, fewer than the \(link.stages) pipeline stages of --pipeline \(link.stages)")
        }
        return link.part(of: spec)
    }
}

private func loadModelEngineHere(base: String, deltas: String?, seqLen: Int, maxMemory: String?, recompute: Bool, gemm gemmOptions: GEMMOptions,
                                 requireDeltas: Bool, gradient: Bool,
                                 pipeline link: PipelineLink?) throws -> (BaseModel, TransformerEngine, DeltaStore?, MemoryPlan) {
    if requireDeltas && deltas == nil { throw ILAError("--deltas is required") }
    let store = try deltas.map { try DeltaStore(path: $0) }
    var tokenBudget = 4096
    var memoryPlan: MemoryPlan?
    let partOf = stagePart(link, base: base)
    let model = try BaseModel(path: base, part: partOf) { checkpoint, spec in
        var plan = MemoryPlan(spec: spec, checkpoint: checkpoint, deltas: store, gradient: gradient, part: try partOf?(spec))
        plan.runtime = MemoryPlan.runtimeBytes(gemmOptions.backend)
        tokenBudget = try plan.tokenBudget(maxMemory: maxMemory, rowTokens: seqLen, what: base, forceRecompute: recompute && gradient)
        memoryPlan = plan
    }
    do {
        let engine = try store.map {
            try TransformerEngine(weights: model.weights, store: $0, maxSequenceLength: max(seqLen, 1),
                                  tokenBudget: tokenBudget, gemm: gemmOptions)
        } ?? TransformerEngine(weights: model.weights, deltas: [], maxSequenceLength: max(seqLen, 1),
                               tokenBudget: tokenBudget, gemm: gemmOptions)
        guard let memoryPlan else { throw ILAError(file: base, "memory plan missing") }
        engine.recompute = memoryPlan.recompute
        return (model, engine, store, memoryPlan)
    } catch let e as DeltaLoadError {
        throw e.underlying
    } catch let e as ILAError {
        throw ILAError(file: deltas ?? base, "does not fit base \(base): \(e.message)")
    }
}

extension MemoryPlan {
    /// Plans the micro-batch against `--max-memory` (per rank) or this host's available memory
    /// shared by its ranks; sets `recompute` when one row fits only that way.
    public mutating func tokenBudget(maxMemory: String?, rowTokens: Int, what: String, forceRecompute: Bool) throws -> Int {
        let available = MemoryPlan.available()
        let budget = maxMemory.flatMap(MemoryPlan.parseSize) ?? available.bytes / Collective.localSize
        return try self.budget(budget, rowTokens: rowTokens, source: maxMemory == nil ? available.source : "--max-memory",
                               what: what, forceRecompute: forceRecompute)
    }
}

/// `--json`'s memory report: what the plan said for the micro-batches that ran, and the peak.
public func memoryReport(_ plan: MemoryPlan, _ engine: TransformerEngine, ranks: RankFigures? = nil) -> [String: Any] {
    var o: [String: Any] = ["planned_bytes": plan.total(tokens: engine.largestMicroBatch), "peak_rss_bytes": MemoryPlan.peakResidentBytes(),
                            "recompute": plan.recompute ? 1 : 0]
    for (k, v) in ranks?.report ?? [:] { o[k] = v }
    return o
}

/// Runs the engine over rows in chunks, with a progress bar on a terminal. Under several ranks
/// each runs its contiguous share of the rows (DataParallel.localRows) and the sums are added.
public func evaluateWithProgress(_ engine: TransformerEngine, rows allRows: [TokenizedRow], gamma: [Float], label: String,
                                 comm: Communicator = SingleProcess.shared) throws -> EngineResult {
    // A pipeline fills and drains once a call: longer calls for more stages.
    let chunk = 16 * comm.pipelineStages
    let rows = Array(DataParallel.localRows(allRows, comm))
    let progress = ProgressBar(total: rows.count, label: label)
    var total = EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: [])
    var i = 0
    while i < rows.count {
        let r = try engine.evaluate(rows: Array(rows[i..<min(i + chunk, rows.count)]), gamma: gamma)
        total.nllSum += r.nllSum
        total.tokens += r.tokens
        total.rows += r.rows
        i += chunk
        progress.update(min(i, rows.count), detail: String(format: "nll %.4f", total.meanNLL))
    }
    progress.finish()
    try DataParallel.allreduce(&total, comm)
    return total
}
