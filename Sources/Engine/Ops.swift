import Foundation
import ILABLAS
import ILADiff
import ILAModel

// Each op's forward and backward side by side, on row-major buffers (llm.c style).
// T = tokens of the micro-batch, H = hidden size. Backward functions ADD into their input
// gradients unless they say otherwise. Strides (ld*) are in floats between consecutive tokens.

typealias FPtr = UnsafeMutablePointer<Float>
typealias CPtr = UnsafePointer<Float>

// MARK: RMSNorm  y = x · rsqrt(mean(x²) + eps) · w   (w already 1 + w for Gemma)

/// out [T, H], rstd [T] (saved for backward), x [T, H], w [H].
func rmsnormForward(_ out: FPtr, _ rstd: FPtr, _ x: CPtr, _ w: CPtr, T: Int, H: Int, eps: Float) {
    parallelFor(T, minChunk: 64) { range in for t in range {
        rmsnormRow(out + t * H, &rstd[t], x + t * H, w, n: H, eps: eps)
    } }
}

/// dx [T, H] += d(rmsnorm)/dx · dout.
func rmsnormBackward(_ dx: FPtr, _ dout: CPtr, _ x: CPtr, _ rstd: CPtr, _ w: CPtr, T: Int, H: Int) {
    parallelFor(T, minChunk: 64) { range in for t in range {
        rmsnormRowBackward(dx + t * H, dout + t * H, x + t * H, rstd[t], w, n: H)
    } }
}

@inline(__always) func rmsnormRow(_ o: FPtr, _ rstd: inout Float, _ x: CPtr, _ w: CPtr, n: Int, eps: Float) {
    var ss: Float = 0
    for i in 0..<n { ss += x[i] * x[i] }
    let r = 1 / (ss / Float(n) + eps).squareRoot()
    rstd = r
    for i in 0..<n { o[i] = (x[i] * r) * w[i] }
}

/// xhat = x·r; dxhat = dout·w; dx += r·(dxhat − xhat·mean(dxhat·xhat))
@inline(__always) func rmsnormRowBackward(_ g: FPtr, _ d: CPtr, _ x: CPtr, _ r: Float, _ w: CPtr, n: Int) {
    var dot: Float = 0
    for i in 0..<n { dot += d[i] * w[i] * x[i] * r }
    let m = dot / Float(n)
    for i in 0..<n { g[i] += r * (d[i] * w[i] - x[i] * r * m) }
}

// MARK: Rotary embedding (rotate-half: pairs i and i + rotaryDim/2 of each head's first rotaryDim features)

/// Rotates x in place: x [L, stride] holding `heads` heads of size `rope.headDim` from column 0,
/// one row per position 0..<L. `inverse` applies the transpose rotation (the backward pass).
func ropeApply(_ x: FPtr, L: Int, stride: Int, heads: Int, _ rope: RopeTables, inverse: Bool = false) {
    let half = rope.half, hd = rope.headDim
    let sign: Float = inverse ? -1 : 1
    rope.cos.withUnsafeBufferPointer { cosAll in
        rope.sin.withUnsafeBufferPointer { sinAll in
            guard let cb = cosAll.baseAddress, let sb = sinAll.baseAddress else { return }
            for p in 0..<L {
                let c = cb + p * half, s = sb + p * half
                for h in 0..<heads {
                    let v = x + p * stride + h * hd
                    for i in 0..<half {
                        let a = v[i], b = v[i + half], si = sign * s[i]
                        v[i] = a * c[i] - b * si
                        v[i + half] = b * c[i] + a * si
                    }
                }
            }
        }
    }
}

// MARK: Causal grouped-query attention for one row and one head

/// Row-local views with their row strides: q, k, v and the output of one head.
struct AttentionRow {
    let L: Int
    let headDim: Int
    let qStride: Int
    let kStride: Int
    let vStride: Int
    let outStride: Int
    let scale: Float
    /// cap · tanh(s / cap) of the scaled logits (Gemma 2), or nil.
    let softcap: Float?
    /// A query at i sees keys j with i − window < j ≤ i; nil = all j ≤ i.
    let window: Int?

    @inline(__always) func firstKey(_ i: Int) -> Int { window.map { max(0, i - $0 + 1) } ?? 0 }
}

