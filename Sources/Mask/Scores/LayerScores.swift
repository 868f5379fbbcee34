import Foundation
import ILABLAS
import ILACollective
import ILADiff
import ILAEngine
import ILAModel

/// The layer-importance measures of `ila-mask score` (DESIGN.md section 11). Higher score =
/// more important, for every method.
public enum ScoreMethod: String, CaseIterable, Sendable {
    /// ‖Δ_i‖_F / ‖W0_i‖_F, from deltas.h5.
    case relChange = "rel-change"
    /// Spectrum's signal-to-noise ratio of the base weight (cognitivecomputations/spectrum).
    case spectrum
    /// ShortGPT's Block Influence 1 − mean cos(h_in, h_out) of each block, given to all its layers.
    case blockInfluence = "block-influence"
    /// Block Influence of the attention half (h_in → after attention: q k v o) and of the MLP half
    /// (after attention → h_out: gate up down) of each block.
    case blockInfluenceSublayer = "block-influence-sublayer"
    /// PruneMe's angular distance arccos(cos(h_l, h_{l+n}))/π of the blocks l … l+n−1.
    case angular
    /// |∂NLL/∂γ_i| at γ = 1 (first-order Taylor estimate of dropping Δ_i).
    case taylor
    /// NLL(γ = 1 but γ_i = 0) − NLL(γ = 1): what dropping Δ_i alone costs.
    case ablation
    /// ILA's learned mask logits s (as `ila-mask learn`).
    case ila

    public var needsDeltas: Bool { [.relChange, .taylor, .ablation, .ila].contains(self) }
    public var needsData: Bool { ![.relChange, .spectrum].contains(self) }
}

/// Scores of some layers: `scores[i]` belongs to `layers[i]`.
public struct LayerScores: Sendable {
    public var layers: [LinearLayer]
    public var scores: [Double]
    /// Response tokens and rows the data-driven methods used.
    public var tokens: Int = 0
    public var rows: Int = 0
    /// Token positions averaged by the hidden-state methods.
    public var positions: Int = 0
    public init(layers: [LinearLayer], scores: [Double]) {
        self.layers = layers
        self.scores = scores
    }
}

/// Callback for progress: (done, total, detail).
public typealias ScoreProgress = (Int, Int, String) -> Void

// MARK: rel-change

/// ‖Δ‖/‖W0‖ per layer, as ila-diff stored it (attribute rel_change), in the store's order.
public func relChangeScores(store: DeltaStore) throws -> LayerScores {
    var scores: [Double] = []
    for l in store.layers {
        guard let info = store.layerInfo(l) else { throw ILAError(file: store.path, "layer \(l.name) has no attributes") }
        guard info.relChange.isFinite else { throw ILAError(file: store.path, "layer \(l.name): rel_change is not finite") }
        scores.append(info.relChange)
    }
    return LayerScores(layers: store.layers, scores: scores)
}

// MARK: spectrum

public enum Spectrum {
    /// torch.quantile's default ('linear'): the value at position q·(n−1) of the sorted values.
    public static func quantile(_ sortedAscending: [Double], _ q: Double) -> Double {
        let n = sortedAscending.count
        guard n > 1 else { return sortedAscending.first ?? 0 }
        let pos = q * Double(n - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, n - 1)
        return sortedAscending[lo] + (pos - Double(lo)) * (sortedAscending[hi] - sortedAscending[lo])
    }

    /// Spectrum's SNR of one weight matrix [rows, cols] from its singular values (any order), as
    /// spectrum.py's `calculate_snr_for_layer` computes it:
    /// σ = IQR(S)/1.349 (torch.quantile 0.75 − 0.25), β = min(rows, cols)/max(rows, cols),
    /// threshold = σ·√((1 + √β)²), signal = Σ S > threshold, noise = Σ S ≤ threshold (1 when no
    /// value is noise), SNR = (signal/noise) / max S. An all-zero matrix (0/0 in spectrum.py) scores 0.
    public static func snr(singularValues s: [Float], rows n: Int, cols m: Int) -> Double {
        let sorted = s.map(Double.init).sorted()
        guard let maxS = sorted.last, maxS > 0 else { return 0 }
        let sigma = (quantile(sorted, 0.75) - quantile(sorted, 0.25)) / 1.349
        let beta = n < m ? Double(n) / Double(m) : Double(m) / Double(n)
        let threshold = sigma * ((1 + beta.squareRoot()) * (1 + beta.squareRoot())).squareRoot()
        var signal = 0.0, noise = 0.0, noiseCount = 0
        for v in sorted {
            if v > threshold { signal += v } else { noise += v; noiseCount += 1 }
        }
        if noiseCount == 0 { noise = 1 }
        guard noise != 0 else { return 0 }
        let r = signal / noise / maxS
        return r.isFinite ? r : 0
    }

