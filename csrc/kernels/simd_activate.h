/* The fused activations on a 16-lane AVX-512 or an 8-lane AVX2 vector
 * (AN_GEMM_ACT_* of kernels/gemm.h) with an_epilogue_rows' results:
 * x <= 0 -> +0 (NaN passes, -0 becomes +0), then x >= 6 -> 6 for relu6; so
 * the kernels that use them write the bits the GEMM's epilogue would.
 * max(0, x) and min(6, x) return their second operand, x, for NaN, and
 * max keeps a -0 that the + 0 then makes +0 (it leaves every other value
 * as it is).  Three operations for relu6 instead of two compares into mask
 * registers and two blends: a 24 -> 144 1x1 layer with bias and relu6 on a
 * 32x32 plane (one Zen 5 thread) spent 3.8 us of its 35.8 in the
 * activation with the compares, 1.9 with these. */
#ifndef APPEALNET_KERNELS_SIMD_ACTIVATE_H
#define APPEALNET_KERNELS_SIMD_ACTIVATE_H

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "kernels/gemm.h"
#include "kernels/isa_variants.h"

AN_TARGET_AVX512 static inline __attribute__((always_inline)) __m512 an_avx512_activate(__m512 r,
                                                                                      int act)
{
    if (act == AN_GEMM_ACT_NONE)
        return r;
    const __m512 zero = _mm512_setzero_ps();
    r = _mm512_max_ps(zero, r);
    if (act == AN_GEMM_ACT_RELU6)
        r = _mm512_min_ps(_mm512_set1_ps(6.0f), r);
    return _mm512_add_ps(r, zero);
}

AN_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 an_avx2_activate(__m256 r, int act)
{
    if (act == AN_GEMM_ACT_NONE)
        return r;
    const __m256 zero = _mm256_setzero_ps();
    r = _mm256_max_ps(zero, r);
    if (act == AN_GEMM_ACT_RELU6)
        r = _mm256_min_ps(_mm256_set1_ps(6.0f), r);
    return _mm256_add_ps(r, zero);
}
#endif

#endif /* APPEALNET_KERNELS_SIMD_ACTIVATE_H */
