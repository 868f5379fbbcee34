#define _GNU_SOURCE
#include "cdnnl.h"
#include <oneapi/dnnl/dnnl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static dnnl_status_t init_status = dnnl_success;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
    init_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (init_status == dnnl_success) init_status = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
}

int ila_dnnl_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc) {
    return (int)dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#define CHECK(x) do { s = (x); if (s != dnnl_success) goto done; } while (0)

int ila_dnnl_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                       float *c, int64_t ldc) {
    pthread_once(&once, init);
    if (init_status != dnnl_success) return (int)init_status;
    dnnl_status_t s = dnnl_success;
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    // Row-major op(A)[i, p] is a[i·lda + p], or a[p·lda + i] when transposed; likewise B.
    dnnl_dims_t a_dims = {m, k}, b_dims = {k, n}, c_dims = {m, n};
    dnnl_dims_t a_strides = {trans_a ? 1 : lda, trans_a ? lda : 1};
    dnnl_dims_t b_strides = {trans_b ? 1 : ldb, trans_b ? ldb : 1};
    dnnl_dims_t c_strides = {ldc, 1};
    CHECK(dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_strides));
    CHECK(dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, b_strides));
    CHECK(dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides));
    CHECK(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md));
    CHECK(dnnl_primitive_attr_create(&attr));
    if (alpha != 1.0f) CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha));
    if (beta != 0.0f) {
        CHECK(dnnl_post_ops_create(&post_ops));
        CHECK(dnnl_post_ops_append_sum(post_ops, beta));
        CHECK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    }
    CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL));
    CHECK(dnnl_primitive_create(&prim, pd));
    CHECK(dnnl_memory_create(&am, &a_md, engine, (void *)a));
    CHECK(dnnl_memory_create(&bm, &b_md, engine, (void *)b));
    CHECK(dnnl_memory_create(&cm, &c_md, engine, (void *)c));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    CHECK(dnnl_primitive_execute(prim, stream, 3, args));
    CHECK(dnnl_stream_wait(stream));
done:
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post_ops) dnnl_post_ops_destroy(post_ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return (int)s;
}

int ila_dnnl_bf16_implementation(char *buf, int size) {
    pthread_once(&once, init);
    if (init_status != dnnl_success) return (int)init_status;
    dnnl_status_t s = dnnl_success;
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_dims_t a_dims = {256, 256}, b_dims = {256, 256}, c_dims = {256, 256};
    CHECK(dnnl_memory_desc_init_by_tag(&a_md, 2, a_dims, dnnl_bf16, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&b_md, 2, b_dims, dnnl_bf16, dnnl_ba));
    CHECK(dnnl_memory_desc_init_by_tag(&c_md, 2, c_dims, dnnl_f32, dnnl_ab));
    CHECK(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md));
    CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL));
    const char *name = NULL;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name));
    snprintf(buf, (size_t)size, "%s", name ? name : "");
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    return (int)s;
}

int ila_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

const char *ila_dnnl_status_name(int status) {
    switch ((dnnl_status_t)status) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out_of_memory";
    case dnnl_invalid_arguments: return "invalid_arguments";
    case dnnl_unimplemented: return "unimplemented";
    case dnnl_iterator_ends: return "iterator_ends";
    case dnnl_runtime_error: return "runtime_error";
    case dnnl_not_required: return "not_required";
    default: return "unknown status";
    }
}

int ila_dnnl_threads(void) {
    // oneDNN sizes its OpenMP team by omp_get_max_threads(); query it without an omp.h dependency.
    // libdnnl brings libgomp; look its symbol up rather than link OpenMP ourselves.
    int (*max_threads)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    return max_threads ? max_threads() : 1;
}

const char *ila_dnnl_version(void) {
    static char text[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(text, sizeof text, "%d.%d.%d", v->major, v->minor, v->patch);
    return text;
}