    /// SNR of every given layer's base weight [out, in], read from the checkpoint one tensor at a
    /// time (bf16/f16 widened to float32, singular values by LAPACK sgesdd like torch's float32
    /// svdvals), so that memory stays about three copies of the largest matrix.
    public static func scores(checkpoint: ModelCheckpoint, layers: [LinearLayer], progress: ScoreProgress? = nil) throws -> LayerScores {
        var out: [Double] = []
        for (i, l) in layers.enumerated() {
            guard let info = checkpoint.info(l.weightName), info.shape.count == 2 else {
                throw ILAError(file: checkpoint.path, "no 2-D tensor \(l.weightName)")
            }
            var w = try checkpoint.floats(l.weightName)
            guard w.allSatisfy(\.isFinite) else {
                throw ILAError(file: checkpoint.file(of: l.weightName) ?? checkpoint.path, "\(l.weightName) holds NaN or Inf")
            }
            let s = try BLAS.singularValues(&w, m: info.shape[0], n: info.shape[1])
            out.append(snr(singularValues: s, rows: info.shape[0], cols: info.shape[1]))
            progress?(i + 1, layers.count, l.name)
        }
        return LayerScores(layers: layers, scores: out)
    }
}

// MARK: hidden-state methods (block influence, angular distance)

/// Which token positions the hidden-state methods average over.
public enum TokenPositions: String, CaseIterable, Sendable {
    /// Every position of every row (ShortGPT).
    case all
    /// The last position of each row (PruneMe's last non-padded token).
    case last
}

/// Which state stands after the last block.
public enum LastState: String, CaseIterable, Sendable {
    /// The final norm's output, as transformers' hidden_states[-1] (what ShortGPT / PruneMe read).
    case normed
    /// The last block's raw residual output.
    case raw
}

/// Cosine statistics of the residual stream over the selected positions of some rows.
/// States: S_0 = the embedding output, S_k = the input of block k, S_L = the state after the
/// last block (`LastState`); M_b = block b's stream after attention.
public struct HiddenStateStatistics: Sendable {
    public var blocks: Int
    public var distance: Int
    /// Positions averaged.
    public var positions = 0
    /// Σ over positions of cos(S_b, S_{b+1}) [blocks].
    public var blockCos: [Double]
    /// Σ cos(S_b, M_b) and Σ cos(M_b, S_{b+1}) [blocks].
    public var attentionCos: [Double], mlpCos: [Double]
    /// Σ arccos(clamp(cos(S_s, S_{s+n}), −1, 1))/π for windows s = 0 … blocks − n [blocks − n + 1].
    public var angular: [Double]
    public var tokens = 0, rows = 0

    /// ShortGPT's BI per block: 1 − mean cos(S_b, S_{b+1}).
    public var blockInfluence: [Double] { blockCos.map { 1 - $0 / Double(max(positions, 1)) } }
    /// 1 − mean cos(S_b, M_b) (attention half), 1 − mean cos(M_b, S_{b+1}) (MLP half).
    public var attentionInfluence: [Double] { attentionCos.map { 1 - $0 / Double(max(positions, 1)) } }
    public var mlpInfluence: [Double] { mlpCos.map { 1 - $0 / Double(max(positions, 1)) } }
    /// Mean angular distance of each window s (blocks s … s+n−1).
    public var windowDistance: [Double] { angular.map { $0 / Double(max(positions, 1)) } }
    /// A block's angular score: the mean distance of the windows that contain it (n = 1: its own).
    public var angularPerBlock: [Double] {
        let w = windowDistance
        return (0..<blocks).map { b in
            let windows = (max(0, b - distance + 1)...min(b, w.count - 1))
            return windows.isEmpty ? 0 : windows.map { w[$0] }.reduce(0, +) / Double(windows.count)
        }
    }

