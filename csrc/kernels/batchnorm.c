/* Batch normalisation kernels, see batchnorm.h.  The bodies are in
 * batchnorm_impl.h, built here (portable) and in batchnorm_avx2.c /
 * batchnorm_avx512.c; the functions below pick one from the run-time ISA.
 *
 * Every sum runs in a fixed order whatever thread computes it: each plane's
 * sums in fixed lanes, the planes of a channel added in image order.  The
 * statistics come from per-plane moments (planes in memory order), the
 * normalising pass runs plane by plane, the training backward in blocks of
 * channels, the eval backward channel by channel; the results are the same
 * for any thread count.
 *
 * The activation is a parameter of each per-plane or per-channel worker,
 * which is inlined once per activation with the activation as a literal
 * (see the dispatchers of the *_as workers): the switch on it then folds
 * away and each inner loop is a branch-free select that vectorises.
 */
#define BN_VARIANT(name) name##_generic
#include "batchnorm_impl.h"
#undef BN_VARIANT

#include "cpu/cpu.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define AN_BN_X86_VARIANTS 1
#define AN_BN_FN(name) name##_avx2
#include "batchnorm_fns.h"
#undef AN_BN_FN
#define AN_BN_FN(name) name##_avx512
#include "batchnorm_fns.h"
#undef AN_BN_FN
#endif

/* Planes below this many elements run the portable build: per row, the
 * wide builds' set-up cost more than their lanes saved (measured: BN+ReLU
 * forward and backward over 128 x 232 x 4 x 4 took 1.98 ms with AVX-512, 1.63
 * ms portable; over 16 x 16 and 32 x 32 planes AVX-512 was 24-30% faster). */
#define BN_WIDE_MIN_PLANE 64

/* Calls the build of `fn` for the ISA in use (and the plane size). */
#ifdef AN_BN_X86_VARIANTS
#define BN_DISPATCH(fn, ...)                                                                     \
    do {                                                                                         \
        switch (HW >= BN_WIDE_MIN_PLANE ? an_cpu_info_get()->isa : AN_ISA_GENERIC) {            \
        case AN_ISA_AVX512: fn##_avx512(__VA_ARGS__); return;                                    \
        case AN_ISA_AVX2: fn##_avx2(__VA_ARGS__); return;                                        \
        default: fn##_generic(__VA_ARGS__); return;                                              \
        }                                                                                        \
    } while (0)
#else
#define BN_DISPATCH(fn, ...) fn##_generic(__VA_ARGS__)
#endif

/* The wide builds on every plane size: unlike the normalising kernels,
 * this one has no per-row set-up, and on 4x4 planes the portable build's
 * scalar sums took 0.6 of a 960-channel batch norm's time. */
void an_batchnorm_plane_moments_f32(const float *x, int64_t planes, int64_t HW, double *moments)
{
#ifdef AN_BN_X86_VARIANTS
    switch (an_cpu_info_get()->isa) {
    case AN_ISA_AVX512: an_batchnorm_plane_moments_f32_avx512(x, planes, HW, moments); return;
    case AN_ISA_AVX2: an_batchnorm_plane_moments_f32_avx2(x, planes, HW, moments); return;
    default: break;
    }
#endif
    an_batchnorm_plane_moments_f32_generic(x, planes, HW, moments);
}

/* Channels combined at a time: their running sums live on the stack while
 * the images go by in order, each image's moments of the block one
 * contiguous run (a channel at a time read them 2 * C doubles apart). */
#define BN_COMBINE_BLOCK 128

/* Chan et al.'s pairwise combination, planes (images) in order: with n =
 * HW values per plane, mean = sum(s_p) / M and
 *   M2 = sum_p (m2_p + n * (s_p / n - mean)^2)
 * exactly, in real arithmetic, the sum of squared deviations around the
 * batch mean; every term is a non-negative double, so nothing cancels.
 * Each channel's sums run over the images in order, whichever thread owns
 * its block: the same bits on any number of threads. */
