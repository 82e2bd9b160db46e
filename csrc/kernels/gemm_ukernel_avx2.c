/* AVX2 micro-kernel: 6 rows x 16 columns (two ymm per row).  12 accumulators
 * + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers; 12 FMAs per
 * 2 loads + 6 broadcasts per k step. */
#include "kernels/gemm.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX2_MR 6
#define AVX2_NR 16

#define AN_TARGET_AVX2 __attribute__((target("avx2,fma")))

/* The epilogue of one vector of row i, as an_epilogue_rows computes it:
 * + row_bias[i], + the residual, then the activation.  x <= 0 -> 0 and
 * x >= 6 -> 6 are compares, not a max, so NaN passes and -0 becomes +0. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
finish_vector(__m256 v, const float *row_bias, int i, const float *residual, int act)
{
    if (row_bias) v = _mm256_add_ps(v, _mm256_set1_ps(row_bias[i]));
    if (residual) v = _mm256_add_ps(v, _mm256_loadu_ps(residual));
    if (act != AN_GEMM_ACT_NONE)
        v = _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LE_OQ));
    if (act == AN_GEMM_ACT_RELU6)
        v = _mm256_blendv_ps(v, _mm256_set1_ps(6.0f), _mm256_cmp_ps(v, _mm256_set1_ps(6.0f), _CMP_GE_OQ));
    return v;
}

/* B row k at packed_b + k * NR (packed, aligned) or at b + b_offsets[k].
 * With `epilogue` (alpha 1) the tile leaves through finish_vector: the
 * bias, residual and activation pass of the driver, fused into the store. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
gemm_avx2_body(int64_t kc, const float *packed_a, const float *packed_b, const int64_t *b_offsets,
               float *c, int64_t ldc, float alpha, float beta, const int epilogue,
               const float *row_bias, const float *residual, int64_t ldr, int act)
{
    __m256 acc[AVX2_MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < AVX2_MR; ++i) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
#pragma GCC unroll 8
    for (int i = 0; i < AVX2_MR; ++i) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
    const float *a = packed_a;
    const float *b = packed_b;
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
        __m256 b0, b1;
        if (b_offsets) {
            b0 = _mm256_loadu_ps(packed_b + b_offsets[k]);
            b1 = _mm256_loadu_ps(packed_b + b_offsets[k] + 8);
        } else {
            b0 = _mm256_load_ps(b);
            b1 = _mm256_load_ps(b + 8);
        }
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += AVX2_MR;
        b += AVX2_NR;
    }
    if (epilogue) { /* alpha is 1: C + beta * C_old rounds as the FMA below does */
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            float *row = c + i * ldc;
            for (int h = 0; h < 2; ++h) {
                __m256 v = acc[i][h];
                if (beta != 0.0f)
                    v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(row + 8 * h)));
                v = finish_vector(v, row_bias, i, residual ? residual + i * ldr + 8 * h : NULL, act);
                _mm256_storeu_ps(row + 8 * h, v);
            }
        }
        return;
    }
    __m256 valpha = _mm256_set1_ps(alpha);
    if (beta == 0.0f) {
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            _mm256_storeu_ps(c + i * ldc, _mm256_mul_ps(valpha, acc[i][0]));
            _mm256_storeu_ps(c + i * ldc + 8, _mm256_mul_ps(valpha, acc[i][1]));
        }
    } else {
        __m256 vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            float *row = c + i * ldc;
            __m256 c0 = _mm256_mul_ps(vbeta, _mm256_loadu_ps(row));
            __m256 c1 = _mm256_mul_ps(vbeta, _mm256_loadu_ps(row + 8));
            _mm256_storeu_ps(row, _mm256_fmadd_ps(valpha, acc[i][0], c0));
            _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(valpha, acc[i][1], c1));
        }
    }
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16(int64_t kc, const float *packed_a, const float *packed_b,
                                   float *c, int64_t ldc, float alpha, float beta)
{
    gemm_avx2_body(kc, packed_a, packed_b, NULL, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16_rows(int64_t kc, const float *packed_a, const float *b,
                                        const int64_t *b_offsets, float *c, int64_t ldc,
                                        float alpha, float beta)
{
    gemm_avx2_body(kc, packed_a, b, b_offsets, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16_epilogue(int64_t kc, const float *packed_a, const float *b,
                                            const int64_t *b_offsets, float *c, int64_t ldc,
                                            float beta, const float *row_bias,
                                            const float *residual, int64_t ldr, int act)
{
    if (b_offsets)
        gemm_avx2_body(kc, packed_a, b, b_offsets, c, ldc, 1.0f, beta, 1, row_bias, residual, ldr, act);
    else
        gemm_avx2_body(kc, packed_a, b, NULL, c, ldc, 1.0f, beta, 1, row_bias, residual, ldr, act);
}

const an_gemm_ukernel an_gemm_ukernel_avx2 = {
    "avx2_6x16", AVX2_MR, AVX2_NR, gemm_ukernel_avx2_6x16, gemm_ukernel_avx2_6x16_rows,
    gemm_ukernel_avx2_6x16_epilogue};

#endif
