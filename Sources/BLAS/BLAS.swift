import COpenBLAS
import Foundation

/// A LAPACK routine's failure, with its own `info` code.
public struct LAPACKError: Error, CustomStringConvertible, Sendable {
    public let routine: String
    public let info: Int
    public var description: String { "LAPACK \(routine) failed (info \(info)\(info > 0 ? ": did not converge" : ": bad argument"))" }
}

/// Every BLAS and LAPACK call of the project goes through here. Matrices are row-major.
public enum BLAS {
    /// C[m, n] = alpha · op(A) · op(B) + beta · C, row-major; op(A) is [m, k], op(B) is [k, n].
    /// `lda`, `ldb`, `ldc` default to the packed row lengths.
    @inlinable
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int? = nil,
                            _ b: UnsafePointer<Float>, ldb: Int? = nil,
                            beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            // BLAS leaves C untouched for k = 0 only when beta = 1; be explicit.
            for i in 0..<(m * (ldc ?? n)) { c[i] = beta == 0 ? 0 : c[i] * beta }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda ?? (transA ? m : k)), b, Int32(ldb ?? (transB ? k : n)),
                    beta, c, Int32(ldc ?? n))
    }

    /// y = alpha · x + y
    @inlinable
    public static func axpy(_ n: Int, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(Int32(n), alpha, x, 1, y, 1)
    }

    @inlinable
    public static func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
        cblas_sdot(Int32(n), x, 1, y, 1)
    }

    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(newValue)) }
    }

    /// Thin SVD of a row-major [m, n] matrix: returns U [m, p], S [p], Vt [p, n] (row-major),
    /// p = min(m, n), singular values descending. Uses LAPACK sgesdd from OpenBLAS.
    public static func svd(_ a: [Float], m: Int, n: Int) throws -> (u: [Float], s: [Float], vt: [Float]) {
        // Row-major A is column-major Aᵀ [n, m]. SVD of Aᵀ = V S Uᵀ: LAPACK's U is our V and its
        // Vt is our Uᵀ, and both come back column-major, which reads as row-major transposes.
        var work = a
        let p = min(m, n)
        var s = [Float](repeating: 0, count: p)
        var lu = [Float](repeating: 0, count: n * p)   // column-major [n, p] = our Vt row-major [p, n]
        var lvt = [Float](repeating: 0, count: p * m)  // column-major [p, m] = our U row-major [m, p]
        var jobz = Int8(UInt8(ascii: "S"))
        var M = Int32(n), N = Int32(m), lda = Int32(n), ldu = Int32(n), ldvt = Int32(p)
        var iwork = [Int32](repeating: 0, count: 8 * p)
        var info: Int32 = 0
        var lwork: Int32 = -1
        var query: Float = 0, dummy: Float = 0
        sgesdd_(&jobz, &M, &N, &work, &lda, &s, &lu, &ldu, &dummy, &ldvt, &query, &lwork, &iwork, &info)
        lwork = Int32(query) + 1
        var w = [Float](repeating: 0, count: Int(lwork))
        sgesdd_(&jobz, &M, &N, &work, &lda, &s, &lu, &ldu, &lvt, &ldvt, &w, &lwork, &iwork, &info)
        guard info == 0 else { throw LAPACKError(routine: "sgesdd", info: Int(info)) }
        return (lvt, s, lu)
    }

    /// Singular values of a row-major [m, n] matrix, descending (min(m, n) of them), without the
    /// singular vectors: LAPACK sgesdd with jobz = 'N', as torch.linalg.svdvals computes them for
    /// float32. `a` is overwritten.
    public static func singularValues(_ a: inout [Float], m: Int, n: Int) throws -> [Float] {
        // Row-major A is column-major Aᵀ [n, m]; Aᵀ has the same singular values.
        let p = min(m, n)
        var s = [Float](repeating: 0, count: p)
        var jobz = Int8(UInt8(ascii: "N"))
        var M = Int32(n), N = Int32(m), lda = Int32(max(1, n)), one: Int32 = 1
        var iwork = [Int32](repeating: 0, count: 8 * p)
        var info: Int32 = 0
        var lwork: Int32 = -1
        var query: Float = 0, dummyU: Float = 0, dummyVt: Float = 0
        sgesdd_(&jobz, &M, &N, &a, &lda, &s, &dummyU, &one, &dummyVt, &one, &query, &lwork, &iwork, &info)
        guard info == 0 else { throw LAPACKError(routine: "sgesdd", info: Int(info)) }
        lwork = Int32(query) + 1
        var w = [Float](repeating: 0, count: Int(lwork))
        sgesdd_(&jobz, &M, &N, &a, &lda, &s, &dummyU, &one, &dummyVt, &one, &w, &lwork, &iwork, &info)
        guard info == 0 else { throw LAPACKError(routine: "sgesdd", info: Int(info)) }
        return s
    }
}
