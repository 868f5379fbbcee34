import Foundation
import ILABLAS
import ILADiff
import ILAModel

/// A layer's update as the engine applies it: W = W0 + γ·Δ.
enum MaskedUpdate {
    /// Δ row-major [out, in] (float32, or float16 as ila-diff --dtype f16 stored it); W0 + γΔ is
    /// formed tile by tile as the GEMMs use it.
    case full(delta: WeightMatrix)
    /// Δ = scale · B·A, A [r, in], B [out, r]; never materialised.
    case lora(a: FloatBuffer, b: FloatBuffer, rank: Int, scale: Float)
    /// A layer of a block another pipeline stage runs (not loaded here).
    case elsewhere

    /// A delta file's layer; a dense Δ whose values are float16 already (`half`) stays float16.
    init(delta d: LayerDelta, half: Bool) {
        switch d.payload {
        case .full(let delta):
            self = .full(delta: half
                ? WeightMatrix(halfBits: delta.map { Float16($0).bitPattern }, precision: .float16, rows: d.outFeatures, cols: d.inFeatures)
                : WeightMatrix(float32: delta, rows: d.outFeatures, cols: d.inFeatures))
        case .factors(let a, let b, let r, let scale):
            self = .lora(a: FloatBuffer(a), b: FloatBuffer(b), rank: r, scale: scale)
        }
    }

    var outFeatures: Int {
        switch self {
        case .full(let d): return d.rows
        case .lora(_, let b, let r, _): return r > 0 ? b.count / r : 0
        case .elsewhere: return 0
        }
    }

    var inFeatures: Int {
        switch self {
        case .full(let d): return d.cols
        case .lora(let a, _, let r, _): return r > 0 ? a.count / r : 0
        case .elsewhere: return 0
        }
    }
}

/// Activations of one micro-batch, sized up front for `capacity` tokens (llm.c style). With
/// `keepForBackward` every block keeps its own; otherwise one set is reused by all blocks. With
/// `recompute` (activation checkpointing) only each block's input is kept, and the backward pass
/// recomputes one block's activations at a time into the single set.
final class Activations {
    let capacity: Int
    /// Per block: the residual stream entering it [T, H].
    var xIn: [FloatBuffer]
    var rstd1: [FloatBuffer]
    /// Attention norm output [T, H].
    var xn1: [FloatBuffer]
    /// Packed projections [T, q | k | v] as the linear layers wrote them.
    var qkv: [FloatBuffer]
    /// q | k after the q/k norms and RoPE [T, qDim + kvDim]: what attention reads.
    var qk: [FloatBuffer]
    /// rstd of the q/k norms [T, heads + kvHeads] (Qwen3, Gemma 3).
    var qkRstd: [FloatBuffer]
    /// Attention output [T, qDim].
    var att: [FloatBuffer]
    /// o_proj / down_proj outputs before their sandwich norms [T, H], and those norms' rstd.
    var attnProj: [FloatBuffer], rstdAttnProj: [FloatBuffer]
    var mlpProj: [FloatBuffer], rstdMlpProj: [FloatBuffer]
    var xMid: [FloatBuffer]
    var rstd2: [FloatBuffer]
    var xn2: [FloatBuffer]
    /// [T, gate | up] and the MLP hidden state [T, I].
    var gateUp: [FloatBuffer], h: [FloatBuffer]
    /// u = x·Aᵀ [T, r] of LoRA layers, by γ index (for the current block only without backward).
    var loraU: [Int: FloatBuffer]
    /// Sandwich-normed projection scratch [T, H].
    let normed: FloatBuffer
    /// Bytes allocated.
    var bytes: Int {
        let lists = [xIn, rstd1, xn1, qkv, qk, qkRstd, att, attnProj, rstdAttnProj, mlpProj, rstdMlpProj, xMid, rstd2, xn2, gateUp, h]
        return 4 * (lists.joined().map(\.count).reduce(0, +) + loraU.values.map(\.count).reduce(0, +)
                    + normed.count + xOut.count + rstdF.count + xnF.count + dRes.count)
    }
    /// Final residual [T, H], its rstd [T] and normalised output [T, H] (the last stage's).
    let xOut: FloatBuffer, rstdF: FloatBuffer, xnF: FloatBuffer
    /// d Σ NLL / d(residual stream) [T, H], carried down the blocks in the backward pass.
    let dRes: FloatBuffer

    /// For the blocks of `part` (the whole model, or a pipeline stage's; the other blocks' entries are empty).
    init(spec c: TransformerSpec, capacity T: Int, loraRanks: [Int: Int], keepForBackward: Bool, recompute: Bool = false,
         part: ModelPart) {
        capacity = T
        let kept = keepForBackward && !recompute
        // Per block when kept (empty outside the part), else one set for every block.
        func make(_ n: Int, _ on: Bool = true, kept: Bool = kept, extra: Int? = nil) -> [FloatBuffer] {
            guard on else { return [] }
            guard kept else { return [FloatBuffer(T * n)] }
            return (0..<c.blocks).map { b in FloatBuffer(part.blocks.contains(b) || b == extra ? T * n : 0) }
        }
        let I = c.intermediateSize, H = c.hiddenSize
        // xIn also holds the stage's output: the next stage's input.
        xIn = make(H, kept: keepForBackward, extra: part.blocks.upperBound); rstd1 = make(1); xn1 = make(H)
        qkv = make(c.qkvDim); qk = make(c.qDim + c.kvDim); qkRstd = make(c.heads + c.kvHeads, c.qkNorm)
        att = make(c.qDim)
        attnProj = make(H, c.sandwichNorms); rstdAttnProj = make(1, c.sandwichNorms)
        mlpProj = make(H, c.sandwichNorms); rstdMlpProj = make(1, c.sandwichNorms)
        xMid = make(H); rstd2 = make(1); xn2 = make(H)
        gateUp = make(2 * I); h = make(I)
        loraU = [:]
        for (i, r) in loraRanks { loraU[i] = FloatBuffer(T * r) }
        normed = FloatBuffer(c.sandwichNorms ? T * H : 0)
        let head = part.head ? T : 0
        xOut = FloatBuffer(head * H); rstdF = FloatBuffer(head); xnF = FloatBuffer(head * H)
        dRes = FloatBuffer(keepForBackward ? T * H : 0)
    }

