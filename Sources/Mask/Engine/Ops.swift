import Foundation
import ILADiff

// Each op's forward and backward side by side, on row-major buffers (llm.c style).
// T = tokens of the micro-batch, H = hidden size. Backward functions ADD into their input
// gradients unless they say otherwise.

typealias FPtr = UnsafeMutablePointer<Float>
typealias CPtr = UnsafePointer<Float>

// MARK: RMSNorm  y = x · rsqrt(mean(x²) + eps) · w

/// out [T, H], rstd [T] (saved for backward), x [T, H], w [H].
func rmsnormForward(_ out: FPtr, _ rstd: FPtr, _ x: CPtr, _ w: CPtr, T: Int, H: Int, eps: Float) {
    parallelFor(T, minChunk: 64) { range in for t in range {
        let xr = x + t * H, o = out + t * H
        var ss: Float = 0
        for i in 0..<H { ss += xr[i] * xr[i] }
        let r = 1 / (ss / Float(H) + eps).squareRoot()
        rstd[t] = r
        for i in 0..<H { o[i] = (xr[i] * r) * w[i] }
    } }
}

/// dx [T, H] += d(rmsnorm)/dx · dout.
func rmsnormBackward(_ dx: FPtr, _ dout: CPtr, _ x: CPtr, _ rstd: CPtr, _ w: CPtr, T: Int, H: Int) {
    parallelFor(T, minChunk: 64) { range in for t in range {
        let xr = x + t * H, d = dout + t * H, g = dx + t * H
        let r = rstd[t]
        // xhat = x·r; dxhat = dout·w; dx = r·(dxhat − xhat·mean(dxhat·xhat))
        var dot: Float = 0
        for i in 0..<H { dot += d[i] * w[i] * xr[i] * r }
        let m = dot / Float(H)
        for i in 0..<H { g[i] += r * (d[i] * w[i] - xr[i] * r * m) }
    } }
}

// MARK: Parallel GEMM

/// C = alpha·op(A)·op(B) + beta·C with the rows of C split across the engine's threads, each
/// chunk one single-threaded OpenBLAS call (the engine runs OpenBLAS with one thread, so BLAS
/// threads never spin against the engine's own).
func pgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
           _ a: CPtr, lda: Int? = nil, _ b: CPtr, ldb: Int? = nil, beta: Float = 0, _ c: FPtr, ldc: Int? = nil) {
    let lda = lda ?? (transA ? m : k), ldc = ldc ?? n
    // Below ~1 MFLOP per chunk the split costs more than it saves.
    let minRows = max(1, 1_000_000 / max(1, 2 * n * k))
    parallelFor(m, minChunk: minRows) { rows in
        let aOff = transA ? rows.lowerBound : rows.lowerBound * lda
        BLAS.gemm(transA: transA, transB: transB, m: rows.count, n: n, k: k, alpha: alpha, a + aOff, lda: lda,
                  b, ldb: ldb, beta: beta, c + rows.lowerBound * ldc, ldc: ldc)
    }
}

// MARK: Linear  y = x · Wᵀ (+ b)

/// out [T, O] = x [T, I] · w[O, I]ᵀ (+ bias [O]).
func linearForward(_ out: FPtr, _ x: CPtr, _ w: CPtr, _ bias: CPtr?, T: Int, I: Int, O: Int) {
    pgemm(transB: true, m: T, n: O, k: I, x, w, out)
    if let bias {
        for t in 0..<T { let o = out + t * O; for j in 0..<O { o[j] += bias[j] } }
    }
}

/// dx [T, I] += dout [T, O] · w [O, I].
func linearBackwardInput(_ dx: FPtr, _ dout: CPtr, _ w: CPtr, T: Int, I: Int, O: Int) {
    pgemm(m: T, n: I, k: O, dout, w, beta: 1, dx)
}

// MARK: Rotary embedding (rotate-half: pairs i and i + d/2)

