import Foundation
import ILADiff

/// A layer's update as the engine applies it: W = W0 + γ·Δ.
enum MaskedUpdate {
    /// Δ row-major [out, in]; `effective` holds W0 + γΔ for the current γ.
    case full(delta: FloatBuffer, effective: FloatBuffer)
    /// Δ = scale · B·A, A [r, in], B [out, r]; never materialised.
    case lora(a: FloatBuffer, b: FloatBuffer, rank: Int, scale: Float)
}

/// Activations of one micro-batch, sized up front for `capacity` tokens (llm.c style).
final class Activations {
    let capacity: Int
    /// Per block: the residual stream entering it [T, H].
    var xIn: [FloatBuffer]
    var rstd1: [FloatBuffer]
    var xn1: [FloatBuffer]
    var q: [FloatBuffer], k: [FloatBuffer], v: [FloatBuffer]
    var att: [FloatBuffer]
    var xMid: [FloatBuffer]
    var rstd2: [FloatBuffer]
    var xn2: [FloatBuffer]
    var gate: [FloatBuffer], up: [FloatBuffer], h: [FloatBuffer]
    /// u = x·Aᵀ [T, r] of LoRA layers, by γ index.
    var loraU: [Int: FloatBuffer]
    /// Final residual [T, H], its rstd [T] and normalised output [T, H].
    let xOut: FloatBuffer, rstdF: FloatBuffer, xnF: FloatBuffer

    init(config c: LlamaConfig, capacity T: Int, loraRanks: [Int: Int], keepForBackward: Bool) {
        capacity = T
        let B = keepForBackward ? c.numHiddenLayers : 1
        func make(_ n: Int) -> [FloatBuffer] { (0..<B).map { _ in FloatBuffer(T * n) } }
        xIn = make(c.hiddenSize); rstd1 = make(1); xn1 = make(c.hiddenSize)
        q = make(c.qDim); k = make(c.kvDim); v = make(c.kvDim); att = make(c.qDim)
        xMid = make(c.hiddenSize); rstd2 = make(1); xn2 = make(c.hiddenSize)
        gate = make(c.intermediateSize); up = make(c.intermediateSize); h = make(c.intermediateSize)
        loraU = [:]
        for (i, r) in loraRanks { loraU[i] = FloatBuffer(T * r) }
        xOut = FloatBuffer(T * c.hiddenSize); rstdF = FloatBuffer(T); xnF = FloatBuffer(T * c.hiddenSize)
    }
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

/// A Llama-family causal LM in Float32 on OpenBLAS whose linear layers are W0 + γ_i·Δ_i, with the
/// gradient of the response-token NLL with respect to every γ_i.
public final class LlamaEngine: @unchecked Sendable {
    public let config: LlamaConfig
    public let weights: LlamaWeights
    /// The masked layers in γ order (the order of the deltas given).
    public let maskedLayers: [LinearLayer]
    /// block → kind → γ index
    private let slot: [[LayerKind: Int]]
    private var updates: [MaskedUpdate]
    private var currentGamma: [Float]
    private let rope: RopeTables
    /// Upper bound of tokens per micro-batch (a row longer than this still runs, alone).
    public var tokenBudget: Int

    /// Bytes of activations kept per token for the backward pass, over all blocks.
    public static func activationBytesPerToken(_ c: LlamaConfig) -> Int {
        let perBlock = 5 * c.hiddenSize + 2 * c.qDim + 2 * c.kvDim + 3 * c.intermediateSize + 2
        return 4 * (perBlock * c.numHiddenLayers + 3 * c.hiddenSize)
    }

