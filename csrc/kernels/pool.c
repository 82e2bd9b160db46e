/* 2-D pooling kernels, see pool.h.
 *
 * All kernels parallelise over the N*C independent planes; inside a plane the
 * work is sequential in a fixed order, so results do not depend on the thread
 * count. Window sums are accumulated in double.
 */
#include "pool.h"

#include <math.h>

/* Below this much work a parallel region (thread wake-up) costs more than it saves. */
#define KERNEL_PARALLEL_GRAIN 32768

/* Taps t in [0, n_taps) read position t*step + offset. Returns in [*lo, *hi)
 * the taps whose position lies in [0, n_in); lo <= hi always. (Also used with
 * output index / stride for "outputs whose window starts at o*stride+off".) */
static inline void valid_range(int64_t n_taps, int64_t n_in, int64_t step,
                               int64_t offset, int64_t *lo, int64_t *hi)
{
    int64_t first = offset >= 0 ? 0 : (-offset + step - 1) / step;
    int64_t end = offset >= n_in ? 0 : (n_in - offset + step - 1) / step;
    if (first > n_taps) first = n_taps;
    if (end > n_taps) end = n_taps;
    if (end < first) end = first;
    *lo = first;
    *hi = end;
}

/* ---------------------------------------------------------------- max pool */

/* One plane: xp [H,W] -> yp [OH,OW], ap [OH,OW] (nullable). */
static void maxpool_plane(const float *restrict xp, int64_t H, int64_t W,
                          int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                          int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                          int64_t OH, int64_t OW, float *restrict yp,
                          int32_t *restrict ap)
{
    /* Columns whose whole window is inside the image need no clipping; only
     * the few border columns pay for the divisions in valid_range. */
    int64_t inner_lo, inner_hi;
    valid_range(OW, W - (kw - 1) * dw, sw, -pw, &inner_lo, &inner_hi);
    for (int64_t oh = 0; oh < OH; ++oh) {
        const int64_t hstart = oh * sh - ph;
        int64_t i_lo, i_hi;
        valid_range(kh, H, dh, hstart, &i_lo, &i_hi);
        for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t wstart = ow * sw - pw;
            int64_t j_lo = 0, j_hi = kw;
            if (ow < inner_lo || ow >= inner_hi)
                valid_range(kw, W, dw, wstart, &j_lo, &j_hi);
            float best = -INFINITY;
            int64_t best_idx = -1;
            if (i_lo < i_hi && j_lo < j_hi) {
                /* PyTorch starts from -inf at the first in-image element and
                 * replaces on '>' or NaN, so the last NaN wins. */
                best_idx = (hstart + i_lo * dh) * W + wstart + j_lo * dw;
                for (int64_t i = i_lo; i < i_hi; ++i) {
                    const int64_t row = (hstart + i * dh) * W;
                    for (int64_t j = j_lo; j < j_hi; ++j) {
                        const int64_t idx = row + wstart + j * dw;
                        const float v = xp[idx];
                        if (v > best || isnan(v)) {
                            best = v;
                            best_idx = idx;
                        }
                    }
                }
            }
            yp[oh * OW + ow] = best;
            if (ap) ap[oh * OW + ow] = (int32_t)best_idx;
        }
    }
}

/* x [N,C,H,W] -> y [N,C,OH,OW], argmax [N,C,OH,OW] (nullable) */
void an_maxpool2d_forward_f32(const float *x, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t kh, int64_t kw,
                              int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                              int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                              float *y, int32_t *argmax)
{
    const int64_t planes = N * C;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p)
        maxpool_plane(x + p * H * W, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH,
                      OW, y + p * OH * OW, argmax ? argmax + p * OH * OW : 0);
}

/* dy [N,C,OH,OW], argmax [N,C,OH,OW] -> dx [N,C,H,W] (+=) */
void an_maxpool2d_backward_f32(const float *dy, const int32_t *argmax,
                               int64_t N, int64_t C, int64_t H, int64_t W,
                               int64_t OH, int64_t OW, float *dx)
{
    const int64_t planes = N * C;
    const int64_t in_plane = H * W, out_plane = OH * OW;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const float *restrict g = dy + p * out_plane;
        const int32_t *restrict a = argmax + p * out_plane;
        float *restrict d = dx + p * in_plane;
        for (int64_t o = 0; o < out_plane; ++o) {
            const int64_t idx = a[o];
            /* windows with no in-image element carry -1: nothing to route */
            if (idx >= 0 && idx < in_plane) d[idx] += g[o];
        }
    }
}

/* ---------------------------------------------------------------- avg pool */

/* PyTorch's window for (start, kernel): clip the end to size+pad (ceil_mode
 * overhang), remember that padded extent, then clip both ends to the image. */
static inline void avg_window(int64_t start, int64_t k, int64_t size,
                              int64_t pad, int64_t *lo, int64_t *hi,
                              int64_t *padded_extent)
{
    int64_t end = start + k;
    if (end > size + pad) end = size + pad;
    *padded_extent = end - start;
    *lo = start < 0 ? 0 : start;
    *hi = end > size ? size : end;
}

static inline int64_t avg_divisor(int64_t padded_count, int64_t real_count,
                                  int count_include_pad,
                                  int64_t divisor_override)
{
    if (divisor_override > 0) return divisor_override;
    return count_include_pad ? padded_count : real_count;
}