    /// Bytes per token of the activations (every block's of `part` with `keepForBackward`, else one
    /// block's) plus, for the backward pass, the gradient scratch.
    static func bytesPerToken(_ c: TransformerSpec, keepForBackward: Bool = true, recompute: Bool = false,
                              part: ModelPart? = nil) -> Int {
        let part = part ?? .whole(c)
        let blocks = part.blocks.count
        let H = c.hiddenSize, I = c.intermediateSize
        // Per block, besides its input xIn [T, H].
        var perBlock = 3 * H + 2 + c.qkvDim + c.qDim + c.kvDim + c.qDim + 3 * I
        if c.qkNorm { perBlock += c.heads + c.kvHeads }
        if c.sandwichNorms { perBlock += 2 * H + 2 }
        let kept = keepForBackward && !recompute ? blocks : 1
        // Block inputs (and a stage's output), the final norm's (last stage), normed scratch.
        var floats = perBlock * kept + H * (keepForBackward ? blocks + (part.head ? 0 : 1) : 1)
            + (part.head ? 4 * H : 2 * H) + (c.sandwichNorms ? H : 0)
        if keepForBackward { floats += 4 * H + c.qkvDim + c.qDim + c.kvDim + c.qDim + 3 * I }
        return 4 * floats
    }
}

/// Reading a layer from the deltas file failed (as opposed to the deltas not fitting the model).
public struct DeltaLoadError: Error {
    public let underlying: Error
}

/// The result of running the model on some rows.
public struct EngineResult: Sendable {
    /// Σ NLL over every response token (natural log).
    public var nllSum: Double
    /// Number of response tokens.
    public var tokens: Int
    /// Rows processed.
    public var rows: Int
    /// d(Σ NLL)/dγ_i per masked layer (empty without gradient).
    public var dNllSumDGamma: [Double]
    public var meanNLL: Double { tokens > 0 ? nllSum / Double(tokens) : .nan }

    public init(nllSum: Double, tokens: Int, rows: Int, dNllSumDGamma: [Double]) {
        self.nllSum = nllSum
        self.tokens = tokens
        self.rows = rows
        self.dNllSumDGamma = dNllSumDGamma
    }
}

/// A decoder-only transformer described by a TransformerSpec, in Float32 on OpenBLAS, whose
/// linear layers are W0 + γ_i·Δ_i, with the gradient of the response-token NLL with respect
/// to every γ_i. One engine for every architecture: the spec says what differs.
public final class TransformerEngine: @unchecked Sendable {
    public let spec: TransformerSpec
    public let weights: ModelWeights
    /// The masked layers in γ order (the order of the deltas given).
    public let maskedLayers: [LinearLayer]
    /// block → kind → γ index
    private let slot: [[LayerKind: Int]]
    private var updates: [MaskedUpdate]
    private var currentGamma: [Float]
    /// Per block: tables for the rope types whose tables do not depend on the row.
    private let fixedRope: [RopeTables?]
    public let maxSequenceLength: Int
    /// Every GEMM goes through here; it holds the scratch bf16/f16 weights (and W0 + γΔ) are
    /// widened into, tile by tile.
    private let gemm: GEMMSeam
    /// The GEMM backend and precision.
    public var gemmOptions: GEMMOptions { gemm.options }
    /// Upper bound of tokens per micro-batch (a row longer than this still runs, alone).
    public var tokenBudget: Int
    /// The most tokens one micro-batch has held so far (what the activations were sized for).
    public private(set) var largestMicroBatch = 0
    /// Bytes the masked updates are held in (dense Δ at its stored precision, LoRA factors float32).
    public var deltaBytes: Int {
        updates.map { u in
            switch u {
            case .full(let d): return d.bytes
            case .lora(let a, let b, _, _): return 4 * (a.count + b.count)
            case .elsewhere: return 0
            }
        }.reduce(0, +)
    }
    /// Bytes of the largest activation set allocated so far.
    public private(set) var activationBytesAllocated = 0

    /// The LoRA tensors being trained (ila-tune): masked layer i is `trainable.layers[i]`, its
    /// factors are read from the table in place, and `gradient` adds dΣNLL/dA, dΣNLL/dB into
    /// the table's gradients (which the caller zeroes).
    public let trainable: LoRAParameters?

    /// Activation checkpointing: the backward pass keeps only each block's input and recomputes
    /// the block's activations (one more forward, a block's activations instead of all of them).
    public var recompute = false

    /// Sees each block's residual streams in forward passes (see HiddenStates.swift).
    var hiddenStateHook: HiddenStateHook?

    /// This engine's neighbours when it is one stage of a pipeline (its weights are that stage's
    /// part); nil when it runs the whole model.
    public var pipeline: PipelineLink?

    /// Whether this engine's results carry the NLL, tokens and rows (the last stage's do).
    public var reportsLoss: Bool { weights.part.head }

    /// Bytes of activations kept per token for the backward pass, over all blocks (with
    /// `recompute`, every block's input and one block's activations).
    public static func activationBytesPerToken(_ c: TransformerSpec, gradient: Bool = true, recompute: Bool = false,
                                               part: ModelPart? = nil) -> Int {
        Activations.bytesPerToken(c, keepForBackward: gradient, recompute: recompute, part: part)
    }

    /// Bytes of the logits chunk and its row copies (512 loss positions at a time).
    public static func logitsBytes(_ c: TransformerSpec) -> Int { 4 * 512 * (c.vocabSize + 2 * c.hiddenSize) }

    /// Bytes of the widening tile scratch.
    public static let tileBytes = 4 << 22