    /// - Parameters:
    ///   - tokenBudget: tokens per micro-batch; by default as many as fit in `activationMemory`
    ///     bytes (at most 4096), so a large model runs a row at a time.
    public init(weights: LlamaWeights, deltas: [LayerDelta], maxSequenceLength: Int = 4096, tokenBudget: Int? = nil,
                activationMemory: Int = 2 << 30) throws {
        config = weights.config
        self.weights = weights
        // The engine splits work across cores itself; OpenBLAS threads would spin against it.
        BLAS.threads = 1
        self.tokenBudget = tokenBudget ?? max(1, min(4096, activationMemory / Self.activationBytesPerToken(weights.config)))
        var slot = [[LayerKind: Int]](repeating: [:], count: config.numHiddenLayers)
        var updates: [MaskedUpdate] = []
        for (i, d) in deltas.enumerated() {
            let l = d.layer
            guard l.block < config.numHiddenLayers else {
                throw ILAError("delta \(l.name): block \(l.block) but the model has \(config.numHiddenLayers) blocks")
            }
            let s = config.shape(of: l.kind)
            guard d.outFeatures == s.out, d.inFeatures == s.in else {
                throw ILAError("delta \(l.name): shape \(d.shape) but the model's layer is [\(s.out), \(s.in)]")
            }
            guard slot[l.block][l.kind] == nil else { throw ILAError("delta \(l.name) given twice") }
            slot[l.block][l.kind] = i
            switch d.payload {
            case .full(let delta):
                let w0 = weights.blocks[l.block].linear[l.kind]!
                let eff = FloatBuffer(w0.count)
                eff.p.update(from: w0.p, count: w0.count)
                updates.append(.full(delta: FloatBuffer(delta), effective: eff))
            case .factors(let a, let b, let r, let scale):
                updates.append(.lora(a: FloatBuffer(a), b: FloatBuffer(b), rank: r, scale: scale))
            }
        }
        self.slot = slot
        self.updates = updates
        maskedLayers = deltas.map(\.layer)
        currentGamma = [Float](repeating: 0, count: deltas.count)
        rope = RopeTables(positions: maxSequenceLength, headDim: config.headDim, theta: config.ropeTheta)
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
            guard r.ids.count <= rope.cos.count / rope.half else {
                throw ILAError("row \(n): \(r.ids.count) tokens exceed the engine's maximum sequence length")
            }
            for t in r.ids where t < 0 || t >= config.vocabSize {
                throw ILAError("row \(n): token id \(t) is outside the vocabulary of \(config.vocabSize)")
            }
            for t in r.labels where t != -100 && (t < 0 || t >= config.vocabSize) {
                throw ILAError("row \(n): label \(t) is outside the vocabulary of \(config.vocabSize)")
            }
        }
        setGamma(gamma)
        var result = EngineResult(nllSum: 0, tokens: 0, rows: rows.count,
                                  dNllSumDGamma: gradient ? [Double](repeating: 0, count: gamma.count) : [])
        // Micro-batches of whole rows within the token budget.
        var start = 0
        var acts: Activations?
        while start < rows.count {
            var end = start, tokens = 0
            while end < rows.count && (end == start || tokens + rows[end].ids.count <= tokenBudget) {
                tokens += rows[end].ids.count
                end += 1
            }
            let batch = Array(rows[start..<end])
            if acts == nil || acts!.capacity < tokens {
                acts = Activations(config: config, capacity: max(tokens, min(tokenBudget, rows.map(\.ids.count).reduce(0, +))),
                                   loraRanks: loraRanks, keepForBackward: gradient)
            }
            let r = microBatch(batch, acts!, gradient: gradient)
            result.nllSum += r.nllSum
            result.tokens += r.tokens
            if gradient { for i in 0..<gamma.count { result.dNllSumDGamma[i] += r.dNllSumDGamma[i] } }
            start = end
        }
        return result
    }

    private var loraRanks: [Int: Int] {
        var out: [Int: Int] = [:]
        for (i, u) in updates.enumerated() { if case .lora(_, _, let r, _) = u { out[i] = r } }
        return out
    }

    /// Refreshes W0 + γΔ of full deltas whose γ changed.
    private func setGamma(_ gamma: [Float]) {
        for (i, u) in updates.enumerated() {
            guard case .full(let delta, let eff) = u, gamma[i] != currentGamma[i] else { continue }
            let l = maskedLayers[i]
            let w0 = weights.blocks[l.block].linear[l.kind]!
            let g = gamma[i]
            for j in 0..<eff.count { eff.p[j] = w0.p[j] + g * delta.p[j] }
        }
        currentGamma = gamma
    }

    // MARK: masked linear layers

    /// The weight used for x·Wᵀ: W0 + γΔ for full deltas, W0 otherwise.
    private func weight(_ block: Int, _ kind: LayerKind) -> FloatBuffer {
        if let i = slot[block][kind], case .full(_, let eff) = updates[i] { return eff }
        return weights.blocks[block].linear[kind]!
    }

