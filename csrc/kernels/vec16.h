/* vec16.h — 16 floats as one GCC vector (one zmm with AVX-512, two ymm with
 * AVX2, four xmm on the portable build), for kernels written once in plain
 * C and built per ISA (isa_variants.h).  Loads and stores go through
 * memcpy, so any alignment works; every helper is always inline, so no
 * vector crosses a call (the -Wpsabi note GCC gives is moot). */
#ifndef APPEALNET_KERNELS_VEC16_H
#define APPEALNET_KERNELS_VEC16_H

#include "kernels/gemm.h" /* AN_GEMM_ACT_* */
#include "kernels/isa_variants.h"

#include <stdint.h>

#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#define AN_HAVE_VEC16 1
#define AN_VEC16_LANES 16
typedef float an_vec16 __attribute__((vector_size(AN_VEC16_LANES * sizeof(float))));
typedef int32_t an_mask16 __attribute__((vector_size(AN_VEC16_LANES * sizeof(float))));

static AN_ALWAYS_INLINE an_vec16 an_vec16_load(const float *p)
{
    an_vec16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static AN_ALWAYS_INLINE void an_vec16_store(float *p, an_vec16 v) { __builtin_memcpy(p, &v, sizeof v); }

/* an_epilogue_rows' activation on every lane (AN_GEMM_ACT_*): the same
 * compares (x <= 0 -> +0, then x >= 6 -> 6), so NaN passes and the bits
 * match a scalar pass. */
static AN_ALWAYS_INLINE an_vec16 an_vec16_activate(an_vec16 v, int act)
{
    if (act != AN_GEMM_ACT_NONE)
        v = (an_vec16)((an_mask16)v & ~(an_mask16)(v <= 0.0f));
    if (act == AN_GEMM_ACT_RELU6) {
        const an_vec16 six = (an_vec16){0} + 6.0f;
        const an_mask16 big = v >= 6.0f;
        v = (an_vec16)(((an_mask16)v & ~big) | ((an_mask16)six & big));
    }
    return v;
}
#endif

#endif
