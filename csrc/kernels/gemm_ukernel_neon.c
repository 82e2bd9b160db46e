/* AArch64 Advanced SIMD (NEON) micro-kernel: a 12 x 8 tile.
 *
 * 32 vector registers of 4 floats: 24 accumulators (12 rows x two vectors
 * of B), three vectors of A and two of B per k step.  Each row's update is
 * one fused multiply-add by a lane of A (vfmaq_laneq_f32), so a k step is
 * 24 FMAs for 5 loads.  The portable kernel (gemm_ukernel_generic.c) is
 * what GCC makes of plain C under -std=c11: multiplies and adds kept apart
 * (no contraction outside GNU mode) and shuffles to broadcast A, about three
 * instructions per 4-wide multiply-add here against one.
 *
 * Every element still takes its k terms in increasing k order in its own
 * lane, whatever the tile's position, so results do not depend on the
 * thread count (see an_gemm_ukernel_fn).  Built only for AArch64, where
 * Advanced SIMD is mandatory; chosen when an_cpu_info_get()->isa is
 * AN_ISA_NEON (APPEALNET_ISA=generic selects the portable kernel). */
#include "kernels/gemm.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define NEON_MR 12
#define NEON_NR 8

/* acc##i##0 / acc##i##1: columns 0-3 and 4-7 of tile row i */
#define NEON_DECLARE_ROW(i)                                                                   \
    float32x4_t acc##i##0 = vdupq_n_f32(0.0f), acc##i##1 = vdupq_n_f32(0.0f);
#define NEON_UPDATE_ROW(i, a_vec, lane)                                                       \
    acc##i##0 = vfmaq_laneq_f32(acc##i##0, b0, a_vec, lane);                                  \
    acc##i##1 = vfmaq_laneq_f32(acc##i##1, b1, a_vec, lane);
/* c = alpha * acc + beta * c (beta == 0: c is not read) */
#define NEON_STORE_ROW(i)                                                                     \
    do {                                                                                      \
        float *row = c + (i) * ldc;                                                           \
        float32x4_t lo = vmulq_n_f32(acc##i##0, alpha), hi = vmulq_n_f32(acc##i##1, alpha);   \
        if (beta != 0.0f) {                                                                   \
            lo = vaddq_f32(lo, vmulq_n_f32(vld1q_f32(row), beta));                            \
            hi = vaddq_f32(hi, vmulq_n_f32(vld1q_f32(row + 4), beta));                        \
        }                                                                                     \
        vst1q_f32(row, lo);                                                                   \
        vst1q_f32(row + 4, hi);                                                               \
    } while (0)

/* B row k at packed_b + k * NR (packed) or at b + b_offsets[k] (in place). */
static inline __attribute__((always_inline)) void
gemm_neon_body(int64_t kc, const float *packed_a, const float *b, const int64_t *b_offsets,
               float *c, int64_t ldc, float alpha, float beta)
{
    NEON_DECLARE_ROW(0) NEON_DECLARE_ROW(1) NEON_DECLARE_ROW(2) NEON_DECLARE_ROW(3)
    NEON_DECLARE_ROW(4) NEON_DECLARE_ROW(5) NEON_DECLARE_ROW(6) NEON_DECLARE_ROW(7)
    NEON_DECLARE_ROW(8) NEON_DECLARE_ROW(9) NEON_DECLARE_ROW(10) NEON_DECLARE_ROW(11)
    const float *a = packed_a;
    for (int64_t k = 0; k < kc; ++k, a += NEON_MR) {
        const float *bk = b_offsets ? b + b_offsets[k] : b + k * NEON_NR;
        const float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32(bk + 4);
        const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4), a2 = vld1q_f32(a + 8);
        NEON_UPDATE_ROW(0, a0, 0) NEON_UPDATE_ROW(1, a0, 1)
        NEON_UPDATE_ROW(2, a0, 2) NEON_UPDATE_ROW(3, a0, 3)
        NEON_UPDATE_ROW(4, a1, 0) NEON_UPDATE_ROW(5, a1, 1)
        NEON_UPDATE_ROW(6, a1, 2) NEON_UPDATE_ROW(7, a1, 3)
        NEON_UPDATE_ROW(8, a2, 0) NEON_UPDATE_ROW(9, a2, 1)
        NEON_UPDATE_ROW(10, a2, 2) NEON_UPDATE_ROW(11, a2, 3)
    }
    NEON_STORE_ROW(0); NEON_STORE_ROW(1); NEON_STORE_ROW(2); NEON_STORE_ROW(3);
    NEON_STORE_ROW(4); NEON_STORE_ROW(5); NEON_STORE_ROW(6); NEON_STORE_ROW(7);
    NEON_STORE_ROW(8); NEON_STORE_ROW(9); NEON_STORE_ROW(10); NEON_STORE_ROW(11);
}

static void gemm_ukernel_neon_12x8(int64_t kc, const float *packed_a, const float *packed_b,
                                   float *c, int64_t ldc, float alpha, float beta)
{
    gemm_neon_body(kc, packed_a, packed_b, NULL, c, ldc, alpha, beta);
}

static void gemm_ukernel_neon_12x8_rows(int64_t kc, const float *packed_a, const float *b,
                                        const int64_t *b_offsets, float *c, int64_t ldc,
                                        float alpha, float beta)
{
    gemm_neon_body(kc, packed_a, b, b_offsets, c, ldc, alpha, beta);
}

const an_gemm_ukernel an_gemm_ukernel_neon = {
    "neon_12x8", NEON_MR, NEON_NR, gemm_ukernel_neon_12x8, gemm_ukernel_neon_12x8_rows, NULL,
    NULL, NULL, 0};

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int an_gemm_ukernel_neon_unused;
#endif