    /// - Parameters:
    ///   - tokenBudget: tokens per micro-batch; by default as many as fit in `activationMemory`
    ///     bytes (at most 4096), so a large model runs a row at a time.
    ///   - tileFloats: floats of the scratch that bf16/f16 weights and W0 + γΔ are widened into,
    ///     a tile of rows at a time (default 4 M; at least one row of the widest matrix).
    ///   - gemm: the GEMM backend and the precision of the large GEMMs' inputs.
    public convenience init(weights: ModelWeights, deltas: [LayerDelta], maxSequenceLength: Int = 4096, tokenBudget: Int? = nil,
                            activationMemory: Int = 2 << 30, tileFloats: Int = 1 << 22, gemm: GEMMOptions = GEMMOptions()) throws {
        try self.init(weights: weights, layers: deltas.map(\.layer), load: { i, _ in MaskedUpdate(delta: deltas[i], half: false) },
                      maxSequenceLength: maxSequenceLength, tokenBudget: tokenBudget, activationMemory: activationMemory,
                      tileFloats: tileFloats, gemm: gemm)
    }

    /// The engine for LoRA training: every layer of `parameters` is adapted with its factors
    /// (read in place, so an optimizer step on the table is seen by the next run), γ = 1.
    public convenience init(weights: ModelWeights, training parameters: LoRAParameters, maxSequenceLength: Int = 4096,
                            tokenBudget: Int? = nil, activationMemory: Int = 2 << 30, tileFloats: Int = 1 << 22,
                            gemm: GEMMOptions = GEMMOptions()) throws {
        for l in parameters.layers where l.rank < 1 { throw ILAError("LoRA layer \(l.layer.name): rank \(l.rank) must be at least 1") }
        try self.init(weights: weights, layers: parameters.layers.map(\.layer), load: { i, _ in
            .lora(a: parameters.a(i), b: parameters.b(i), rank: parameters.layers[i].rank, scale: parameters.layers[i].scale)
        }, trainable: parameters, maxSequenceLength: maxSequenceLength, tokenBudget: tokenBudget,
                      activationMemory: activationMemory, tileFloats: tileFloats, gemm: gemm)
    }

    /// The engine with the deltas of a store (in its canonical order), loaded one layer at a time
    /// so that only one layer's decoded copy exists besides what the engine holds; dense float16
    /// deltas stay float16.
    public convenience init(weights: ModelWeights, store: DeltaStore, maxSequenceLength: Int = 4096, tokenBudget: Int? = nil,
                            activationMemory: Int = 2 << 30, tileFloats: Int = 1 << 22, gemm: GEMMOptions = GEMMOptions()) throws {
        try self.init(weights: weights, layers: store.layers, load: { _, layer in
            do { return MaskedUpdate(delta: try store.delta(layer), half: store.layerInfo(layer)?.dtype == "float16") }
            catch { throw DeltaLoadError(underlying: error) }
        }, maxSequenceLength: maxSequenceLength, tokenBudget: tokenBudget, activationMemory: activationMemory,
                      tileFloats: tileFloats, gemm: gemm)
    }

    /// `load(i, layer)` gives layer i's update (`MaskedUpdate(delta:half:)` for a delta file's layers).
    init(weights: ModelWeights, layers: [LinearLayer], load: (Int, LinearLayer) throws -> MaskedUpdate,
         trainable: LoRAParameters? = nil,
         maxSequenceLength: Int, tokenBudget: Int?, activationMemory: Int, tileFloats: Int, gemm: GEMMOptions) throws {
        spec = weights.spec
        self.weights = weights
        self.trainable = trainable
        // The engine splits work across cores itself; OpenBLAS threads would spin against it.
        BLAS.threads = 1
        self.tokenBudget = tokenBudget ?? max(1, min(4096, activationMemory / Self.activationBytesPerToken(weights.spec)))
        self.maxSequenceLength = maxSequenceLength
        var slot = [[LayerKind: Int]](repeating: [:], count: spec.blocks)
        var updates: [MaskedUpdate] = []
        for (i, l) in layers.enumerated() {
            guard l.block < spec.blocks else {
                throw ILAError("delta \(l.name): block \(l.block) but the model has \(spec.blocks) blocks")
            }
            // Another pipeline stage's layer: that stage loads and checks it.
            let u = weights.part.blocks.contains(l.block) ? try load(i, l) : .elsewhere
            guard let s = spec.shape(of: l.kind), spec.layerName(block: l.block, kind: l.kind) == l.name else {
                let expected = spec.layerName(block: l.block, kind: l.kind).map { " (the model's layer is \($0))" } ?? ""
                throw ILAError("delta \(l.name): \(spec.architecture) has no such linear layer\(expected); its kinds are \(spec.kinds.map(\.rawValue).joined(separator: " "))")
            }
            if case .elsewhere = u {} else if u.outFeatures != s.out || u.inFeatures != s.in {
                throw ILAError("delta \(l.name): shape [\(u.outFeatures), \(u.inFeatures)] but the model's layer is [\(s.out), \(s.in)]")
            }
            guard slot[l.block][l.kind] == nil else { throw ILAError("delta \(l.name) given twice") }
            slot[l.block][l.kind] = i
            updates.append(u)
        }
        self.slot = slot
        self.updates = updates
        // 4 M floats (16 MiB) of rows at a time, at least one row of the widest matrix.
        let widest = max(spec.hiddenSize, spec.linears.map(\.inFeatures).max() ?? 0)
        let allFloat32 = weights.embed.float32 != nil && weights.lmHead.float32 != nil
            && weights.blocks.allSatisfy { $0.linear.values.allSatisfy { $0.float32 != nil } }
        let hasFull = updates.contains { if case .full = $0 { return true } else { return false } }
        self.gemm = GEMMSeam(gemm, tileFloats: allFloat32 && !hasFull ? 0 : max(widest, tileFloats))
        maskedLayers = layers
        currentGamma = [Float](repeating: 0, count: layers.count)
        // One table per distinct rope, shared by the blocks that use it.
        var cache: [RotaryEmbedding: RopeTables] = [:]
        fixedRope = spec.layers.map { layer in
            guard !layer.rope.dependsOnLength else { return nil }
            if let t = cache[layer.rope] { return t }
            let t = layer.rope.tables(positions: maxSequenceLength)
            cache[layer.rope] = t
            return t
        }
    }

