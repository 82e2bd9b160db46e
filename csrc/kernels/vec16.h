/* vec16.h — 16 (or 8) floats as one GCC vector (one zmm with AVX-512, two ymm with
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

/* an_vecN / an_maskN with their load, store and activation, for N = 16 and
 * 8: kernels whose shuffles cross the vector pick the width of the ISA they
 * are built for (a 16-lane shuffle built for AVX2 went through the stack). */
#define AN_DEFINE_VEC(N)                                                                         \
    typedef float an_vec##N __attribute__((vector_size(N * sizeof(float))));                    \
    typedef int32_t an_mask##N __attribute__((vector_size(N * sizeof(float))));                 \
    static AN_ALWAYS_INLINE an_vec##N an_vec##N##_load(const float *p)                           \
    {                                                                                            \
        an_vec##N v;                                                                             \
        __builtin_memcpy(&v, p, sizeof v);                                                       \
        return v;                                                                                \
    }                                                                                            \
    static AN_ALWAYS_INLINE void an_vec##N##_store(float *p, an_vec##N v)                        \
    {                                                                                            \
        __builtin_memcpy(p, &v, sizeof v);                                                       \
    }                                                                                            \
    /* an_epilogue_rows' activation on every lane (AN_GEMM_ACT_*): the same                      \
     * compares (x <= 0 -> +0, then x >= 6 -> 6), so NaN passes and the bits                    \
     * match a scalar pass. */                                                                   \
    static AN_ALWAYS_INLINE an_vec##N an_vec##N##_activate(an_vec##N v, int act)                 \
    {                                                                                            \
        if (act != AN_GEMM_ACT_NONE)                                                             \
            v = (an_vec##N)((an_mask##N)v & ~(an_mask##N)(v <= 0.0f));                           \
        if (act == AN_GEMM_ACT_RELU6) {                                                          \
            const an_vec##N six = (an_vec##N){0} + 6.0f;                                         \
            const an_mask##N big = v >= 6.0f;                                                    \
            v = (an_vec##N)(((an_mask##N)v & ~big) | ((an_mask##N)six & big));                   \
        }                                                                                        \
        return v;                                                                                \
    }

AN_DEFINE_VEC(16)
AN_DEFINE_VEC(8)
#endif

#endif