    /// Runs the model over the rows (under mask `gamma`) and gathers the statistics.
    /// Memory: the selected positions of `distance` + 2 states of one micro-batch.
    /// Under several ranks each runs its contiguous share of `rows` (`DataParallel.localRows`) and
    /// the sums (cosines, angular distances, positions, tokens, rows) are added with one allreduce,
    /// so every rank holds the statistics of all the rows and the means are formed from them.
    public static func measure(engine: TransformerEngine, rows allRows: [TokenizedRow], gamma: [Float], positions sel: TokenPositions,
                               distance n: Int, lastState: LastState, chunk: Int = 16,
                               progress: ScoreProgress? = nil,
                               comm: Communicator = SingleProcess.shared) throws -> HiddenStateStatistics {
        let L = engine.spec.blocks, H = engine.spec.hiddenSize
        guard n >= 1, n <= L else { throw ILAError("--distance \(n) must be between 1 and the model's \(L) blocks") }
        var st = HiddenStateStatistics(blocks: L, distance: n, blockCos: .init(repeating: 0, count: L),
                                       attentionCos: .init(repeating: 0, count: L), mlpCos: .init(repeating: 0, count: L),
                                       angular: .init(repeating: 0, count: L - n + 1))
        let rows = Array(DataParallel.localRows(allRows, comm))
        var start = 0
        while start < rows.count {
            let part = Array(rows[start..<min(start + chunk, rows.count)])
            // Within one micro-batch: compact copies [P, H] of the selected positions of S_k and M_b.
            var states: [Int: [Float]] = [:]
            var mid: [Float] = []
            var pick: [Int] = []
            func gather(_ v: UnsafePointer<Float>) -> [Float] {
                var out = [Float](repeating: 0, count: pick.count * H)
                out.withUnsafeMutableBufferPointer { o in
                    for (j, t) in pick.enumerated() { (o.baseAddress! + j * H).update(from: v + t * H, count: H) }
                }
                return out
            }
            func cosSum(_ a: [Float], _ b: [Float], angular: Bool) -> Double {
                var total = 0.0
                for j in 0..<pick.count {
                    var ab = 0.0, aa = 0.0, bb = 0.0
                    for i in (j * H)..<((j + 1) * H) {
                        let x = Double(a[i]), y = Double(b[i])
                        ab += x * y; aa += x * x; bb += y * y
                    }
                    let c = aa > 0 && bb > 0 ? ab / (aa.squareRoot() * bb.squareRoot()) : 1
                    total += angular ? acos(min(1, max(-1, c))) / Double.pi : c
                }
                return total
            }
            func arrive(_ k: Int, _ v: UnsafePointer<Float>) {
                let s = gather(v)
                if k >= 1, let prev = states[k - 1] {
                    st.blockCos[k - 1] += cosSum(prev, s, angular: false)
                    st.mlpCos[k - 1] += cosSum(mid, s, angular: false)
                }
                if k >= n, let back = states[k - n] { st.angular[k - n] += cosSum(back, s, angular: true) }
                states[k] = s
                states[k - n] = nil
            }
            let r = try engine.forEachHiddenState(rows: part, gamma: gamma) { point, mbRows, values in
                if case .blockInput(0) = point {
                    // A new micro-batch: its selected positions.
                    var t0 = 0
                    pick = []
                    for row in mbRows {
                        switch sel {
                        case .all: pick.append(contentsOf: t0..<(t0 + row.ids.count))
                        case .last: if !row.ids.isEmpty { pick.append(t0 + row.ids.count - 1) }
                        }
                        t0 += row.ids.count
                    }
                    states = [:]
                    st.positions += pick.count
                }
                switch point {
                case .blockInput(let k) where k < L: arrive(k, values)
                case .blockInput: if lastState == .raw { arrive(L, values) }
                case .finalNorm: if lastState == .normed { arrive(L, values) }
                case .afterAttention(let b):
                    mid = gather(values)
                    if let s = states[b] { st.attentionCos[b] += cosSum(s, mid, angular: false) }
                }
            }
            st.tokens += r.tokens
            st.rows += part.count
            start += part.count
            progress?(start, rows.count, "")
        }
        try st.allreduce(comm)
        return st
    }

    /// Adds every rank's sums into these (identity in a single process).
    mutating func allreduce(_ comm: Communicator) throws {
        guard comm.size > 1 else { return }
        var packed = [Double(positions), Double(tokens), Double(rows)] + blockCos + attentionCos + mlpCos + angular
        try comm.allreduceSum(&packed)
        positions = Int(packed[0]); tokens = Int(packed[1]); rows = Int(packed[2])
        var at = 3
        func take(_ count: Int) -> [Double] { defer { at += count }; return Array(packed[at..<(at + count)]) }
        blockCos = take(blockCos.count); attentionCos = take(attentionCos.count); mlpCos = take(mlpCos.count)
        angular = take(angular.count)
    }
}

/// Every linear layer of the model's blocks (canonical order), for the methods that need no deltas.
public func modelLayers(_ spec: TransformerSpec) -> [LinearLayer] {
    (0..<spec.blocks).flatMap { b in spec.kinds.compactMap { k in spec.layerName(block: b, kind: k).flatMap(LinearLayer.init(name:)) } }
}

