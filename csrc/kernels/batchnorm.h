/* Batch normalisation kernels (per channel over N, H, W), float32.
 *
 * Layout: x viewed as [N, C, HW] with HW = H*W (HW = 1 for BatchNorm1d on
 * [N, C]). M = N*HW elements per channel. Pure kernels: no allocation, cannot
 * fail; parallel over channels, results bit-identical for any thread count;
 * channel sums are accumulated in double. The running-statistics update
 * (momentum, unbiased variance) is the caller's job.
 */
#ifndef APPEALNET_KERNELS_BATCHNORM_H
#define APPEALNET_KERNELS_BATCHNORM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x: [N, C, HW] -> mean: [C], var_biased: [C] (sum((x-mean)^2) / M),
 * two passes in double. Both overwritten. */
void an_batchnorm_stats_f32(const float *x, int64_t N, int64_t C, int64_t HW,
                            float *mean, float *var_biased);

/* y = (x - mean) * invstd * gamma + beta, invstd = 1 / sqrt(var_biased + eps).
 * gamma NULL means 1, beta NULL means 0. y: [N, C, HW] overwritten;
 * invstd_out: [C] overwritten (nullable), kept for the backward. */
void an_batchnorm_forward_train_f32(const float *x, const float *mean,
                                    const float *var_biased,
                                    const float *gamma, const float *beta,
                                    float eps, int64_t N, int64_t C,
                                    int64_t HW, float *y, float *invstd_out);

/* Same normalisation with the running statistics (inference). */
void an_batchnorm_forward_eval_f32(const float *x, const float *running_mean,
                                   const float *running_var,
                                   const float *gamma, const float *beta,
                                   float eps, int64_t N, int64_t C, int64_t HW,
                                   float *y);

/* Backward through batch statistics. With xhat = (x - mean) * invstd:
 *   dbeta  += sum(dy)                 dgamma += sum(dy * xhat)
 *   dx     += gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat))
 * dy, x, dx: [N, C, HW]; mean, invstd, gamma (NULL => 1): [C].
 * dx, dgamma, dbeta are nullable and accumulated into. */
void an_batchnorm_backward_train_f32(const float *dy, const float *x,
                                     const float *mean, const float *invstd,
                                     const float *gamma, int64_t N, int64_t C,
                                     int64_t HW, float *dx, float *dgamma,
                                     float *dbeta);

/* Backward with the running statistics as constants (eval mode /
 * frozen BN): invstd_r = 1 / sqrt(running_var + eps),
 *   dx += dy * gamma * invstd_r
 *   dgamma += sum(dy * (x - running_mean) * invstd_r),  dbeta += sum(dy).
 * x and running_mean are only read when dgamma is non-NULL (may be NULL
 * otherwise). dx, dgamma, dbeta are nullable and accumulated into. */
void an_batchnorm_backward_eval_f32(const float *dy, const float *x,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, float eps, int64_t N,
                                    int64_t C, int64_t HW, float *dx,
                                    float *dgamma, float *dbeta);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_BATCHNORM_H */