    // MARK: public API

    /// Σ NLL and token count of the rows under mask γ (one entry per masked layer).
    public func evaluate(rows: [TokenizedRow], gamma: [Float]) throws -> EngineResult {
        try run(rows: rows, gamma: gamma, gradient: false)
    }

    /// Σ NLL, token count and d(Σ NLL)/dγ of the rows under mask γ.
    public func gradient(rows: [TokenizedRow], gamma: [Float]) throws -> EngineResult {
        try run(rows: rows, gamma: gamma, gradient: true)
    }

    // MARK: driver

    func run(rows: [TokenizedRow], gamma: [Float], gradient: Bool) throws -> EngineResult {
        guard gamma.count == maskedLayers.count else {
            throw ILAError("mask has \(gamma.count) entries but \(maskedLayers.count) layers are masked")
        }
        for (n, r) in rows.enumerated() {
            guard r.ids.count == r.labels.count else { throw ILAError("row \(n): ids and labels differ in length") }
            guard r.ids.count <= maxSequenceLength else {
                throw ILAError("row \(n): \(r.ids.count) tokens exceed the engine's maximum sequence length \(maxSequenceLength)")
            }
            for t in r.ids where t < 0 || t >= spec.vocabSize {
                throw ILAError("row \(n): token id \(t) is outside the vocabulary of \(spec.vocabSize)")
            }
            for t in r.labels where t != -100 && (t < 0 || t >= spec.vocabSize) {
                throw ILAError("row \(n): label \(t) is outside the vocabulary of \(spec.vocabSize)")
            }
        }
        setGamma(gamma)
        if let pipeline { return try runPipelined(rows: rows, gradient: gradient, pipeline) }
        var result = EngineResult(nllSum: 0, tokens: 0, rows: rows.count,
                                  dNllSumDGamma: gradient ? [Double](repeating: 0, count: gamma.count) : [])
        var acts: Activations?
        for range in Self.microBatches(rows, tokens: tokenBudget) {
            let batch = Array(rows[range])
            let tokens = batch.map(\.ids.count).reduce(0, +)
            largestMicroBatch = max(largestMicroBatch, tokens)
            if acts == nil || acts!.capacity < tokens {
                acts = Activations(spec: spec, capacity: max(tokens, min(tokenBudget, rows.map(\.ids.count).reduce(0, +))),
                                   loraRanks: loraRanks, keepForBackward: gradient, recompute: recompute, part: weights.part)
                activationBytesAllocated = max(activationBytesAllocated, acts!.bytes)
            }
            let r = try microBatch(batch, acts!, gradient: gradient)
            result.nllSum += r.nllSum
            result.tokens += r.tokens
            if gradient { for i in 0..<gamma.count { result.dNllSumDGamma[i] += r.dNllSumDGamma[i] } }
        }
        return result
    }