    /// out [T, O] = x·(W0 + γΔ)ᵀ (+ bias); keeps u = x·Aᵀ of LoRA layers for backward.
    private func maskedForward(_ out: FPtr, _ x: CPtr, block: Int, kind: LayerKind, T: Int, acts: Activations, gradient: Bool) {
        let s = config.shape(of: kind)
        linearForward(out, x, weight(block, kind).p, weights.blocks[block].bias[kind]?.p, T: T, I: s.in, O: s.out)
        guard let i = slot[block][kind], case .lora(let a, let b, let r, let scale) = updates[i] else { return }
        let g = currentGamma[i]
        if g == 0 && !gradient { return }
        let u = acts.loraU[i]!
        pgemm(transB: true, m: T, n: r, k: s.in, x, a.p, u.p)
        if g != 0 { pgemm(transB: true, m: T, n: s.out, k: r, alpha: g * scale, u.p, b.p, beta: 1, out) }
    }

    /// Given dY [T, O] and the layer input x [T, I]: dx [T, I] += dY·W_eff, dγ += ⟨dY, x·Δᵀ⟩.
    private func maskedBackward(_ dx: FPtr, _ dy: CPtr, _ x: CPtr, block: Int, kind: LayerKind, T: Int,
                                acts: Activations, scratch: Scratch, dGamma: inout [Double]) {
        let s = config.shape(of: kind)
        linearBackwardInput(dx, dy, weight(block, kind).p, T: T, I: s.in, O: s.out)
        guard let i = slot[block][kind] else { return }
        switch updates[i] {
        case .full(let delta, _):
            // dW = dYᵀ·x [O, I]; dγ = ⟨Δ, dW⟩
            let dW = scratch.weightGrad
            pgemm(transA: true, m: s.out, n: s.in, k: T, dy, x, dW.p)
            dGamma[i] += Double(BLAS.dot(s.out * s.in, delta.p, dW.p))
        case .lora(let a, let b, let r, let scale):
            // v = dY·B [T, r]; dγ = scale·Σ v∘u; dx += γ·scale·v·A
            let v = scratch.loraV
            pgemm(m: T, n: r, k: s.out, dy, b.p, v.p)
            let u = acts.loraU[i]!
            dGamma[i] += Double(scale) * Double(BLAS.dot(T * r, v.p, u.p))
            let g = currentGamma[i]
            if g != 0 { pgemm(m: T, n: s.in, k: r, alpha: g * scale, v.p, a.p, beta: 1, dx) }
        }
    }

    /// Backward-only scratch buffers.
    final class Scratch {
        let weightGrad: FloatBuffer
        let loraV: FloatBuffer
        let dx: FloatBuffer, dxMid: FloatBuffer, dxn: FloatBuffer
        let dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer, datt: FloatBuffer
        let dgate: FloatBuffer, dup: FloatBuffer, dh: FloatBuffer
        init(config c: LlamaConfig, T: Int, maxWeight: Int, maxRank: Int) {
            weightGrad = FloatBuffer(maxWeight)
            loraV = FloatBuffer(T * maxRank)
            dx = FloatBuffer(T * c.hiddenSize); dxMid = FloatBuffer(T * c.hiddenSize); dxn = FloatBuffer(T * c.hiddenSize)
            dq = FloatBuffer(T * c.qDim); dk = FloatBuffer(T * c.kvDim); dv = FloatBuffer(T * c.kvDim); datt = FloatBuffer(T * c.qDim)
            dgate = FloatBuffer(T * c.intermediateSize); dup = FloatBuffer(T * c.intermediateSize); dh = FloatBuffer(T * c.intermediateSize)
        }
    }

    // MARK: one micro-batch