/// cos/sin tables [positions, d/2] as transformers computes them in float32.
struct RopeTables {
    let cos: [Float]
    let sin: [Float]
    let half: Int

    init(positions: Int, headDim: Int, theta: Double) {
        half = headDim / 2
        var c = [Float](repeating: 0, count: positions * half), s = c
        for i in 0..<half {
            let invFreq: Float = 1 / powf(Float(theta), Float(2 * i) / Float(headDim))
            for p in 0..<positions {
                let a = Float(p) * invFreq
                c[p * half + i] = Float(Foundation.cos(Double(a)))
                s[p * half + i] = Float(Foundation.sin(Double(a)))
            }
        }
        cos = c
        sin = s
    }
}

/// Rotates x in place: x [L, stride] holding `heads` heads of size 2·half from column 0, one
/// row per position 0..<L.
func ropeForward(_ x: FPtr, L: Int, stride: Int, heads: Int, _ rope: RopeTables) {
    let half = rope.half
    for p in 0..<L {
        let c = rope.cos.withUnsafeBufferPointer { $0.baseAddress! + p * half }
        let s = rope.sin.withUnsafeBufferPointer { $0.baseAddress! + p * half }
        for h in 0..<heads {
            let v = x + p * stride + h * 2 * half
            for i in 0..<half {
                let a = v[i], b = v[i + half]
                v[i] = a * c[i] - b * s[i]
                v[i + half] = b * c[i] + a * s[i]
            }
        }
    }
}

/// The transpose rotation, in place on the gradient.
func ropeBackward(_ dx: FPtr, L: Int, stride: Int, heads: Int, _ rope: RopeTables) {
    let half = rope.half
    for p in 0..<L {
        let c = rope.cos.withUnsafeBufferPointer { $0.baseAddress! + p * half }
        let s = rope.sin.withUnsafeBufferPointer { $0.baseAddress! + p * half }
        for h in 0..<heads {
            let v = dx + p * stride + h * 2 * half
            for i in 0..<half {
                let a = v[i], b = v[i + half]
                v[i] = a * c[i] + b * s[i]
                v[i + half] = b * c[i] - a * s[i]
            }
        }
    }
}

// MARK: Causal grouped-query attention for one row and one key/value head group

/// Row-local views: q [L, qStride], k/v [L, kvStride]; heads `h0..<h0+n` share kv head `g`.
struct AttentionRow {
    let L: Int
    let headDim: Int
    let qStride: Int
    let kvStride: Int
    let scale: Float
}

/// P [L, L] = softmax(scale · Q_h K_gᵀ) with the causal mask (entries above the diagonal = 0).
func attentionProbs(_ P: FPtr, _ q: CPtr, _ k: CPtr, _ a: AttentionRow) {
    let L = a.L
    BLAS.gemm(transB: true, m: L, n: L, k: a.headDim, alpha: a.scale, q, lda: a.qStride, k, ldb: a.kvStride, P)
    for i in 0..<L {
        let row = P + i * L
        var mx = -Float.infinity
        for j in 0...i { mx = max(mx, row[j]) }
        var sum: Float = 0
        for j in 0...i { let e = expf(row[j] - mx); row[j] = e; sum += e }
        let inv = 1 / sum
        for j in 0...i { row[j] *= inv }
        for j in (i + 1)..<max(i + 1, L) { row[j] = 0 }
    }
}

/// out_h [L, headDim] (stride qStride) = P · V_g.
func attentionForward(_ out: FPtr, _ P: FPtr, _ q: CPtr, _ k: CPtr, _ v: CPtr, _ a: AttentionRow) {
    attentionProbs(P, q, k, a)
    BLAS.gemm(m: a.L, n: a.headDim, k: a.L, P, v, ldb: a.kvStride, out, ldc: a.qStride)
}

