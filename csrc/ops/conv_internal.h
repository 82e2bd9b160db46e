/* conv_internal.h — what conv.c (the convolution op) and conv_block.c (the
   fused inverted-residual block) share: thread teams, row splits, the GEMM's
   activation codes and the packed weight's shape.  Internal to csrc/ops. */
#ifndef AN_CONV_INTERNAL_H
#define AN_CONV_INTERNAL_H

#include "../core/internal.h"
#include "../kernels/gemm.h"

/* The GEMM's activation code for an_activation. */
static inline int gemm_act(an_activation act)
{
    return act == AN_ACTIVATION_RELU    ? AN_GEMM_ACT_RELU
           : act == AN_ACTIVATION_RELU6 ? AN_GEMM_ACT_RELU6
                                        : AN_GEMM_ACT_NONE;
}

/* Whether packed has the shape an_conv2d_pack_weight gives a weight with
   Cout outputs and C inputs, for some tile height (its last dimension). */
static inline int packed_shape_fits(const an_tensor *packed, int64_t Cout, int64_t C)
{
    const int64_t rows = packed->ndim == 3 ? packed->shape[2] : 0;
    return rows >= 1 && packed->shape[1] == C && packed->shape[0] == (Cout + rows - 1) / rows;
}

/* Threads a parallel region started here would get (1 inside one). */
static inline int team_size(void)
{
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int thread_index(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Threads of the team running the caller (1 outside a parallel region). */
static inline int team_size_in_region(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Rows [*r0, *r1) of `rows` for part `index` of `parts` near-equal runs. */
static inline void split_rows(int64_t rows, int parts, int index, int64_t *r0, int64_t *r1)
{
    *r0 = rows * index / parts;
    *r1 = rows * (index + 1) / parts;
}

#endif