    private func microBatch(_ rows: [TokenizedRow], _ acts: Activations, gradient: Bool) -> EngineResult {
        let c = config
        let H = c.hiddenSize, I = c.intermediateSize, T = rows.map(\.ids.count).reduce(0, +)
        let eps = Float(c.rmsNormEps)
        let rowStart = rows.reduce(into: [0]) { $0.append($0.last! + $1.ids.count) }
        let maxL = rows.map(\.ids.count).max() ?? 0
        let attn = { (L: Int) in AttentionRow(L: L, headDim: c.headDim, qStride: c.qDim, kvStride: c.kvDim,
                                             scale: 1 / Float(c.headDim).squareRoot()) }
        let group = c.numAttentionHeads / c.numKeyValueHeads

        // Embedding.
        let x0 = acts.xIn[0]
        for (t, id) in rows.flatMap(\.ids).enumerated() {
            (x0.p + t * H).update(from: weights.embed.p + id * H, count: H)
        }
        // Blocks.
        for b in 0..<c.numHiddenLayers {
            let s = gradient ? b : 0
            let xIn = acts.xIn[s], xn1 = acts.xn1[s], q = acts.q[s], k = acts.k[s], v = acts.v[s]
            let att = acts.att[s], xMid = acts.xMid[s], xn2 = acts.xn2[s]
            let gate = acts.gate[s], up = acts.up[s], h = acts.h[s]
            let bw = weights.blocks[b]
            rmsnormForward(xn1.p, acts.rstd1[s].p, xIn.p, bw.inputNorm.p, T: T, H: H, eps: eps)
            maskedForward(q.p, xn1.p, block: b, kind: .q_proj, T: T, acts: acts, gradient: gradient)
            maskedForward(k.p, xn1.p, block: b, kind: .k_proj, T: T, acts: acts, gradient: gradient)
            maskedForward(v.p, xn1.p, block: b, kind: .v_proj, T: T, acts: acts, gradient: gradient)
            parallelFor(rows.count) { range in
                let probs = FloatBuffer(maxL * maxL)
                for r in range {
                    let t0 = rowStart[r], L = rows[r].ids.count
                    ropeForward(q.p + t0 * c.qDim, L: L, stride: c.qDim, heads: c.numAttentionHeads, rope)
                    ropeForward(k.p + t0 * c.kvDim, L: L, stride: c.kvDim, heads: c.numKeyValueHeads, rope)
                    for hd in 0..<c.numAttentionHeads {
                        let g = hd / group
                        attentionForward(att.p + t0 * c.qDim + hd * c.headDim, probs.p,
                                         q.p + t0 * c.qDim + hd * c.headDim, k.p + t0 * c.kvDim + g * c.headDim,
                                         v.p + t0 * c.kvDim + g * c.headDim, attn(L))
                    }
                }
            }
            maskedForward(xMid.p, att.p, block: b, kind: .o_proj, T: T, acts: acts, gradient: gradient)
            addInPlace(xMid.p, xIn.p, T * H)
            rmsnormForward(xn2.p, acts.rstd2[s].p, xMid.p, bw.postAttentionNorm.p, T: T, H: H, eps: eps)
            maskedForward(gate.p, xn2.p, block: b, kind: .gate_proj, T: T, acts: acts, gradient: gradient)
            maskedForward(up.p, xn2.p, block: b, kind: .up_proj, T: T, acts: acts, gradient: gradient)
            swigluForward(h.p, gate.p, up.p, n: T * I)
            let next = b + 1 < c.numHiddenLayers ? acts.xIn[gradient ? b + 1 : 0] : acts.xOut
            maskedForward(next.p, h.p, block: b, kind: .down_proj, T: T, acts: acts, gradient: gradient)
            addInPlace(next.p, xMid.p, T * H)
        }
        rmsnormForward(acts.xnF.p, acts.rstdF.p, acts.xOut.p, weights.finalNorm.p, T: T, H: H, eps: eps)

        // Loss positions: t predicts t+1 within its row.
        var positions: [Int] = [], targets: [Int32] = []
        for (r, row) in rows.enumerated() where row.ids.count > 1 {
            for t in 0..<(row.ids.count - 1) where row.labels[t + 1] != -100 {
                positions.append(rowStart[r] + t)
                targets.append(Int32(row.labels[t + 1]))
            }
        }
        var result = EngineResult(nllSum: 0, tokens: positions.count, rows: rows.count, dNllSumDGamma: [])
        let scratch = gradient ? Scratch(config: c, T: T, maxWeight: maxWeightSize, maxRank: loraRanks.values.max() ?? 0) : nil
        if let scratch { scratch.dx.zero() }
        // Chunks of positions bound the logits buffer.
        let chunk = 512
        let logits = FloatBuffer(min(chunk, max(positions.count, 1)) * c.vocabSize)
        let sel = FloatBuffer(min(chunk, max(positions.count, 1)) * H)
        let dsel = FloatBuffer(gradient ? min(chunk, max(positions.count, 1)) * H : 0)
        var p0 = 0
        while p0 < positions.count {
            let n = min(chunk, positions.count - p0)
            for j in 0..<n { (sel.p + j * H).update(from: acts.xnF.p + positions[p0 + j] * H, count: H) }
            result.nllSum += crossEntropyForwardBackward(sel.p, targets: Array(targets[p0..<(p0 + n)]), lmHead: weights.lmHead.p,
                                                         V: c.vocabSize, H: H, logits: logits.p, nll: nil,
                                                         dx: gradient ? dsel.p : nil, scale: 1)
            if let scratch {
                for j in 0..<n {
                    let d = scratch.dx.p + positions[p0 + j] * H, s = dsel.p + j * H
                    for i in 0..<H { d[i] += s[i] }
                }
            }
            p0 += n
        }
        guard let sc = scratch else { return result }

        // Backward: dL/dxnF is in sc.dx; propagate to the residual stream.
        var dGamma = [Double](repeating: 0, count: updates.count)
        sc.dxMid.zero()
        rmsnormBackward(sc.dxMid.p, sc.dx.p, acts.xOut.p, acts.rstdF.p, weights.finalNorm.p, T: T, H: H)
        // sc.dxMid now holds d/d(residual after the last block); swap roles per block below.
        let dRes = sc.dxMid      // gradient of the residual stream, carried down the blocks
        for b in stride(from: c.numHiddenLayers - 1, through: 0, by: -1) {
            let bw = weights.blocks[b]
            let xIn = acts.xIn[b], xn1 = acts.xn1[b], q = acts.q[b], k = acts.k[b], v = acts.v[b]
            let att = acts.att[b], xMid = acts.xMid[b], xn2 = acts.xn2[b]
            let gate = acts.gate[b], up = acts.up[b], h = acts.h[b]
            // MLP: residual out = xMid + down(h)
            sc.dh.zero()
            maskedBackward(sc.dh.p, dRes.p, h.p, block: b, kind: .down_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            swigluBackward(sc.dgate.p, sc.dup.p, sc.dh.p, gate.p, up.p, n: T * I)
            sc.dxn.zero()
            maskedBackward(sc.dxn.p, sc.dgate.p, xn2.p, block: b, kind: .gate_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            maskedBackward(sc.dxn.p, sc.dup.p, xn2.p, block: b, kind: .up_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            rmsnormBackward(dRes.p, sc.dxn.p, xMid.p, acts.rstd2[b].p, bw.postAttentionNorm.p, T: T, H: H)
            // Attention: xMid = xIn + o(att)
            sc.datt.zero()
            maskedBackward(sc.datt.p, dRes.p, att.p, block: b, kind: .o_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            sc.dk.zero(); sc.dv.zero()
            parallelFor(rows.count) { range in
                let probs = FloatBuffer(maxL * maxL), dProbs = FloatBuffer(maxL * maxL)
                for r in range {
                    let t0 = rowStart[r], L = rows[r].ids.count
                    for hd in 0..<c.numAttentionHeads {
                        let g = hd / group
                        let qo = t0 * c.qDim + hd * c.headDim, ko = t0 * c.kvDim + g * c.headDim
                        attentionBackward(sc.dq.p + qo, sc.dk.p + ko, sc.dv.p + ko, sc.datt.p + qo,
                                          q.p + qo, k.p + ko, v.p + ko, probs.p, dProbs.p, attn(L))
                    }
                    ropeBackward(sc.dq.p + t0 * c.qDim, L: L, stride: c.qDim, heads: c.numAttentionHeads, rope)
                    ropeBackward(sc.dk.p + t0 * c.kvDim, L: L, stride: c.kvDim, heads: c.numKeyValueHeads, rope)
                }
            }
            sc.dxn.zero()
            maskedBackward(sc.dxn.p, sc.dq.p, xn1.p, block: b, kind: .q_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            maskedBackward(sc.dxn.p, sc.dk.p, xn1.p, block: b, kind: .k_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            maskedBackward(sc.dxn.p, sc.dv.p, xn1.p, block: b, kind: .v_proj, T: T, acts: acts, scratch: sc, dGamma: &dGamma)
            rmsnormBackward(dRes.p, sc.dxn.p, xIn.p, acts.rstd1[b].p, bw.inputNorm.p, T: T, H: H)
        }
        result.dNllSumDGamma = dGamma
        return result
    }

    private var maxWeightSize: Int {
        var m = 0
        for (i, u) in updates.enumerated() {
            if case .full = u { let s = config.shape(of: maskedLayers[i].kind); m = max(m, s.out * s.in) }
        }
        return m
    }
}
