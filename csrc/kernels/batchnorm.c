/* Batch normalisation kernels, see batchnorm.h.
 *
 * Every function parallelises over channels: a channel's statistics and its
 * slice of every output are owned by one thread, and its sums run in a fixed
 * order (images in order, eight double lanes inside a row), so the results are
 * the same for any thread count.
 */
#include "batchnorm.h"

#include <math.h>

/* Below this much work a parallel region (thread wake-up) costs more than it saves. */
#define KERNEL_PARALLEL_GRAIN 32768

#define LANES 8

/* sum(a) in double, eight lanes (vectorisable, fixed order) */
static inline double sum_f64(const float *restrict a, int64_t n)
{
    double part[LANES] = {0};
    int64_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; ++l) part[l] += (double)a[k + l];
    double s = 0.0;
    for (int l = 0; l < LANES; ++l) s += part[l];
    for (; k < n; ++k) s += (double)a[k];
    return s;
}

/* sum((a - m)^2) in double */
static inline double sum_sq_dev_f64(const float *restrict a, int64_t n,
                                    double m)
{
    double part[LANES] = {0};
    int64_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; ++l) {
            const double d = (double)a[k + l] - m;
            part[l] += d * d;
        }
    double s = 0.0;
    for (int l = 0; l < LANES; ++l) s += part[l];
    for (; k < n; ++k) {
        const double d = (double)a[k] - m;
        s += d * d;
    }
    return s;
}

/* sum(g) and sum(g * (a - m)) in double, one pass */
static inline void sum_g_and_g_dev_f64(const float *restrict g,
                                       const float *restrict a, int64_t n,
                                       double m, double *sum_g,
                                       double *sum_g_dev)
{
    double pg[LANES] = {0}, pgd[LANES] = {0};
    int64_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; ++l) {
            const double gv = (double)g[k + l];
            pg[l] += gv;
            pgd[l] += gv * ((double)a[k + l] - m);
        }
    double s = 0.0, sd = 0.0;
    for (int l = 0; l < LANES; ++l) {
        s += pg[l];
        sd += pgd[l];
    }
    for (; k < n; ++k) {
        const double gv = (double)g[k];
        s += gv;
        sd += gv * ((double)a[k] - m);
    }
    *sum_g += s;
    *sum_g_dev += sd;
}

/* x [N,C,HW] -> mean [C], var_biased [C] */
void an_batchnorm_stats_f32(const float *x, int64_t N, int64_t C, int64_t HW,
                            float *mean, float *var_biased)
{
    const int64_t M = N * HW;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * HW > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t c = 0; c < C; ++c) {
        if (M <= 0) {
            mean[c] = 0.0f;
            var_biased[c] = 0.0f;
            continue;
        }
        double s = 0.0;
        for (int64_t n = 0; n < N; ++n) s += sum_f64(x + (n * C + c) * HW, HW);
        const double m = s / (double)M;
        /* second pass around the double mean: no cancellation */
        double ss = 0.0;
        for (int64_t n = 0; n < N; ++n)
            ss += sum_sq_dev_f64(x + (n * C + c) * HW, HW, m);
        mean[c] = (float)m;
        var_biased[c] = (float)(ss / (double)M);
    }
}

/* y = (x - m) * scale + shift over one channel's N slices */
static inline void normalize_channel(const float *restrict x, float m,
                                     float scale, float shift, int64_t N,
                                     int64_t C, int64_t HW, int64_t c,
                                     float *restrict y)
{
    for (int64_t n = 0; n < N; ++n) {
        const float *restrict xs = x + (n * C + c) * HW;
        float *restrict ys = y + (n * C + c) * HW;
        for (int64_t k = 0; k < HW; ++k) ys[k] = (xs[k] - m) * scale + shift;
    }
}

static inline float inv_sqrt_eps(float var, float eps)
{
    return (float)(1.0 / sqrt((double)var + (double)eps));
}

void an_batchnorm_forward_train_f32(const float *x, const float *mean,
                                    const float *var_biased,
                                    const float *gamma, const float *beta,
                                    float eps, int64_t N, int64_t C,
                                    int64_t HW, float *y, float *invstd_out)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * HW > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t c = 0; c < C; ++c) {
        const float inv = inv_sqrt_eps(var_biased[c], eps);
        const float scale = gamma ? gamma[c] * inv : inv;
        const float shift = beta ? beta[c] : 0.0f;
        normalize_channel(x, mean[c], scale, shift, N, C, HW, c, y);
        if (invstd_out) invstd_out[c] = inv;
    }
}