/// P [L, L] = softmax(softcap(scale · Q_h K_gᵀ)) over the visible keys (the rest = 0). With a
/// soft-cap, `capped` [L, L] receives tanh(s / cap) for the backward pass.
func attentionProbs(_ P: FPtr, _ capped: FPtr?, _ q: CPtr, _ k: CPtr, _ a: AttentionRow) {
    let L = a.L
    serialGEMM(transB: true, m: L, n: L, k: a.headDim, alpha: a.scale, q, lda: a.qStride, k, ldb: a.kStride, P)
    for i in 0..<L {
        let row = P + i * L, j0 = a.firstKey(i)
        if let cap = a.softcap {
            let tr = capped! + i * L
            for j in j0...i { let t = tanhf(row[j] / cap); tr[j] = t; row[j] = t * cap }
        }
        var mx = -Float.infinity
        for j in j0...i { mx = max(mx, row[j]) }
        var sum: Float = 0
        for j in j0...i { let e = expf(row[j] - mx); row[j] = e; sum += e }
        let inv = 1 / sum
        for j in 0..<j0 { row[j] = 0 }
        for j in j0...i { row[j] *= inv }
        for j in (i + 1)..<max(i + 1, L) { row[j] = 0 }
    }
}

/// out_h [L, headDim] (stride outStride) = P · V_g.
func attentionForward(_ out: FPtr, _ P: FPtr, _ capped: FPtr?, _ q: CPtr, _ k: CPtr, _ v: CPtr, _ a: AttentionRow) {
    attentionProbs(P, capped, q, k, a)
    serialGEMM(m: a.L, n: a.headDim, k: a.L, P, v, ldb: a.vStride, out, ldc: a.outStride)
}

/// Given dOut_h, recomputes P and writes dQ_h (overwrites), adds dK_g and dV_g.
/// P, dP (and `capped` with a soft-cap): scratch [L, L].
func attentionBackward(_ dq: FPtr, _ dk: FPtr, _ dv: FPtr, _ dout: CPtr, _ q: CPtr, _ k: CPtr, _ v: CPtr,
                       _ P: FPtr, _ dP: FPtr, _ capped: FPtr?, dqStride: Int, dkStride: Int, dvStride: Int, _ a: AttentionRow) {
    let L = a.L
    attentionProbs(P, capped, q, k, a)
    // dV += Pᵀ · dOut ; dP = dOut · Vᵀ
    serialGEMM(transA: true, m: L, n: a.headDim, k: L, P, lda: L, dout, ldb: a.outStride, beta: 1, dv, ldc: dvStride)
    serialGEMM(transB: true, m: L, n: L, k: a.headDim, dout, lda: a.outStride, v, ldb: a.vStride, dP)
    // dS = P ∘ (dP − rowsum(dP ∘ P)), through the soft-cap (1 − tanh²), then the scale.
    for i in 0..<L {
        let p = P + i * L, d = dP + i * L, j0 = a.firstKey(i)
        var s: Float = 0
        for j in j0...i { s += p[j] * d[j] }
        for j in j0...i { d[j] = p[j] * (d[j] - s) }
        if a.softcap != nil {
            let tr = capped! + i * L
            for j in j0...i { d[j] *= 1 - tr[j] * tr[j] }
        }
        for j in j0...i { d[j] *= a.scale }
        for j in 0..<j0 { d[j] = 0 }
        for j in (i + 1)..<max(i + 1, L) { d[j] = 0 }
    }
    // dQ = dS · K ; dK += dSᵀ · Q
    serialGEMM(m: L, n: a.headDim, k: L, dP, k, ldb: a.kStride, dq, ldc: dqStride)
    serialGEMM(transA: true, m: L, n: a.headDim, k: L, dP, lda: L, q, ldb: a.qStride, beta: 1, dk, ldc: dkStride)
}

// MARK: Gated MLP  h = act(gate) · up, gate and up packed as [T, 2I] = [gate | up]

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