/// Block-level scores given to each layer of the block (sub-layer: attention kinds get the
/// attention half, MLP kinds the MLP half).
public func spreadBlockScores(_ layers: [LinearLayer], perBlock: [Double], attention: [Double]? = nil, mlp: [Double]? = nil) -> LayerScores {
    let attentionKinds: Set<LayerKind> = [.q_proj, .k_proj, .v_proj, .qkv_proj, .o_proj]
    let scores = layers.map { l -> Double in
        if let attention, let mlp { return attentionKinds.contains(l.kind) ? attention[l.block] : mlp[l.block] }
        return perBlock[l.block]
    }
    return LayerScores(layers: layers, scores: scores)
}

// MARK: gradient and ablation

/// |∂ mean NLL / ∂γ_i| at γ = 1 over the rows (one forward and backward pass, in chunks).
/// Under several ranks each runs its share of the rows; Σ dNLL/dγ, tokens and rows are added
/// with one allreduce before the division by the global token count.
public func taylorScores(engine: TransformerEngine, rows allRows: [TokenizedRow], chunk: Int = 16, progress: ScoreProgress? = nil,
                         comm: Communicator = SingleProcess.shared) throws -> LayerScores {
    let n = engine.maskedLayers.count
    let ones = [Float](repeating: 1, count: n)
    let rows = Array(DataParallel.localRows(allRows, comm))
    var total = EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: [Double](repeating: 0, count: n))
    var start = 0
    while start < rows.count {
        let part = Array(rows[start..<min(start + chunk, rows.count)])
        let r = try engine.gradient(rows: part, gamma: ones)
        for i in 0..<n { total.dNllSumDGamma[i] += r.dNllSumDGamma[i] }
        total.nllSum += r.nllSum
        total.tokens += r.tokens
        total.rows += part.count
        start += part.count
        progress?(start, rows.count, "")
    }
    try DataParallel.allreduce(&total, comm)
    guard total.tokens > 0 else { throw ILAError("no response tokens to score (all labels are -100)") }
    var s = LayerScores(layers: engine.maskedLayers, scores: total.dNllSumDGamma.map { abs($0 / Double(total.tokens)) })
    s.tokens = total.tokens; s.rows = total.rows
    return s
}

/// Σ NLL and response tokens of the rows under γ, in chunks (this process's rows only).
func nllSum(_ engine: TransformerEngine, _ rows: [TokenizedRow], _ gamma: [Float], chunk: Int = 16) throws -> (sum: Double, tokens: Int) {
    var sum = 0.0, tokens = 0, start = 0
    while start < rows.count {
        let r = try engine.evaluate(rows: Array(rows[start..<min(start + chunk, rows.count)]), gamma: gamma)
        sum += r.nllSum; tokens += r.tokens
        start += chunk
    }
    return (sum, tokens)
}

/// NLL(γ = 1 except γ_i = 0) − NLL(γ = 1) per layer: N + 1 forward passes over the rows.
/// Under several ranks each runs the N + 1 passes over its share of the rows; the N + 1 NLL sums
/// and the token count are added with one allreduce at the end, and every mean is formed from
/// the global sums (Σ_i / T − Σ_full / T, as in one process).
public func ablationScores(engine: TransformerEngine, rows allRows: [TokenizedRow], progress: ScoreProgress? = nil,
                           comm: Communicator = SingleProcess.shared) throws -> LayerScores {
    let n = engine.maskedLayers.count
    let ones = [Float](repeating: 1, count: n)
    let rows = Array(DataParallel.localRows(allRows, comm))
    let (full, tokens) = try nllSum(engine, rows, ones)
    // [Σ NLL at γ = 1, Σ NLL with γ_i = 0 for each i, tokens, rows]
    var sums = [full]
    for i in 0..<n {
        var g = ones
        g[i] = 0
        sums.append(try nllSum(engine, rows, g).sum)
        progress?(i + 1, n, engine.maskedLayers[i].name)
    }
    sums += [Double(tokens), Double(rows.count)]
    if comm.size > 1 { try comm.allreduceSum(&sums) }
    let totalTokens = Int(sums[n + 1]), totalRows = Int(sums[n + 2])
    guard totalTokens > 0 else { throw ILAError("no response tokens to score (all labels are -100)") }
    let t = Double(totalTokens)
    let base = sums[0] / t
    var s = LayerScores(layers: engine.maskedLayers, scores: (0..<n).map { sums[$0 + 1] / t - base })
    s.tokens = totalTokens; s.rows = totalRows
    return s
}
