import Foundation
import ILABLAS
import ILAModel

/// Which library runs the engine's GEMMs.
public enum GEMMBackend: String, CaseIterable, Sendable {
    /// oneDNN where the CPU has AVX-512 (its float32 GEMM is the faster there), OpenBLAS otherwise
    /// (bench-engine's gemm_gflops). A rule of the CPU alone, so a machine always computes the same sums.
    case auto
    /// Row blocks of C split across the engine's threads, one single-threaded OpenBLAS call each.
    case openblas
    /// One OpenMP-threaded oneDNN call per GEMM.
    case onednn

    /// The library `auto` stands for on this CPU.
    public var resolved: GEMMBackend { self == .auto ? (OneDNN.cpuHasAVX512 ? .onednn : .openblas) : self }
}

/// The inputs of the engine's large GEMMs (linear layers, lm_head, the full-delta weight gradient).
public enum GEMMPrecision: String, CaseIterable, Sendable {
    /// float32 inputs and arithmetic: exact against PyTorch's float32.
    case float32
    /// Inputs rounded to bfloat16 (round to nearest even), products and sums in float32 — oneDNN's
    /// bf16 matmul where the CPU has one, otherwise the same numbers from float32 GEMMs of the
    /// rounded values (a product of two bf16 values is exact in float32).
    case bf16
}

/// How the engine multiplies: backend and precision.
public struct GEMMOptions: Sendable, Equatable {
    public var backend: GEMMBackend
    public var precision: GEMMPrecision
    public init(backend: GEMMBackend = .auto, precision: GEMMPrecision = .float32) {
        self.backend = backend
        self.precision = precision
    }

    /// One line on what runs: "openblas float32", "onednn bf16 (brg:avx512_core_bf16)", ...
    public var summary: String {
        let b = backend.resolved.rawValue
        guard precision == .bf16 else { return "\(b) float32" }
        if let impl = OneDNN.bf16Implementation { return "onednn bf16 (\(impl))" }
        return "\(b) bf16 inputs emulated (this CPU has no bf16 GEMM: no AVX512-BF16 or AMX)"
    }
}

/// The GEMMs inside the engine's own parallel loops (attention, per row and head): float32 on
/// single-threaded OpenBLAS whatever the backend, since an OpenMP team per call would
/// oversubscribe the cores the loop already occupies.
@inline(__always)
func serialGEMM(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                _ a: CPtr, lda: Int? = nil, _ b: CPtr, ldb: Int? = nil, beta: Float = 0, _ c: FPtr, ldc: Int? = nil) {
    BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb, beta: beta, c, ldc: ldc)
}

/// A growable buffer (bf16 bit patterns, or the emulated bf16 path's rounded float32 copies).
final class GrowableBuffer<Element> {
    private(set) var p: UnsafeMutablePointer<Element>
    private(set) var count: Int
    init() { count = 0; p = .allocate(capacity: 1) }
    deinit { p.deallocate() }
    /// Makes room for n values (contents not kept).
    func reserve(_ n: Int) {
        guard n > count else { return }
        p.deallocate()
        p = .allocate(capacity: n)
        count = n
    }
}

/// float32 → bfloat16, round to nearest even (NaN stays NaN).
@inline(__always) func bf16Bits(_ x: Float) -> UInt16 {
    let b = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: b >> 16) | 0x40 }
    return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
}

@inline(__always) func bf16Rounded(_ x: Float) -> Float { Float(bitPattern: UInt32(bf16Bits(x)) << 16) }

/// Copies a [rows, cols] block (row stride ld) into dst [rows, cols] packed, as bf16 bits.
func packBF16(_ dst: UnsafeMutablePointer<UInt16>, _ src: CPtr, rows: Int, cols: Int, ld: Int) {
    parallelFor(rows, minChunk: max(1, 65536 / max(cols, 1))) { range in
        for r in range {
            let s = src + r * ld, d = dst + r * cols
            for j in 0..<cols { d[j] = bf16Bits(s[j]) }
        }
    }
}

/// Widens a [rows, cols] block of bf16 bits (row stride ld) into dst [rows, cols] packed (exact).
func widenBF16(_ dst: FPtr, _ src: UnsafePointer<UInt16>, rows: Int, cols: Int, ld: Int) {
    parallelFor(rows, minChunk: max(1, 65536 / max(cols, 1))) { range in
        for r in range {
            let s = src + r * ld, d = dst + r * cols
            for j in 0..<cols { d[j] = Float(bitPattern: UInt32(s[j]) << 16) }
        }
    }
}

