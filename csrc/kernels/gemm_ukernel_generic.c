/* Portable micro-kernel.  Written as fixed-size loops so the compiler keeps
 * the accumulators in vector registers: SSE2 on baseline x86-64, NEON on
 * aarch64 (6x8 = 12 four-wide accumulators fits both register files). */
#include "kernels/gemm.h"

#define GENERIC_MR 6
#define GENERIC_NR 8

/* B row k at packed_b + k * NR (packed) or at b + b_offsets[k] (rows). */
static inline void gemm_generic_body(int64_t kc, const float *packed_a, const float *packed_b,
                                     const int64_t *b_offsets, float *c, int64_t ldc,
                                     float alpha, float beta)
{
    float acc[GENERIC_MR][GENERIC_NR] = {{0.0f}};
    for (int64_t k = 0; k < kc; ++k) {
        const float *a = packed_a + k * GENERIC_MR;
        const float *b = b_offsets ? packed_b + b_offsets[k] : packed_b + k * GENERIC_NR;
        for (int i = 0; i < GENERIC_MR; ++i)
            for (int j = 0; j < GENERIC_NR; ++j)
                acc[i][j] += a[i] * b[j];
    }
    if (beta == 0.0f) {
        for (int i = 0; i < GENERIC_MR; ++i)
            for (int j = 0; j < GENERIC_NR; ++j)
                c[i * ldc + j] = alpha * acc[i][j];
    } else {
        for (int i = 0; i < GENERIC_MR; ++i)
            for (int j = 0; j < GENERIC_NR; ++j)
                c[i * ldc + j] = alpha * acc[i][j] + beta * c[i * ldc + j];
    }
}

static void gemm_ukernel_generic_6x8(int64_t kc, const float *packed_a, const float *packed_b,
                                     float *c, int64_t ldc, float alpha, float beta)
{
    gemm_generic_body(kc, packed_a, packed_b, NULL, c, ldc, alpha, beta);
}

static void gemm_ukernel_generic_6x8_rows(int64_t kc, const float *packed_a, const float *b,
                                          const int64_t *b_offsets, float *c, int64_t ldc,
                                          float alpha, float beta)
{
    gemm_generic_body(kc, packed_a, b, b_offsets, c, ldc, alpha, beta);
}

const an_gemm_ukernel an_gemm_ukernel_generic = {
    "generic_6x8", GENERIC_MR, GENERIC_NR, gemm_ukernel_generic_6x8, gemm_ukernel_generic_6x8_rows, NULL,
    NULL, NULL, 0};
