import CDNNL

/// oneDNN's failure, with its own status name.
public struct OneDNNError: Error, CustomStringConvertible, Sendable {
    public let routine: String
    public let status: Int32
    public init(routine: String, status: Int32) {
        self.routine = routine
        self.status = status
    }
    public var description: String { "oneDNN \(routine) failed: \(String(cString: ila_dnnl_status_name(status)))" }
}

/// oneDNN's GEMMs (Debian's libdnnl, OpenMP-threaded: one call uses every core). Matrices are
/// row-major; op(A) is [m, k], op(B) is [k, n], C [m, n], as in `BLAS.gemm`.
public enum OneDNN {
    /// C = alpha·op(A)·op(B) + beta·C in float32.
    @inlinable
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                             _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int) throws(OneDNNError) {
        let s = ila_dnnl_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int64(m), Int64(n), Int64(k), alpha,
                               a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
        if s != 0 { throw OneDNNError(routine: "sgemm", status: s) }
    }

    /// C (float32) = alpha·op(A)·op(B) + beta·C with A and B bfloat16 bit patterns; float32 accumulation.
    @inlinable
    public static func gemmBF16(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                _ a: UnsafePointer<UInt16>, lda: Int, _ b: UnsafePointer<UInt16>, ldb: Int,
                                beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int) throws(OneDNNError) {
        let s = ila_dnnl_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, Int64(m), Int64(n), Int64(k), alpha,
                                   a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
        if s != 0 { throw OneDNNError(routine: "bf16 matmul", status: s) }
    }

    /// The bf16 matmul implementation oneDNN has on this CPU, or nil ("unimplemented" without
    /// AVX512-BF16 / AMX in oneDNN 2.x).
    public static let bf16Implementation: String? = {
        var buf = [CChar](repeating: 0, count: 128)
        guard ila_dnnl_bf16_implementation(&buf, Int32(buf.count)) == 0 else { return nil }
        return String(cString: buf)
    }()

    /// Whether the CPU has AVX-512.
    public static let cpuHasAVX512: Bool = ila_cpu_has_avx512() != 0

    /// OpenMP threads oneDNN runs with.
    public static var threads: Int { Int(ila_dnnl_threads()) }

    public static var version: String { String(cString: ila_dnnl_version()) }
}