/// Copies a [rows, cols] block (row stride ld) into dst packed, each value rounded to bf16.
func packRounded(_ dst: FPtr, _ src: CPtr, rows: Int, cols: Int, ld: Int) {
    parallelFor(rows, minChunk: max(1, 65536 / max(cols, 1))) { range in
        for r in range {
            let s = src + r * ld, d = dst + r * cols
            for j in 0..<cols { d[j] = bf16Rounded(s[j]) }
        }
    }
}

/// The one place every GEMM of the engine goes through, and the scratch its weights are widened
/// into. Used from the engine's calling thread only (its scratch is not shared across threads).
final class GEMMSeam: @unchecked Sendable {
    let options: GEMMOptions
    let backend: GEMMBackend
    let precision: GEMMPrecision
    /// oneDNN runs the bf16 GEMMs natively (else they are emulated in float32).
    let nativeBF16: Bool
    /// float32 tile scratch: bf16/f16 weights and W0 + γΔ widened a tile of rows at a time.
    let tile: FloatBuffer
    private let tileBF16 = GrowableBuffer<UInt16>()
    private let inputA = GrowableBuffer<UInt16>(), inputB = GrowableBuffer<UInt16>()
    private let roundedA = GrowableBuffer<Float>(), roundedB = GrowableBuffer<Float>()
    private var warned = false

    init(_ options: GEMMOptions, tileFloats: Int) {
        self.options = options
        backend = options.backend.resolved
        precision = options.precision
        nativeBF16 = options.precision == .bf16 && OneDNN.bf16Implementation != nil
        tile = FloatBuffer(tileFloats)
    }

    /// A oneDNN failure (out of memory, an unimplemented case) falls back to OpenBLAS once warned.
    private func warnOnce(_ e: OneDNNError) {
        guard !warned else { return }
        warned = true
        FileHandle.standardError.write(Data("ila: \(e); using OpenBLAS for such GEMMs\n".utf8))
    }