void an_avgpool2d_forward_f32(const float *x, int64_t N, int64_t C, int64_t H,
                              int64_t W, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw,
                              int count_include_pad, int64_t divisor_override,
                              int64_t OH, int64_t OW, float *y)
{
    const int64_t planes = N * C;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const float *restrict xp = x + p * H * W;
        float *restrict yp = y + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
            int64_t h0, h1, hext;
            avg_window(oh * sh - ph, kh, H, ph, &h0, &h1, &hext);
            for (int64_t ow = 0; ow < OW; ++ow) {
                int64_t w0, w1, wext;
                avg_window(ow * sw - pw, kw, W, pw, &w0, &w1, &wext);
                if (h0 >= h1 || w0 >= w1) {
                    yp[oh * OW + ow] = 0.0f;
                    continue;
                }
                double s = 0.0;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw)
                        s += (double)xp[ih * W + iw];
                const int64_t div =
                    avg_divisor(hext * wext, (h1 - h0) * (w1 - w0),
                                count_include_pad, divisor_override);
                yp[oh * OW + ow] = (float)(s / (double)div);
            }
        }
    }
}

void an_avgpool2d_backward_f32(const float *dy, int64_t N, int64_t C,
                               int64_t H, int64_t W, int64_t kh, int64_t kw,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int count_include_pad, int64_t divisor_override,
                               int64_t OH, int64_t OW, float *dx)
{
    const int64_t planes = N * C;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const float *restrict gp = dy + p * OH * OW;
        float *restrict dp = dx + p * H * W;
        for (int64_t oh = 0; oh < OH; ++oh) {
            int64_t h0, h1, hext;
            avg_window(oh * sh - ph, kh, H, ph, &h0, &h1, &hext);
            for (int64_t ow = 0; ow < OW; ++ow) {
                int64_t w0, w1, wext;
                avg_window(ow * sw - pw, kw, W, pw, &w0, &w1, &wext);
                if (h0 >= h1 || w0 >= w1) continue;
                const int64_t div =
                    avg_divisor(hext * wext, (h1 - h0) * (w1 - w0),
                                count_include_pad, divisor_override);
                const float g = gp[oh * OW + ow] / (float)div;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw)
                        dp[ih * W + iw] += g;
            }
        }
    }
}

/* ------------------------------------------------------- adaptive avg pool */

static inline int64_t adaptive_start(int64_t o, int64_t out, int64_t in)
{
    return (o * in) / out;
}

static inline int64_t adaptive_end(int64_t o, int64_t out, int64_t in)
{
    return ((o + 1) * in + out - 1) / out;
}

/* Sum of n floats in eight double lanes (vectorisable, fixed order). */
static inline double sum_plane(const float *restrict a, int64_t n)
{
    double part[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; ++l) part[l] += (double)a[k + l];
    double s = 0.0;
    for (int l = 0; l < 8; ++l) s += part[l];
    for (; k < n; ++k) s += (double)a[k];
    return s;
}

/* x [N,C,H,W] -> y [N,C] */
void an_global_avgpool2d_forward_f32(const float *x, int64_t N, int64_t C,
                                     int64_t H, int64_t W, float *y)
{
    const int64_t planes = N * C, hw = H * W;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p)
        y[p] = hw > 0 ? (float)(sum_plane(x + p * hw, hw) / (double)hw) : 0.0f;
}

/* dy [N,C] -> dx [N,C,H,W] (+=) */
void an_global_avgpool2d_backward_f32(const float *dy, int64_t N, int64_t C,
                                      int64_t H, int64_t W, float *dx)
{
    const int64_t planes = N * C, hw = H * W;
    if (hw <= 0) return;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const float g = dy[p] / (float)hw;
        float *restrict d = dx + p * hw;
        for (int64_t k = 0; k < hw; ++k) d[k] += g;
    }
}

/* x [N,C,H,W] -> y [N,C,OH,OW] */
void an_adaptive_avgpool2d_forward_f32(const float *x, int64_t N, int64_t C,
                                       int64_t H, int64_t W, int64_t OH,
                                       int64_t OW, float *y)
{
    if (OH == 1 && OW == 1) {
        an_global_avgpool2d_forward_f32(x, N, C, H, W, y);
        return;
    }
    const int64_t planes = N * C;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const float *restrict xp = x + p * H * W;
        float *restrict yp = y + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t h0 = adaptive_start(oh, OH, H);
            const int64_t h1 = adaptive_end(oh, OH, H);
            for (int64_t ow = 0; ow < OW; ++ow) {
                const int64_t w0 = adaptive_start(ow, OW, W);
                const int64_t w1 = adaptive_end(ow, OW, W);
                double s = 0.0;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw)
                        s += (double)xp[ih * W + iw];
                const int64_t cnt = (h1 - h0) * (w1 - w0);
                yp[oh * OW + ow] = cnt > 0 ? (float)(s / (double)cnt) : 0.0f;
            }
        }
    }
}

/* dy [N,C,OH,OW] -> dx [N,C,H,W] (+=) */
void an_adaptive_avgpool2d_backward_f32(const float *dy, int64_t N, int64_t C,
                                        int64_t H, int64_t W, int64_t OH,
                                        int64_t OW, float *dx)
{
    if (OH == 1 && OW == 1) {
        an_global_avgpool2d_backward_f32(dy, N, C, H, W, dx);
        return;
    }
    const int64_t planes = N * C;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const float *restrict gp = dy + p * OH * OW;
        float *restrict dp = dx + p * H * W;
        for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t h0 = adaptive_start(oh, OH, H);
            const int64_t h1 = adaptive_end(oh, OH, H);
            for (int64_t ow = 0; ow < OW; ++ow) {
                const int64_t w0 = adaptive_start(ow, OW, W);
                const int64_t w1 = adaptive_end(ow, OW, W);
                const int64_t cnt = (h1 - h0) * (w1 - w0);
                if (cnt <= 0) continue;
                const float g = gp[oh * OW + ow] / (float)cnt;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw)
                        dp[ih * W + iw] += g;
            }
        }
    }
}