/// Given dOut_h, recomputes P and adds dQ_h (overwrites), dK_g and dV_g (accumulates).
/// P, dP: scratch [L, L].
func attentionBackward(_ dq: FPtr, _ dk: FPtr, _ dv: FPtr, _ dout: CPtr,
                       _ q: CPtr, _ k: CPtr, _ v: CPtr, _ P: FPtr, _ dP: FPtr, _ a: AttentionRow) {
    let L = a.L
    attentionProbs(P, q, k, a)
    // dV += Pᵀ · dOut ; dP = dOut · Vᵀ
    BLAS.gemm(transA: true, m: L, n: a.headDim, k: L, P, lda: L, dout, ldb: a.qStride, beta: 1, dv, ldc: a.kvStride)
    BLAS.gemm(transB: true, m: L, n: L, k: a.headDim, dout, lda: a.qStride, v, ldb: a.kvStride, dP)
    // dS = P ∘ (dP − rowsum(dP ∘ P)), then the scale of S = scale·QKᵀ.
    for i in 0..<L {
        let p = P + i * L, d = dP + i * L
        var s: Float = 0
        for j in 0...i { s += p[j] * d[j] }
        for j in 0...i { d[j] = p[j] * (d[j] - s) * a.scale }
        for j in (i + 1)..<max(i + 1, L) { d[j] = 0 }
    }
    // dQ = dS · K ; dK += dSᵀ · Q
    BLAS.gemm(m: L, n: a.headDim, k: L, dP, k, ldb: a.kvStride, dq, ldc: a.qStride)
    BLAS.gemm(transA: true, m: L, n: a.headDim, k: L, dP, lda: L, q, ldb: a.qStride, beta: 1, dk, ldc: a.kvStride)
}

// MARK: SwiGLU  h = silu(gate) · up

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

func swigluForward(_ h: FPtr, _ gate: CPtr, _ up: CPtr, n: Int) {
    parallelFor(n, minChunk: 16384) { range in
        for i in range { let g = gate[i]; h[i] = g * sigmoid(g) * up[i] }
    }
}

/// a += b over n elements.
func addInPlace(_ a: FPtr, _ b: CPtr, _ n: Int) {
    parallelFor(n, minChunk: 65536) { range in for i in range { a[i] += b[i] } }
}

/// Writes (not adds) dgate and dup from dh.
func swigluBackward(_ dgate: FPtr, _ dup: FPtr, _ dh: CPtr, _ gate: CPtr, _ up: CPtr, n: Int) {
    parallelFor(n, minChunk: 16384) { range in for i in range {
        let g = gate[i], s = sigmoid(g)
        let silu = g * s
        dup[i] = dh[i] * silu
        dgate[i] = dh[i] * up[i] * s * (1 + g * (1 - s))
    } }
}

// MARK: Cross-entropy over selected positions

/// For n hidden rows x [n, H] with targets, computes logits = x · lmHeadᵀ [n, V] into `logits`,
/// returns Σ NLL, and (when `dx` is given) writes dx [n, H] = scale · (softmax − onehot) · lmHead.
func crossEntropyForwardBackward(_ x: CPtr, targets: [Int32], lmHead: CPtr, V: Int, H: Int,
                                 logits: FPtr, nll: FPtr?, dx: FPtr?, scale: Float) -> Double {
    let n = targets.count
    pgemm(transB: true, m: n, n: V, k: H, x, lmHead, logits)
    // Per-position losses land in `losses` and are summed in order, so the total does not
    // depend on how positions were split across threads.
    var losses = [Double](repeating: 0, count: n)
    losses.withUnsafeMutableBufferPointer { lp in
        let lossOut = lp.baseAddress!
        parallelFor(n, minChunk: 8) { range in
            for r in range {
                let row = logits + r * V
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
                    for j in 0..<V { row[j] = expf(row[j] - mx) * inv * scale }
                    row[t] -= scale
                }
            }
        }
    }
    let total = losses.reduce(0, +)
    if let dx { pgemm(m: n, n: H, k: V, logits, lmHead, dx) }
    return total
}
