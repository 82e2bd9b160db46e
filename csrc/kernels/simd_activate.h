/* The fused activations on a 16-lane AVX-512 or an 8-lane AVX2 vector
 * (AN_GEMM_ACT_* of kernels/gemm.h), with an_epilogue_rows' compares:
 * x <= 0 -> +0 (NaN passes, -0 becomes +0), then x >= 6 -> 6 for relu6; so
 * the kernels that use them write the bits the GEMM's epilogue would. */
#ifndef APPEALNET_KERNELS_SIMD_ACTIVATE_H
#define APPEALNET_KERNELS_SIMD_ACTIVATE_H

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "kernels/gemm.h"
#include "kernels/isa_variants.h"

AN_TARGET_AVX512 static inline __attribute__((always_inline)) __m512 an_avx512_activate(__m512 r,
                                                                                      int act)
{
    const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
    if (act != AN_GEMM_ACT_NONE)
        r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(r, zero, _CMP_LE_OQ), zero);
    if (act == AN_GEMM_ACT_RELU6)
        r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(r, six, _CMP_GE_OQ), six);
    return r;
}

AN_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 an_avx2_activate(__m256 r, int act)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    if (act != AN_GEMM_ACT_NONE)
        r = _mm256_blendv_ps(r, zero, _mm256_cmp_ps(r, zero, _CMP_LE_OQ));
    if (act == AN_GEMM_ACT_RELU6)
        r = _mm256_blendv_ps(r, six, _mm256_cmp_ps(r, six, _CMP_GE_OQ));
    return r;
}
#endif

#endif /* APPEALNET_KERNELS_SIMD_ACTIVATE_H */
