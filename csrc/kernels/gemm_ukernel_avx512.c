/* AVX-512 micro-kernels: MR rows x 32 columns (two zmm per row), MR = 14 or 8.
 * 14 x 32 uses 28 accumulators + 2 B vectors; the A values are broadcast
 * straight from memory as FMA operands ({1to16}), so no register is spent on
 * them and all 32 zmm registers are in use without spilling.  Per k step it
 * issues 28 FMAs for 2 vector loads + 14 broadcasts, keeping both FMA ports
 * busy while the loads fit in the two load ports. */
#include "kernels/gemm.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX512_NR 32

#define AN_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

/* One body for every row count; `mr` is a compile-time constant in each
 * instantiation below, so the accumulators stay in registers. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
gemm_ukernel_avx512_body(const int mr, int64_t kc, const float *packed_a, const float *packed_b,
                         const int64_t *b_offsets, float *c, int64_t ldc, float alpha, float beta)
{
    __m512 acc[14][2];
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    /* The C tile is touched only at the end; start pulling it in now so the
     * write-back does not stall on memory. */
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
    const float *a = packed_a;
    const float *b = packed_b;
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
        __m512 b0, b1;
        if (b_offsets) { /* B read in place: row k anywhere, unaligned */
            b0 = _mm512_loadu_ps(packed_b + b_offsets[k]);
            b1 = _mm512_loadu_ps(packed_b + b_offsets[k] + 16);
        } else {
            b0 = _mm512_load_ps(b);
            b1 = _mm512_load_ps(b + 16);
        }
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += mr;
        b += AVX512_NR;
    }
    __m512 valpha = _mm512_set1_ps(alpha);
    if (beta == 0.0f) {
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) {
            _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(valpha, acc[i][0]));
            _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(valpha, acc[i][1]));
        }
    } else {
        __m512 vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) {
            float *row = c + i * ldc;
            __m512 c0 = _mm512_mul_ps(vbeta, _mm512_loadu_ps(row));
            __m512 c1 = _mm512_mul_ps(vbeta, _mm512_loadu_ps(row + 16));
            _mm512_storeu_ps(row, _mm512_fmadd_ps(valpha, acc[i][0], c0));
            _mm512_storeu_ps(row + 16, _mm512_fmadd_ps(valpha, acc[i][1], c1));
        }
    }
}

AN_TARGET_AVX512
static void gemm_ukernel_avx512_14x32(int64_t kc, const float *packed_a, const float *packed_b,
                                      float *c, int64_t ldc, float alpha, float beta)
{
    gemm_ukernel_avx512_body(14, kc, packed_a, packed_b, NULL, c, ldc, alpha, beta);
}

/* 8 x 32: 16 accumulators.  Fewer FMAs per broadcast than 14 x 32, but no
 * wasted rows when M is a multiple of 8 and not of 14 (16, 32, 64 output
 * channels); the driver picks it per call from M alone. */
AN_TARGET_AVX512
static void gemm_ukernel_avx512_8x32(int64_t kc, const float *packed_a, const float *packed_b,
                                     float *c, int64_t ldc, float alpha, float beta)
{
    gemm_ukernel_avx512_body(8, kc, packed_a, packed_b, NULL, c, ldc, alpha, beta);
}

AN_TARGET_AVX512
static void gemm_ukernel_avx512_14x32_rows(int64_t kc, const float *packed_a, const float *b,
                                           const int64_t *b_offsets, float *c, int64_t ldc,
                                           float alpha, float beta)
{
    gemm_ukernel_avx512_body(14, kc, packed_a, b, b_offsets, c, ldc, alpha, beta);
}

AN_TARGET_AVX512
static void gemm_ukernel_avx512_8x32_rows(int64_t kc, const float *packed_a, const float *b,
                                          const int64_t *b_offsets, float *c, int64_t ldc,
                                          float alpha, float beta)
{
    gemm_ukernel_avx512_body(8, kc, packed_a, b, b_offsets, c, ldc, alpha, beta);
}

const an_gemm_ukernel an_gemm_ukernel_avx512 = {
    "avx512_14x32", 14, AVX512_NR, gemm_ukernel_avx512_14x32, gemm_ukernel_avx512_14x32_rows};
const an_gemm_ukernel an_gemm_ukernel_avx512_8x32 = {
    "avx512_8x32", 8, AVX512_NR, gemm_ukernel_avx512_8x32, gemm_ukernel_avx512_8x32_rows};

#endif
