#ifndef ILA_CDNNL_H
#define ILA_CDNNL_H
#include <stdint.h>

// A small C face of oneDNN (Debian's libdnnl-dev) for the engine's GEMMs: its C API passes
// descriptors as large structs and handles as macros' typedefs, which this keeps out of Swift.
// Matrices are row-major; op(A) is [m, k], op(B) is [k, n], C is [m, n]. Returns 0 on success,
// otherwise oneDNN's dnnl_status_t, whose name ila_dnnl_status_name gives.

/// C = alpha·op(A)·op(B) + beta·C in float32 (dnnl_sgemm, multi-threaded with OpenMP).
int ila_dnnl_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc);

/// C (float32) = alpha·op(A)·op(B) + beta·C with A, B in bfloat16 (bit patterns), float32
/// accumulation (the matmul primitive; AVX512-BF16 or AMX where the CPU has them).
int ila_dnnl_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                       float *c, int64_t ldc);

/// The implementation oneDNN picks for a bf16 × bf16 → f32 matmul of this machine ("brg:avx512_core_bf16",
/// "ref:any", ...), written into buf; returns 0, or the status when there is none ("unimplemented").
int ila_dnnl_bf16_implementation(char *buf, int size);

/// Whether the CPU has AVX-512 (F), where oneDNN's float32 GEMM outruns OpenBLAS's Haswell kernels.
int ila_cpu_has_avx512(void);

/// oneDNN's name of a status code ("invalid_arguments", "unimplemented", ...).
const char *ila_dnnl_status_name(int status);

/// Threads oneDNN runs with (OpenMP's max threads).
int ila_dnnl_threads(void);

/// "major.minor.patch" of the loaded oneDNN.
const char *ila_dnnl_version(void);
#endif
