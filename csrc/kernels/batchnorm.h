/* Batch normalisation kernels (per channel over N, H, W), float32, with an
 * optional ReLU / ReLU6 fused into the pass that writes the output.
 *
 * Layout: x viewed as [N, C, HW] with HW = H*W (HW = 1 for BatchNorm1d on
 * [N, C]). M = N*HW elements per channel. Pure kernels: no allocation, cannot
 * fail; parallel over planes or channels, results bit-identical for any thread count;
 * channel sums are accumulated in double. The running-statistics update
 * (momentum, unbiased variance) is the caller's job.
 *
 * Every output is overwritten, never accumulated into: the op allocates its
 * gradients uninitialised, which saves a memset pass and turns dx's
 * read-modify-write into a plain store.
 */
#ifndef APPEALNET_KERNELS_BATCHNORM_H
#define APPEALNET_KERNELS_BATCHNORM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The activation applied to the normalised value v before it is stored:
 *   RELU:  v <= 0 ? 0 : v                      (NaN passes)
 *   RELU6: v <= 0 ? 0 : (v >= 6 ? 6 : v)       (NaN passes)
 * exactly the formulas of the standalone relu/relu6 ops, so the fused
 * result is bit-identical to normalising and then activating. */
typedef enum {
    AN_BN_IDENTITY = 0,
    AN_BN_RELU = 1,
    AN_BN_RELU6 = 2
} an_bn_activation;

/* The batch statistics go through per-plane moments, so that a
 * convolution can compute them on each plane it has just written, while the
 * plane is still in cache, and the batch norm after it skips its own pass
 * over x (an_conv2d_batch_norm).  The same moments and the same combination
 * either way: the statistics are the same bits, fused or not.
 *
 * x: [planes, HW] -> moments: [planes][2] = {sum, sum of squared deviations
 * around the plane's own mean}, in double (each plane read twice, the second
 * time from L1).  Parallel over planes, or on the calling thread inside a
 * parallel region. */
/* -> AN_BN_FN(an_batchnorm_plane_moments_f32), in batchnorm_fns.h */

/* moments of x: [N, C, HW] (planes n * C + c) -> mean: [C], var_biased: [C]
 * (sum((x - mean)^2) / M), combined in double, images in order. */
void an_batchnorm_stats_from_moments(const double *moments, int64_t N, int64_t C, int64_t HW,
                                     float *mean, float *var_biased);

/* Both steps; moments: N * C * 2 doubles of workspace. */
void an_batchnorm_stats_f32(const float *x, int64_t N, int64_t C, int64_t HW, double *moments,
                            float *mean, float *var_biased);

/* y = act((x - mean) * scale + beta), scale = gamma * invstd,
 * invstd = 1 / sqrt(var_biased + eps). gamma NULL means 1, beta NULL means 0.
 * y: [N, C, HW] overwritten; invstd_out: [C] overwritten (nullable), kept
 * for the backward. */
/* -> AN_BN_FN(an_batchnorm_forward_train_f32), in batchnorm_fns.h */

/* Same normalisation with the running statistics (inference). */
/* -> AN_BN_FN(an_batchnorm_forward_eval_f32), in batchnorm_fns.h */

/* The backward kernels first mask dy by the activation, read from the
 * forward's output y (as the standalone ops' backward does):
 *   IDENTITY: g = dy                              (y not read, may be NULL)
 *   RELU:     g = y <= 0 ? 0 : dy                 (NaN y passes)
 *   RELU6:    g = 0 < y < 6 ? dy : 0              (strict: y in (0, 6) iff
 *                                                  the pre-activation was)
 * and then run batch norm's backward on g.  The training backward does not
 * take y: it recomputes the pre-activation v = (x - mean) * gamma*invstd +
 * beta exactly as the forward did (same float operations) and masks on v
 * (v <= 0 for RELU, 0 < v < 6 for RELU6: the same masks), reading one
 * tensor fewer in each of its passes. */

/* Backward through batch statistics. With xhat = (x - mean) * invstd:
 *   dbeta  = sum(g)                 dgamma = sum(g * xhat)
 *   dx     = gamma*invstd/M * (M*g - sum(g) - xhat*sum(g*xhat))
 * dy, y, x, dx: [N, C, HW]; mean, invstd, gamma (NULL => 1): [C].
 * dx, dgamma, dbeta are nullable and overwritten (dgamma, dbeta are 0 for
 * an empty batch).  workspace: an_batchnorm_backward_train_workspace(N, C)
 * doubles (each plane's two sums, then the channels' constants).  Plane
 * by plane in memory order, the planes' sums added per channel in image
 * order: the same bits on any thread count. */
/* -> AN_BN_FN(an_batchnorm_backward_train_f32), in batchnorm_fns.h */
static inline int64_t an_batchnorm_backward_train_workspace(int64_t N, int64_t C)
{
    return 2 * N * C + 3 * C; /* 3 doubles hold a channel's five floats */
}

/* Backward with the running statistics as constants (eval mode /
 * frozen BN): invstd_r = 1 / sqrt(running_var + eps),
 *   dx = g * gamma * invstd_r
 *   dgamma = sum(g * (x - running_mean) * invstd_r),  dbeta = sum(g).
 * x and running_mean are only read when dgamma is non-NULL (may be NULL
 * otherwise). dx, dgamma, dbeta are nullable and overwritten. */
/* -> AN_BN_FN(an_batchnorm_backward_eval_f32), in batchnorm_fns.h */

#define AN_BN_FN(name) name
#include "batchnorm_fns.h"
#undef AN_BN_FN

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_BATCHNORM_H */