    /// C = alpha·op(A)·op(B) + beta·C in float32 on the backend; op(A) [m, k], op(B) [k, n].
    func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
              _ a: CPtr, lda: Int? = nil, _ b: CPtr, ldb: Int? = nil, beta: Float = 0, _ c: FPtr, ldc: Int? = nil) {
        let lda = lda ?? (transA ? m : k), ldb = ldb ?? (transB ? k : n), ldc = ldc ?? n
        if m == 0 || n == 0 { return }
        if backend == .onednn && k > 0 {
            do {
                try OneDNN.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb,
                                 beta: beta, c, ldc: ldc)
                return
            } catch { warnOnce(error) }
        }
        splitGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb,
                  beta: beta, c, ldc: ldc)
    }

    /// OpenBLAS: rows of C split across the engine's threads, each chunk one single-threaded call
    /// (the engine runs OpenBLAS with one thread, so BLAS threads never spin against its own).
    private func splitGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, _ a: CPtr, lda: Int,
                           _ b: CPtr, ldb: Int, beta: Float, _ c: FPtr, ldc: Int) {
        // Below ~1 MFLOP per chunk the split costs more than it saves.
        let minRows = max(1, 1_000_000 / max(1, 2 * n * k))
        parallelFor(m, minChunk: minRows) { rows in
            let aOff = transA ? rows.lowerBound : rows.lowerBound * lda
            BLAS.gemm(transA: transA, transB: transB, m: rows.count, n: n, k: k, alpha: alpha, a + aOff, lda: lda,
                      b, ldb: ldb, beta: beta, c + rows.lowerBound * ldc, ldc: ldc)
        }
    }

    /// As `gemm`, with both inputs at the run's precision (rounded to bf16 in bf16 mode).
    func gemmAtPrecision(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                         _ a: CPtr, lda: Int? = nil, _ b: CPtr, ldb: Int? = nil, beta: Float = 0, _ c: FPtr,
                         ldc: Int? = nil) {
        guard precision == .bf16, m > 0, n > 0, k > 0 else {
            gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb, beta: beta, c, ldc: ldc)
            return
        }
        // Stored shapes: A is [m, k] (or [k, m] when transposed), B is [k, n] (or [n, k]).
        let (ar, ac) = transA ? (k, m) : (m, k), (br, bc) = transB ? (n, k) : (k, n)
        let lda = lda ?? ac, ldb = ldb ?? bc
        if nativeBF16 {
            inputA.reserve(ar * ac); inputB.reserve(br * bc)
            packBF16(inputA.p, a, rows: ar, cols: ac, ld: lda)
            packBF16(inputB.p, b, rows: br, cols: bc, ld: ldb)
            bf16GEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, inputA.p, lda: ac, inputB.p,
                     ldb: bc, beta: beta, c, ldc: ldc ?? n)
            return
        }
        roundedA.reserve(ar * ac); roundedB.reserve(br * bc)
        packRounded(roundedA.p, a, rows: ar, cols: ac, ld: lda)
        packRounded(roundedB.p, b, rows: br, cols: bc, ld: ldb)
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, roundedA.p, lda: ac, roundedB.p, ldb: bc,
             beta: beta, c, ldc: ldc)
    }

    /// oneDNN's bf16 matmul of bf16 inputs; if it fails (after one warning), the same product from
    /// the inputs widened to float32 (exactly) on the float32 backend.
    private func bf16GEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                          _ a: UnsafePointer<UInt16>, lda: Int, _ b: UnsafePointer<UInt16>, ldb: Int, beta: Float,
                          _ c: FPtr, ldc: Int) {
        do {
            try OneDNN.gemmBF16(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb,
                                beta: beta, c, ldc: ldc)
            return
        } catch { warnOnce(error) }
        let (ar, ac) = transA ? (k, m) : (m, k), (br, bc) = transB ? (n, k) : (k, n)
        roundedA.reserve(ar * ac); roundedB.reserve(br * bc)
        widenBF16(roundedA.p, a, rows: ar, cols: ac, ld: lda)
        widenBF16(roundedB.p, b, rows: br, cols: bc, ld: ldb)
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, roundedA.p, lda: ac, roundedB.p, ldb: bc,
             beta: beta, c, ldc: ldc)
    }

    // MARK: linear layers: x·Wᵀ and dY·W with W = W0 (+ γΔ), tile by tile

    /// Calls `body(rows, tile)` over row tiles of W + γΔ, each widened into the tile scratch (as
    /// many rows as fit); a float32 W without delta is passed whole, in place.
    private func forEachTile(_ e: EffectiveWeight, _ body: (Range<Int>, CPtr) -> Void) {
        if let p = e.w.float32, e.delta == nil { body(0..<e.w.rows, p); return }
        let rows = e.w.rows, cols = e.w.cols
        let tileRows = max(1, min(rows, tile.count / max(cols, 1)))
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + tileRows)
            parallelFor(r1 - r0, minChunk: max(1, 65536 / max(cols, 1))) { rr in
                let dst = tile.p + rr.lowerBound * cols
                e.w.widen(rows: (r0 + rr.lowerBound)..<(r0 + rr.upperBound), into: dst)
                guard let d = e.delta else { return }
                let g = e.gamma
                if let f = d.float32 {
                    let src = f + (r0 + rr.lowerBound) * cols
                    for i in 0..<(rr.count * cols) { dst[i] = dst[i] + g * src[i] }
                } else {
                    // A float16 Δ, widened a row at a time.
                    let row = UnsafeMutablePointer<Float>.allocate(capacity: cols)
                    defer { row.deallocate() }
                    for r in rr {
                        d.widen(rows: (r0 + r)..<(r0 + r + 1), into: row)
                        let o = tile.p + r * cols
                        for j in 0..<cols { o[j] = o[j] + g * row[j] }
                    }
                }
            }
            body(r0..<r1, UnsafePointer(tile.p))
            r0 = r1
        }
    }

    /// In native bf16 mode: `body(rows, tile)` over bf16 row tiles of W + γΔ; a bf16 W without
    /// delta is passed whole, as stored.
    private func forEachBF16Tile(_ e: EffectiveWeight, _ body: (Range<Int>, UnsafePointer<UInt16>) -> Void) {
        if let bits = e.w.bfloat16, e.delta == nil { body(0..<e.w.rows, bits); return }
        let cols = e.w.cols
        forEachTile(e) { r, t in
            tileBF16.reserve(r.count * cols)
            packBF16(tileBF16.p, t, rows: r.count, cols: cols, ld: cols)
            body(r, UnsafePointer(tileBF16.p))
        }
    }

    /// out [T, O] (row stride ldOut) = x [T, I] · Wᵀ (+ bias [O]); with `accumulate` adds to out.
    func linearForward(_ out: FPtr, ldOut: Int, _ x: CPtr, _ w: EffectiveWeight, _ bias: CPtr?, T: Int,
                       accumulate: Bool = false) {
        let I = w.w.cols, O = w.w.rows
        let beta: Float = accumulate ? 1 : 0
        switch (precision, nativeBF16) {
        case (.float32, _):
            forEachTile(w) { r, tile in
                gemm(transB: true, m: T, n: r.count, k: I, x, tile, beta: beta, out + r.lowerBound, ldc: ldOut)
            }
        case (.bf16, true):
            inputA.reserve(T * I)
            packBF16(inputA.p, x, rows: T, cols: I, ld: I)
            forEachBF16Tile(w) { r, tile in
                bf16GEMM(transA: false, transB: true, m: T, n: r.count, k: I, alpha: 1, inputA.p, lda: I, tile, ldb: I,
                         beta: beta, out + r.lowerBound, ldc: ldOut)
            }
        case (.bf16, false):
            emulatedForward(out, ldOut: ldOut, x, w, T: T, beta: beta)
        }
        if let bias {
            parallelFor(T, minChunk: 256) { range in
                for t in range { let o = out + t * ldOut; for j in 0..<O { o[j] += bias[j] } }
            }
        }
    }

    /// bf16 numbers from float32 GEMMs: x and each tile rounded to bf16 first.
    private func emulatedForward(_ out: FPtr, ldOut: Int, _ x: CPtr, _ w: EffectiveWeight, T: Int, beta: Float) {
        let I = w.w.cols
        roundedA.reserve(T * I)
        packRounded(roundedA.p, x, rows: T, cols: I, ld: I)
        forEachTile(w) { r, tile in
            roundedB.reserve(r.count * I)
            packRounded(roundedB.p, tile, rows: r.count, cols: I, ld: I)
            gemm(transB: true, m: T, n: r.count, k: I, roundedA.p, roundedB.p, beta: beta, out + r.lowerBound, ldc: ldOut)
        }
    }

    /// dx [T, I] += dout [T, O] (row stride ldOut) · W [O, I].
    func linearBackwardInput(_ dx: FPtr, _ dout: CPtr, ldOut: Int, _ w: EffectiveWeight, T: Int) {
        let I = w.w.cols, O = w.w.rows
        switch (precision, nativeBF16) {
        case (.float32, _):
            forEachTile(w) { r, tile in
                gemm(m: T, n: I, k: r.count, dout + r.lowerBound, lda: ldOut, tile, beta: 1, dx)
            }
        case (.bf16, true):
            inputA.reserve(T * O)
            packBF16(inputA.p, dout, rows: T, cols: O, ld: ldOut)
            forEachBF16Tile(w) { r, tile in
                bf16GEMM(transA: false, transB: false, m: T, n: I, k: r.count, alpha: 1, inputA.p + r.lowerBound, lda: O,
                         tile, ldb: I, beta: 1, dx, ldc: I)
            }
        case (.bf16, false):
            emulatedBackward(dx, dout, ldOut: ldOut, w, T: T)
        }
    }

    private func emulatedBackward(_ dx: FPtr, _ dout: CPtr, ldOut: Int, _ w: EffectiveWeight, T: Int) {
        let I = w.w.cols, O = w.w.rows
        roundedA.reserve(T * O)
        packRounded(roundedA.p, dout, rows: T, cols: O, ld: ldOut)
        forEachTile(w) { r, tile in
            roundedB.reserve(r.count * I)
            packRounded(roundedB.p, tile, rows: r.count, cols: I, ld: I)
            gemm(m: T, n: I, k: r.count, roundedA.p + r.lowerBound, lda: O, roundedB.p, beta: 1, dx)
        }
    }
}

/// The matrix a linear op multiplies by: W (float32, bf16 or f16) plus γ·Δ when a full delta
/// is masked in. Never materialised as a whole: tiles of rows are widened as GEMMs use them.
struct EffectiveWeight {
    let w: WeightMatrix
    /// Δ [rows, cols] (float32 or float16), or nil.
    let delta: WeightMatrix?
    let gamma: Float
}

extension WeightMatrix {
    /// ⟨self, x⟩ over all values, x [rows, cols] float32; float16/bf16 widened row by row.
    func dot(_ x: CPtr) -> Double {
        if let f = float32 { return Double(BLAS.dot(count, f, x)) }
        let row = UnsafeMutablePointer<Float>.allocate(capacity: max(cols, 1))
        defer { row.deallocate() }
        var total = 0.0
        for r in 0..<rows {
            widen(rows: r..<(r + 1), into: row)
            total += Double(BLAS.dot(cols, row, x + r * cols))
        }
        return total
    }
}