static void combine_block(const double *moments, int64_t N, int64_t C, int64_t HW, int64_t blk,
                          float *mean, float *var_biased)
{
    const double M = (double)N * (double)HW, n_plane = (double)HW;
    const int64_t c0 = blk * BN_COMBINE_BLOCK;
    const int64_t width = C - c0 < BN_COMBINE_BLOCK ? C - c0 : BN_COMBINE_BLOCK;
    double s[BN_COMBINE_BLOCK], m[BN_COMBINE_BLOCK], m2[BN_COMBINE_BLOCK];
    for (int64_t i = 0; i < width; ++i) s[i] = m2[i] = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const double *mo = moments + 2 * (n * C + c0);
        for (int64_t i = 0; i < width; ++i) s[i] += mo[2 * i];
    }
    for (int64_t i = 0; i < width; ++i) m[i] = M > 0.0 ? s[i] / M : 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const double *mo = moments + 2 * (n * C + c0);
        for (int64_t i = 0; i < width; ++i) {
            const double d = mo[2 * i] / n_plane - m[i];
            m2[i] += mo[2 * i + 1] + n_plane * d * d;
        }
    }
    for (int64_t i = 0; i < width; ++i) {
        mean[c0 + i] = (float)m[i];
        var_biased[c0 + i] = M > 0.0 ? (float)(m2[i] / M) : 0.0f;
    }
}

void an_batchnorm_stats_from_moments(const double *moments, int64_t N, int64_t C, int64_t HW,
                                     float *mean, float *var_biased)
{
    const int64_t blocks = (C + BN_COMBINE_BLOCK - 1) / BN_COMBINE_BLOCK;
#ifdef _OPENMP
    if (N * C > 32768 && blocks > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
        for (int64_t blk = 0; blk < blocks; ++blk)
            combine_block(moments, N, C, HW, blk, mean, var_biased);
        return;
    }
#endif
    for (int64_t blk = 0; blk < blocks; ++blk)
        combine_block(moments, N, C, HW, blk, mean, var_biased);
}

void an_batchnorm_stats_f32(const float *x, int64_t N, int64_t C, int64_t HW, double *moments,
                            float *mean, float *var_biased)
{
    an_batchnorm_plane_moments_f32(x, N * C, HW, moments);
    an_batchnorm_stats_from_moments(moments, N, C, HW, mean, var_biased);
}

void an_batchnorm_forward_train_f32(const float *x, const float *mean,
                                    const float *var_biased,
                                    const float *gamma, const float *beta,
                                    float eps, an_bn_activation act,
                                    int64_t N, int64_t C, int64_t HW,
                                    float *y, float *invstd_out)
{
    BN_DISPATCH(an_batchnorm_forward_train_f32, x, mean, var_biased, gamma, beta, eps, act, N, C, HW, y, invstd_out);
}

void an_batchnorm_forward_eval_f32(const float *x, const float *running_mean,
                                   const float *running_var,
                                   const float *gamma, const float *beta,
                                   float eps, an_bn_activation act, int64_t N,
                                   int64_t C, int64_t HW, float *y)
{
    BN_DISPATCH(an_batchnorm_forward_eval_f32, x, running_mean, running_var, gamma, beta, eps, act, N, C, HW, y);
}

void an_batchnorm_backward_train_f32(const float *dy, an_bn_activation act,
                                     const float *x, const float *mean,
                                     const float *invstd, const float *gamma,
                                     const float *beta, int64_t N, int64_t C,
                                     int64_t HW, float *dx, float *dgamma,
                                     float *dbeta, double *workspace)
{
    BN_DISPATCH(an_batchnorm_backward_train_f32, dy, act, x, mean, invstd, gamma, beta, N, C, HW, dx,
                dgamma, dbeta, workspace);
}

void an_batchnorm_backward_eval_f32(const float *dy, const float *y,
                                    an_bn_activation act, const float *x,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, float eps, int64_t N,
                                    int64_t C, int64_t HW, float *dx,
                                    float *dgamma, float *dbeta)
{
    BN_DISPATCH(an_batchnorm_backward_eval_f32, dy, y, act, x, running_mean, running_var, gamma, eps, N, C, HW, dx, dgamma, dbeta);
}
