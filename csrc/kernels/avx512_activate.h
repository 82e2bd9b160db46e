/* The fused activations on a 16-lane AVX-512 vector (AN_GEMM_ACT_* of
 * kernels/gemm.h), with an_epilogue_rows' compares: x <= 0 -> +0 (NaN
 * passes, -0 becomes +0), then x >= 6 -> 6 for relu6; so the direct kernels
 * that use it write the bits the GEMM's epilogue would. */
#ifndef APPEALNET_KERNELS_AVX512_ACTIVATE_H
#define APPEALNET_KERNELS_AVX512_ACTIVATE_H

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
#endif

#endif /* APPEALNET_KERNELS_AVX512_ACTIVATE_H */