    /// A pipeline stage's run (DESIGN.md section 12): every stage of the pipeline gets the same
    /// rows. They are cut into micro-batches of whole rows of at most tokenBudget / 2P tokens,
    /// streamed through the stages in rounds of 2P (GPipe: a round's forwards, then its backwards
    /// in reverse), so that the stages work on different micro-batches at once and a round's kept
    /// activations fit the token budget. The last stage reports Σ NLL, tokens and rows (the others
    /// 0); each stage reports dγ of its own layers: the job's allreduce adds them up.
    private func runPipelined(rows: [TokenizedRow], gradient: Bool, _ link: PipelineLink) throws -> EngineResult {
        let P = link.stages
        let batches = Self.microBatches(rows, tokens: max(1, tokenBudget / (2 * P))).map { RowLayout(Array(rows[$0])) }
        var result = EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: gradient ? [Double](repeating: 0, count: updates.count) : [])
        func add(_ r: EngineResult) { result.nllSum += r.nllSum; result.tokens += r.tokens; result.rows += r.rows }
        let largest = batches.map(\.T).max() ?? 0
        largestMicroBatch = max(largestMicroBatch, largest)
        func activations(_ tokens: Int) -> Activations {
            Activations(spec: spec, capacity: tokens, loraRanks: loraRanks, keepForBackward: gradient, recompute: recompute,
                        part: weights.part)
        }
        if !gradient {
            let acts = activations(largest)
            activationBytesAllocated = max(activationBytesAllocated, acts.bytes)
            for m in batches { add(try forward(m, acts, gradient: false, scratch: nil)) }
        } else {
            let scratch = makeScratch(tokens: largest)
            var pool: [Activations] = []
            for first in stride(from: 0, to: batches.count, by: 2 * P) {
                let round = Array(batches[first..<min(first + 2 * P, batches.count)])
                for (k, m) in round.enumerated() where k >= pool.count || pool[k].capacity < m.T {
                    if k < pool.count { pool[k] = activations(m.T) } else { pool.append(activations(m.T)) }
                }
                activationBytesAllocated = max(activationBytesAllocated, pool.map(\.bytes).reduce(0, +))
                for (k, m) in round.enumerated() { add(try forward(m, pool[k], gradient: true, scratch: scratch)) }
                for (k, m) in round.enumerated().reversed() {
                    let d = try backward(m, pool[k], scratch: scratch)
                    for i in d.indices { result.dNllSumDGamma[i] += d[i] }
                }
            }
        }
        try link.finish()
        return result
    }

    /// Consecutive runs of whole rows of at most `tokens` tokens each (a longer row alone).
    static func microBatches(_ rows: [TokenizedRow], tokens budget: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0
        while start < rows.count {
            var end = start, tokens = 0
            while end < rows.count && (end == start || tokens + rows[end].ids.count <= budget) {
                tokens += rows[end].ids.count
                end += 1
            }
            out.append(start..<end)
            start = end
        }
        return out
    }

    private var loraRanks: [Int: Int] {
        var out: [Int: Int] = [:]
        for (i, u) in updates.enumerated() { if case .lora(_, _, let r, _) = u { out[i] = r } }
        return out
    }

    private func setGamma(_ gamma: [Float]) { currentGamma = gamma }

    private func ropeTables(block: Int, length: Int) -> RopeTables {
        fixedRope[block] ?? spec.layers[block].rope.tables(positions: length, length: length)
    }

    // MARK: masked linear layers

    /// The weight used for x·Wᵀ: W0 + γΔ for full deltas, W0 otherwise.
    private func weight(_ block: Int, _ kind: LayerKind) -> EffectiveWeight {
        let w0 = weights.blocks[block].linear[kind]!
        if let i = slot[block][kind], case .full(let delta) = updates[i], currentGamma[i] != 0 {
            return EffectiveWeight(w: w0, delta: delta, gamma: currentGamma[i])
        }
        return EffectiveWeight(w: w0, delta: nil, gamma: 0)
    }

    /// out [T, O] (row stride ldOut) = x·(W0 + γΔ)ᵀ (+ bias), added to out with `accumulate`;
    /// keeps u = x·Aᵀ of LoRA layers for backward.
    private func maskedForward(_ out: FPtr, ldOut: Int, _ x: CPtr, block: Int, _ l: LinearSpec, T: Int,
                               acts: Activations, gradient: Bool, accumulate: Bool = false) {
        gemm.linearForward(out, ldOut: ldOut, x, weight(block, l.kind), weights.blocks[block].bias[l.kind]?.p,
                           T: T, accumulate: accumulate)
        guard let i = slot[block][l.kind], case .lora(let a, let b, let r, let scale) = updates[i] else { return }
        let g = currentGamma[i]
        if g == 0 && !gradient { return }
        let u = acts.loraU[i]!
        // The rank-r factor GEMMs (a few percent of the FLOPs) stay float32 in either precision.
        gemm.gemm(transB: true, m: T, n: r, k: l.inFeatures, x, a.p, u.p)
        if g != 0 { gemm.gemm(transB: true, m: T, n: l.outFeatures, k: r, alpha: g * scale, u.p, b.p, beta: 1, out, ldc: ldOut) }
    }

    /// Given dY [T, O] (row stride ldOut) and the layer input x [T, I]: dx [T, I] += dY·W_eff,
    /// dγ += ⟨dY, x·Δᵀ⟩.
    private func maskedBackward(_ dx: FPtr, _ dy: CPtr, ldOut: Int, _ x: CPtr, block: Int, _ l: LinearSpec, T: Int,
                                acts: Activations, scratch: Scratch, dGamma: inout [Double]) {
        let O = l.outFeatures, I = l.inFeatures
        gemm.linearBackwardInput(dx, dy, ldOut: ldOut, weight(block, l.kind), T: T)
        guard let i = slot[block][l.kind] else { return }
        switch updates[i] {
        case .full(let delta):
            // dW = dYᵀ·x [O, I]; dγ = ⟨Δ, dW⟩
            let dW = scratch.weightGrad
            gemm.gemmAtPrecision(transA: true, m: O, n: I, k: T, dy, lda: ldOut, x, dW.p)
            dGamma[i] += delta.dot(UnsafePointer(dW.p))
        case .elsewhere:
            break
        case .lora(let a, let b, let r, let scale):
            // v = dY·B [T, r]; dγ = scale·Σ v∘u; dx += γ·scale·v·A
            let v = scratch.loraV
            gemm.gemm(m: T, n: r, k: O, dy, lda: ldOut, b.p, v.p)
            let u = acts.loraU[i]!
            dGamma[i] += Double(scale) * Double(BLAS.dot(T * r, v.p, u.p))
            let g = currentGamma[i]
            if g != 0 { gemm.gemm(m: T, n: I, k: r, alpha: g * scale, v.p, a.p, beta: 1, dx) }
            if let trainable, g != 0 {
                // dB [O, r] += γ·scale·dYᵀ·u; dA [r, I] += γ·scale·vᵀ·x
                gemm.gemm(transA: true, m: O, n: r, k: T, alpha: g * scale, dy, lda: ldOut, u.p, beta: 1, trainable.gradB(i).p)
                gemm.gemm(transA: true, m: r, n: I, k: T, alpha: g * scale, v.p, x, beta: 1, trainable.gradA(i).p)
            }
        }
    }

    /// Runs every linear of a stage: out packed with row stride ldOut.
    private func stageForward(_ stage: LinearStage, _ out: FPtr, ldOut: Int, _ x: CPtr, block: Int, T: Int,
                              acts: Activations, gradient: Bool, accumulate: Bool = false) {
        for l in spec.linears where l.stage == stage {
            maskedForward(out + l.outputOffset, ldOut: ldOut, x, block: block, l, T: T, acts: acts, gradient: gradient,
                          accumulate: accumulate)
        }
    }

    private func stageBackward(_ stage: LinearStage, _ dx: FPtr, _ dy: CPtr, ldOut: Int, _ x: CPtr, block: Int, T: Int,
                               acts: Activations, scratch: Scratch, dGamma: inout [Double]) {
        for l in spec.linears where l.stage == stage {
            maskedBackward(dx, dy + l.outputOffset, ldOut: ldOut, x, block: block, l, T: T, acts: acts, scratch: scratch, dGamma: &dGamma)
        }
    }

    /// Backward-only scratch buffers.
    final class Scratch {
        let weightGrad: FloatBuffer
        let loraV: FloatBuffer
        let dx: FloatBuffer, dxn: FloatBuffer, dProj: FloatBuffer
        let dqkv: FloatBuffer, dqk: FloatBuffer, datt: FloatBuffer
        let dGateUp: FloatBuffer, dh: FloatBuffer
        init(spec c: TransformerSpec, T: Int, maxWeight: Int, maxRank: Int) {
            let H = c.hiddenSize, I = c.intermediateSize
            weightGrad = FloatBuffer(maxWeight)
            loraV = FloatBuffer(T * maxRank)
            dx = FloatBuffer(T * H); dxn = FloatBuffer(T * H)
            dProj = FloatBuffer(c.sandwichNorms ? T * H : 0)
            dqkv = FloatBuffer(T * c.qkvDim); dqk = FloatBuffer(T * (c.qDim + c.kvDim)); datt = FloatBuffer(T * c.qDim)
            dGateUp = FloatBuffer(T * 2 * I); dh = FloatBuffer(T * I)
        }
    }

    // MARK: one micro-batch

    /// Where a micro-batch's rows lie in its [T, ·] buffers (the rows' tokens are consecutive).
    struct RowLayout {
        let rows: [TokenizedRow]
        let T: Int
        /// Row r's tokens are [rowStart[r], rowStart[r + 1]).
        let rowStart: [Int]
        let maxL: Int
        init(_ rows: [TokenizedRow]) {
            self.rows = rows
            rowStart = rows.reduce(into: [0]) { $0.append($0.last! + $1.ids.count) }
            T = rowStart.last!
            maxL = rows.map(\.ids.count).max() ?? 0
        }
    }

    /// One micro-batch, forward and (with `gradient`) backward.
    private func microBatch(_ rows: [TokenizedRow], _ acts: Activations, gradient: Bool) throws -> EngineResult {
        let m = RowLayout(rows)
        let scratch = gradient ? makeScratch(tokens: m.T) : nil
        var result = try forward(m, acts, gradient: gradient, scratch: scratch)
        if let scratch { result.dNllSumDGamma = try backward(m, acts, scratch: scratch) }
        return result
    }

    /// Attention over a row of L tokens in block b: q | k packed in qk, v in qkv.
    private func attentionRow(_ L: Int, _ b: Int) -> AttentionRow {
        let c = spec, qkDim = c.qDim + c.kvDim
        return AttentionRow(L: L, headDim: c.headDim, qStride: qkDim, kStride: qkDim, vStride: c.qkvDim, outStride: c.qDim,
                            scale: c.attentionScale, softcap: c.attentionSoftcap, window: c.layers[b].slidingWindow)
    }

    private func makeScratch(tokens: Int) -> Scratch {
        Scratch(spec: spec, T: tokens, maxWeight: maxWeightSize, maxRank: loraRanks.values.max() ?? 0)
    }

    /// One block's forward: its input is xIn[b] (or the one xIn without backward), its
    /// activations go to slot s, its output to the next block's input (or xOut).
    private func blockForward(_ b: Int, slot s: Int, _ m: RowLayout, _ acts: Activations, gradient: Bool) {
        let c = spec
        let H = c.hiddenSize, I = c.intermediateSize, T = m.T
        let hd = c.headDim, qDim = c.qDim, kvDim = c.kvDim, qkvDim = c.qkvDim, qkDim = qDim + kvDim
        let nq = c.heads, nkv = c.kvHeads, group = nq / nkv
        let eps = c.normEps
        let rows = m.rows, rowStart = m.rowStart, maxL = m.maxL
        let capped = c.attentionSoftcap != nil, attn = attentionRow
            let xIn = acts.xIn[gradient ? b : 0], xn1 = acts.xn1[s], qkv = acts.qkv[s], qk = acts.qk[s]
            let att = acts.att[s], xMid = acts.xMid[s], xn2 = acts.xn2[s], gateUp = acts.gateUp[s], h = acts.h[s]
            let bw = weights.blocks[b]
            if !gradient { hiddenStateHook?(.blockInput(b), rows, xIn.p) }
            rmsnormForward(xn1.p, acts.rstd1[s].p, xIn.p, bw.inputNorm.p, T: T, H: H, eps: eps)
            stageForward(.qkv, qkv.p, ldOut: qkvDim, xn1.p, block: b, T: T, acts: acts, gradient: gradient)
            let qkRstd = c.qkNorm ? acts.qkRstd[s].p : nil
            parallelFor(rows.count) { range in
                let probs = FloatBuffer(maxL * maxL), caps = FloatBuffer(capped ? maxL * maxL : 0)
                for r in range {
                    let t0 = rowStart[r], L = rows[r].ids.count
                    let src = qkv.p + t0 * qkvDim, dst = qk.p + t0 * qkDim
                    if let qkRstd, let qn = bw.qNorm, let kn = bw.kNorm {
                        // rstd [L, nq + nkv]: the q heads', then the k heads'.
                        let rs = qkRstd + t0 * (nq + nkv)
                        for t in 0..<L {
                            for hh in 0..<nq {
                                rmsnormRow(dst + t * qkDim + hh * hd, &rs[t * (nq + nkv) + hh],
                                           src + t * qkvDim + hh * hd, qn.p, n: hd, eps: eps)
                            }
                            for hh in 0..<nkv {
                                rmsnormRow(dst + t * qkDim + qDim + hh * hd, &rs[t * (nq + nkv) + nq + hh],
                                           src + t * qkvDim + qDim + hh * hd, kn.p, n: hd, eps: eps)
                            }
                        }
                    } else {
                        for t in 0..<L { (dst + t * qkDim).update(from: src + t * qkvDim, count: qkDim) }
                    }
                    ropeApply(dst, L: L, stride: qkDim, heads: nq + nkv, ropeTables(block: b, length: L))
                    let a = attn(L, b)
                    for hh in 0..<nq {
                        let g = hh / group
                        attentionForward(att.p + t0 * qDim + hh * hd, probs.p, capped ? caps.p : nil,
                                         dst + hh * hd, dst + qDim + g * hd, src + qDim + kvDim + g * hd, a)
                    }
                }
            }
            // Attention projection and residual.
            if c.sandwichNorms, let on = bw.attentionOutNorm {
                let proj = acts.attnProj[s]
                stageForward(.attentionOut, proj.p, ldOut: H, att.p, block: b, T: T, acts: acts, gradient: gradient)
                rmsnormForward(acts.normed.p, acts.rstdAttnProj[s].p, proj.p, on.p, T: T, H: H, eps: eps)
                xMid.p.update(from: xIn.p, count: T * H)
                addInPlace(xMid.p, acts.normed.p, T * H)
            } else {
                stageForward(.attentionOut, xMid.p, ldOut: H, att.p, block: b, T: T, acts: acts, gradient: gradient)
                addInPlace(xMid.p, xIn.p, T * H)
            }
            // MLP.
            if !gradient { hiddenStateHook?(.afterAttention(b), rows, xMid.p) }
            rmsnormForward(xn2.p, acts.rstd2[s].p, xMid.p, bw.mlpNorm.p, T: T, H: H, eps: eps)
            stageForward(.gateUp, gateUp.p, ldOut: 2 * I, xn2.p, block: b, T: T, acts: acts, gradient: gradient)
            gatedForward(h.p, gateUp.p, T: T, I: I, c.activation)
            let next = b + 1 < c.blocks ? acts.xIn[gradient ? b + 1 : 0] : acts.xOut
            if c.sandwichNorms, let on = bw.mlpOutNorm {
                let proj = acts.mlpProj[s]
                stageForward(.mlpOut, proj.p, ldOut: H, h.p, block: b, T: T, acts: acts, gradient: gradient)
                rmsnormForward(acts.normed.p, acts.rstdMlpProj[s].p, proj.p, on.p, T: T, H: H, eps: eps)
                next.p.update(from: xMid.p, count: T * H)
                addInPlace(next.p, acts.normed.p, T * H)
            } else {
                stageForward(.mlpOut, next.p, ldOut: H, h.p, block: b, T: T, acts: acts, gradient: gradient)
                addInPlace(next.p, xMid.p, T * H)
            }
    }

    /// The forward pass of a micro-batch over this engine's blocks: from the embedding (or, in a
    /// pipeline, the previous stage's output) through the blocks to the final norm and the loss
    /// (or the next stage). With `gradient`, d Σ NLL / d(the last block's output) goes to acts.dRes.
    private func forward(_ m: RowLayout, _ acts: Activations, gradient: Bool, scratch: Scratch?) throws -> EngineResult {
        let c = spec, H = c.hiddenSize, T = m.T, eps = c.normEps
        let rows = m.rows, rowStart = m.rowStart
        let part = weights.part
        let x0 = acts.xIn[gradient ? part.blocks.lowerBound : 0]
        if part.embedding {
            // Embedding (× √hidden for Gemma).
            for (t, id) in rows.flatMap(\.ids).enumerated() {
                let dst = x0.p + t * H
                weights.embed.widen(rows: id..<(id + 1), into: dst)
                if let s = c.embeddingScale { for i in 0..<H { dst[i] *= s } }
            }
        } else if let pipeline {
            try pipeline.receive(x0.p, count: T * H, from: pipeline.previous, tag: PipelineLink.activationTag)
        }
        let recompute = gradient && self.recompute
        for b in part.blocks {
            blockForward(b, slot: gradient && !recompute ? b : 0, m, acts, gradient: gradient)
            pipeline?.progress()
        }
        guard part.head else {
            // This stage's output is the next stage's input (the stage after the last block).
            let out = acts.xIn[gradient ? part.blocks.upperBound : 0]
            if let pipeline { try pipeline.send(out.p, count: T * H, to: pipeline.next, tag: PipelineLink.activationTag) }
            return EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: [])
        }
        if let scratch { scratch.dx.zero() }
        rmsnormForward(acts.xnF.p, acts.rstdF.p, acts.xOut.p, weights.finalNorm.p, T: T, H: H, eps: eps)
        if !gradient { hiddenStateHook?(.blockInput(c.blocks), rows, acts.xOut.p); hiddenStateHook?(.finalNorm, rows, acts.xnF.p) }

        // Loss positions: t predicts t+1 within its row.
        var positions: [Int] = [], targets: [Int32] = []
        for (r, row) in rows.enumerated() where row.ids.count > 1 {
            for t in 0..<(row.ids.count - 1) where row.labels[t + 1] != -100 {
                positions.append(rowStart[r] + t)
                targets.append(Int32(row.labels[t + 1]))
            }
        }
        var result = EngineResult(nllSum: 0, tokens: positions.count, rows: rows.count, dNllSumDGamma: [])
        // Chunks of positions bound the logits buffer.
        let chunk = 512
        let logits = FloatBuffer(min(chunk, max(positions.count, 1)) * c.vocabSize)
        let sel = FloatBuffer(min(chunk, max(positions.count, 1)) * H)
        let dsel = FloatBuffer(gradient ? min(chunk, max(positions.count, 1)) * H : 0)
        var p0 = 0
        while p0 < positions.count {
            let n = min(chunk, positions.count - p0)
            for j in 0..<n { (sel.p + j * H).update(from: acts.xnF.p + positions[p0 + j] * H, count: H) }
            result.nllSum += crossEntropyForwardBackward(sel.p, targets: Array(targets[p0..<(p0 + n)]), lmHead: weights.lmHead,
                                                         softcap: c.finalSoftcap, logits: logits.p, nll: nil,
                                                         dx: gradient ? dsel.p : nil, scale: 1, gemm: gemm)
            if let scratch {
                for j in 0..<n {
                    let d = scratch.dx.p + positions[p0 + j] * H, s = dsel.p + j * H
                    for i in 0..<H { d[i] += s[i] }
                }
            }
            p0 += n
        }
        if let scratch {
            acts.dRes.zero()
            rmsnormBackward(acts.dRes.p, scratch.dx.p, acts.xOut.p, acts.rstdF.p, weights.finalNorm.p, T: T, H: H)
        }
        return result
    }

    /// The backward pass of a micro-batch whose forward kept its activations: acts.dRes (from the
    /// loss, or in a pipeline from the next stage) down this engine's blocks, then to the previous
    /// stage. Returns d Σ NLL / dγ of this engine's layers (0 for the others).
    private func backward(_ m: RowLayout, _ acts: Activations, scratch sc: Scratch) throws -> [Double] {
        let c = spec
        let H = c.hiddenSize, I = c.intermediateSize, T = m.T
        let hd = c.headDim, qDim = c.qDim, kvDim = c.kvDim, qkvDim = c.qkvDim, qkDim = qDim + kvDim
        let nq = c.heads, nkv = c.kvHeads, group = nq / nkv
        let rows = m.rows, rowStart = m.rowStart, maxL = m.maxL
        let capped = c.attentionSoftcap != nil, attn = attentionRow
        let part = weights.part
        var dGamma = [Double](repeating: 0, count: updates.count)
        let dRes = acts.dRes
        if !part.head, let pipeline {
            try pipeline.receive(dRes.p, count: T * H, from: pipeline.next, tag: PipelineLink.gradientTag)
        }
        let recompute = self.recompute
        for b in weights.part.blocks.reversed() {
            // With recomputation the block's activations are formed again from its kept input.
            let s = recompute ? 0 : b
            if recompute { blockForward(b, slot: 0, m, acts, gradient: true) }
            let bw = weights.blocks[b]
            let xIn = acts.xIn[b], xn1 = acts.xn1[s], qkv = acts.qkv[s], qk = acts.qk[s]
            let att = acts.att[s], xMid = acts.xMid[s], xn2 = acts.xn2[s], gateUp = acts.gateUp[s], h = acts.h[s]
            // MLP: out = xMid + [norm](down(h))
            var dDown = dRes.p
            if c.sandwichNorms, let on = bw.mlpOutNorm {
                sc.dProj.zero()
                rmsnormBackward(sc.dProj.p, dRes.p, acts.mlpProj[s].p, acts.rstdMlpProj[s].p, on.p, T: T, H: H)
                dDown = sc.dProj.p
            }
            sc.dh.zero()
            stageBackward(.mlpOut, sc.dh.p, dDown, ldOut: H, h.p, block: b, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            gatedBackward(sc.dGateUp.p, sc.dh.p, gateUp.p, T: T, I: I, c.activation)
            sc.dxn.zero()
            stageBackward(.gateUp, sc.dxn.p, sc.dGateUp.p, ldOut: 2 * I, xn2.p, block: b, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            rmsnormBackward(dRes.p, sc.dxn.p, xMid.p, acts.rstd2[s].p, bw.mlpNorm.p, T: T, H: H)
            // Attention: xMid = xIn + [norm](o(att))
            var dO = dRes.p
            if c.sandwichNorms, let on = bw.attentionOutNorm {
                sc.dProj.zero()
                rmsnormBackward(sc.dProj.p, dRes.p, acts.attnProj[s].p, acts.rstdAttnProj[s].p, on.p, T: T, H: H)
                dO = sc.dProj.p
            }
            sc.datt.zero()
            stageBackward(.attentionOut, sc.datt.p, dO, ldOut: H, att.p, block: b, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            sc.dqkv.zero(); sc.dqk.zero()
            let qkRstd = c.qkNorm ? acts.qkRstd[s].p : nil
            parallelFor(rows.count) { range in
                let probs = FloatBuffer(maxL * maxL), dProbs = FloatBuffer(maxL * maxL)
                let caps = FloatBuffer(capped ? maxL * maxL : 0)
                for r in range {
                    let t0 = rowStart[r], L = rows[r].ids.count
                    let q = qk.p + t0 * qkDim, v = qkv.p + t0 * qkvDim + qDim + kvDim
                    let dq = sc.dqk.p + t0 * qkDim, dv = sc.dqkv.p + t0 * qkvDim + qDim + kvDim
                    let a = attn(L, b)
                    for hh in 0..<nq {
                        let g = hh / group
                        attentionBackward(dq + hh * hd, dq + qDim + g * hd, dv + g * hd, sc.datt.p + t0 * qDim + hh * hd,
                                          q + hh * hd, q + qDim + g * hd, v + g * hd, probs.p, dProbs.p, capped ? caps.p : nil,
                                          dqStride: qkDim, dkStride: qkDim, dvStride: qkvDim, a)
                    }
                    ropeApply(dq, L: L, stride: qkDim, heads: nq + nkv, ropeTables(block: b, length: L), inverse: true)
                    let raw = qkv.p + t0 * qkvDim, dRaw = sc.dqkv.p + t0 * qkvDim
                    if let qkRstd, let qn = bw.qNorm, let kn = bw.kNorm {
                        let rs = qkRstd + t0 * (nq + nkv)
                        for t in 0..<L {
                            for hh in 0..<nq {
                                rmsnormRowBackward(dRaw + t * qkvDim + hh * hd, dq + t * qkDim + hh * hd,
                                                   raw + t * qkvDim + hh * hd, rs[t * (nq + nkv) + hh], qn.p, n: hd)
                            }
                            for hh in 0..<nkv {
                                rmsnormRowBackward(dRaw + t * qkvDim + qDim + hh * hd, dq + t * qkDim + qDim + hh * hd,
                                                   raw + t * qkvDim + qDim + hh * hd, rs[t * (nq + nkv) + nq + hh], kn.p, n: hd)
                            }
                        }
                    } else {
                        for t in 0..<L { (dRaw + t * qkvDim).update(from: dq + t * qkDim, count: qkDim) }
                    }
                }
            }
            sc.dxn.zero()
            stageBackward(.qkv, sc.dxn.p, sc.dqkv.p, ldOut: qkvDim, xn1.p, block: b, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            rmsnormBackward(dRes.p, sc.dxn.p, xIn.p, acts.rstd1[s].p, bw.inputNorm.p, T: T, H: H)
            pipeline?.progress()
        }
        if !part.embedding, let pipeline {
            try pipeline.send(dRes.p, count: T * H, to: pipeline.previous, tag: PipelineLink.gradientTag)
        }
        return dGamma
    }

    private var maxWeightSize: Int {
        var m = 0
        for (i, u) in updates.enumerated() {
            if case .full = u, let s = spec.shape(of: maskedLayers[i].kind) { m = max(m, s.out * s.in) }
        }
        return m
    }
}