/// act(g) and act'(g).
@inline(__always) func activation(_ kind: Activation, _ g: Float) -> (Float, Float) {
    switch kind {
    case .silu:
        let s = sigmoid(g)
        return (g * s, s * (1 + g * (1 - s)))
    case .geluTanh:
        // 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))), as torch's gelu(approximate="tanh")
        let c: Float = 0.7978845608028654, k: Float = 0.044715
        let inner = c * (g + k * g * g * g)
        let t = tanhf(inner)
        let d = 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * c * (1 + 3 * k * g * g)
        return (0.5 * g * (1 + t), d)
    case .gelu:
        let cdf = 0.5 * (1 + erff(g * 0.7071067811865476))
        let pdf = expf(-0.5 * g * g) * 0.3989422804014327
        return (g * cdf, cdf + g * pdf)
    }
}

/// h [T, I] = act(gate) · up from gateUp [T, 2I].
func gatedForward(_ h: FPtr, _ gateUp: CPtr, T: Int, I: Int, _ kind: Activation) {
    parallelFor(T, minChunk: max(1, 16384 / max(I, 1))) { range in
        for t in range {
            let g = gateUp + t * 2 * I, u = g + I, o = h + t * I
            for i in 0..<I { o[i] = activation(kind, g[i]).0 * u[i] }
        }
    }
}

/// Writes (not adds) dGateUp [T, 2I] from dh [T, I].
func gatedBackward(_ dGateUp: FPtr, _ dh: CPtr, _ gateUp: CPtr, T: Int, I: Int, _ kind: Activation) {
    parallelFor(T, minChunk: max(1, 16384 / max(I, 1))) { range in
        for t in range {
            let g = gateUp + t * 2 * I, u = g + I, d = dh + t * I, dg = dGateUp + t * 2 * I, du = dg + I
            for i in 0..<I {
                let (a, da) = activation(kind, g[i])
                du[i] = d[i] * a
                dg[i] = d[i] * u[i] * da
            }
        }
    }
}

/// a += b over n elements.
func addInPlace(_ a: FPtr, _ b: CPtr, _ n: Int) {
    parallelFor(n, minChunk: 65536) { range in for i in range { a[i] += b[i] } }
}

// MARK: Cross-entropy over selected positions

/// For n hidden rows x [n, H] with targets, computes logits = x · lmHeadᵀ [n, V] into `logits`
/// (soft-capped when `softcap` is set), returns Σ NLL, and (when `dx` is given) writes
/// dx [n, H] = scale · d(NLL)/dx.
func crossEntropyForwardBackward(_ x: CPtr, targets: [Int32], lmHead: WeightMatrix, softcap: Float?,
                                 logits: FPtr, nll: FPtr?, dx: FPtr?, scale: Float, gemm: GEMMSeam) -> Double {
    let n = targets.count, V = lmHead.rows, H = lmHead.cols
    let head = EffectiveWeight(w: lmHead, delta: nil, gamma: 0)
    gemm.linearForward(logits, ldOut: V, x, head, nil, T: n)
    // Per-position losses land in `losses` and are summed in order, so the total does not
    // depend on how positions were split across threads.
    var losses = [Double](repeating: 0, count: n)
    losses.withUnsafeMutableBufferPointer { lp in
        guard let lossOut = lp.baseAddress else { return }
        parallelFor(n, minChunk: 8) { range in
            for r in range {
                let row = logits + r * V
                if let cap = softcap { for j in 0..<V { row[j] = tanhf(row[j] / cap) * cap } }
                var mx = -Float.infinity
                for j in 0..<V { mx = max(mx, row[j]) }
                var sum: Double = 0
                for j in 0..<V { sum += Double(expf(row[j] - mx)) }
                let lse = Double(mx) + log(sum)
                let t = Int(targets[r])
                let l = lse - Double(row[t])
                nll?[r] = Float(l)
                lossOut[r] = l
                if dx != nil {
                    let inv = Float(1 / sum)
                    for j in 0..<V {
                        let c = row[j]
                        var d = expf(c - mx) * inv * scale
                        if j == t { d -= scale }
                        // through cap·tanh(z/cap): dz = dc · (1 − (c/cap)²)
                        if let cap = softcap { let th = c / cap; d *= 1 - th * th }
                        row[j] = d
                    }
                }
            }
        }
    }
    let total = losses.reduce(0, +)
    if let dx {
        dx.update(repeating: 0, count: n * H)
        gemm.linearBackwardInput(dx, logits, ldOut: V, head, T: n)
    }
    return total
}