void an_batchnorm_forward_eval_f32(const float *x, const float *running_mean,
                                   const float *running_var,
                                   const float *gamma, const float *beta,
                                   float eps, int64_t N, int64_t C, int64_t HW,
                                   float *y)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * HW > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t c = 0; c < C; ++c) {
        const float inv = inv_sqrt_eps(running_var[c], eps);
        const float scale = gamma ? gamma[c] * inv : inv;
        const float shift = beta ? beta[c] : 0.0f;
        normalize_channel(x, running_mean[c], scale, shift, N, C, HW, c, y);
    }
}

void an_batchnorm_backward_train_f32(const float *dy, const float *x,
                                     const float *mean, const float *invstd,
                                     const float *gamma, int64_t N, int64_t C,
                                     int64_t HW, float *dx, float *dgamma,
                                     float *dbeta)
{
    const int64_t M = N * HW;
    if (M <= 0) return;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * HW > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t c = 0; c < C; ++c) {
        const double m = (double)mean[c];
        const double inv = (double)invstd[c];
        double sum_dy = 0.0, sum_dy_dev = 0.0;
        for (int64_t n = 0; n < N; ++n)
            sum_g_and_g_dev_f64(dy + (n * C + c) * HW, x + (n * C + c) * HW,
                                HW, m, &sum_dy, &sum_dy_dev);
        const double sum_dy_xhat = sum_dy_dev * inv;
        if (dbeta) dbeta[c] += (float)sum_dy;
        if (dgamma) dgamma[c] += (float)sum_dy_xhat;
        if (!dx) continue;
        /* The header's formula divided through by M:
         *   dx += k * (dy - sum(dy)/M - (x - mean) * a)
         * with k = gamma*invstd and a = invstd * sum(dy*xhat) / M
         * (so (x - mean) * a == xhat * sum(dy*xhat) / M). */
        const double g = gamma ? (double)gamma[c] : 1.0;
        const float k = (float)(g * inv);
        const float mean_dy = (float)(sum_dy / (double)M);
        const float a = (float)(inv * sum_dy_xhat / (double)M);
        const float mf = mean[c];
        for (int64_t n = 0; n < N; ++n) {
            const float *restrict dys = dy + (n * C + c) * HW;
            const float *restrict xs = x + (n * C + c) * HW;
            float *restrict dxs = dx + (n * C + c) * HW;
            for (int64_t i = 0; i < HW; ++i)
                dxs[i] += k * (dys[i] - mean_dy - (xs[i] - mf) * a);
        }
    }
}

void an_batchnorm_backward_eval_f32(const float *dy, const float *x,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, float eps, int64_t N,
                                    int64_t C, int64_t HW, float *dx,
                                    float *dgamma, float *dbeta)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * HW > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t c = 0; c < C; ++c) {
        const float inv = inv_sqrt_eps(running_var[c], eps);
        if (dgamma || dbeta) {
            double sum_dy = 0.0, sum_dy_dev = 0.0;
            const double m = dgamma ? (double)running_mean[c] : 0.0;
            for (int64_t n = 0; n < N; ++n) {
                const float *dys = dy + (n * C + c) * HW;
                if (dgamma)
                    sum_g_and_g_dev_f64(dys, x + (n * C + c) * HW, HW, m,
                                        &sum_dy, &sum_dy_dev);
                else
                    sum_dy += sum_f64(dys, HW);
            }
            if (dbeta) dbeta[c] += (float)sum_dy;
            if (dgamma) dgamma[c] += (float)(sum_dy_dev * (double)inv);
        }
        if (dx) {
            const float k = gamma ? gamma[c] * inv : inv;
            for (int64_t n = 0; n < N; ++n) {
                const float *restrict dys = dy + (n * C + c) * HW;
                float *restrict dxs = dx + (n * C + c) * HW;
                for (int64_t i = 0; i < HW; ++i) dxs[i] += dys[i] * k;
            }
        }
    }
}
