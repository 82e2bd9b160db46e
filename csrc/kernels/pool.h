/* 2-D pooling kernels, float32, NCHW, with PyTorch semantics.
 *
 * Output sizes are computed by the caller (this is where ceil_mode lives):
 *   max: OH = floor_or_ceil((H + 2*ph - dh*(kh-1) - 1) / sh) + 1
 *   avg: OH = floor_or_ceil((H + 2*ph - kh) / sh) + 1
 *   and with ceil_mode the last window is dropped if it would start in the
 *   right/bottom padding ((OH-1)*sh >= H + ph  =>  OH -= 1).
 * Pure kernels: no allocation, cannot fail; parallel over the N*C planes,
 * results bit-identical for any thread count. Backward functions accumulate
 * (+=) into dx.
 */
#ifndef APPEALNET_KERNELS_POOL_H
#define APPEALNET_KERNELS_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x: [N, C, H, W] -> y: [N, C, OH, OW] (overwritten);
 * argmax: [N, C, OH, OW] or NULL, flat index ih*W + iw inside the plane of
 * the chosen element (-1 if a window had no element inside the image, which
 * PyTorch's size rules never produce; y is then -inf).
 * Padding counts as -inf; a NaN in a window wins (the last NaN, as PyTorch). */
void an_maxpool2d_forward_f32(const float *x, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t kh, int64_t kw,
                              int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                              int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                              float *y, int32_t *argmax);

/* dy: [N, C, OH, OW], argmax: [N, C, OH, OW] -> dx: [N, C, H, W] (+=). */
void an_maxpool2d_backward_f32(const float *dy, const int32_t *argmax,
                               int64_t N, int64_t C, int64_t H, int64_t W,
                               int64_t OH, int64_t OW, float *dx);

/* x: [N, C, H, W] -> y: [N, C, OH, OW] (overwritten).
 * Window of (oh, ow): rows oh*sh-ph .. +kh, clipped to H+ph (ceil_mode
 * overhang), columns likewise. Divisor: divisor_override if > 0, else the
 * count of that clipped window if count_include_pad, else the count of its
 * part inside the real image. A window with nothing inside the image gives 0. */
void an_avgpool2d_forward_f32(const float *x, int64_t N, int64_t C, int64_t H,
                              int64_t W, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw,
                              int count_include_pad, int64_t divisor_override,
                              int64_t OH, int64_t OW, float *y);

/* dy: [N, C, OH, OW] -> dx: [N, C, H, W] (+=), same window/divisor rules. */
void an_avgpool2d_backward_f32(const float *dy, int64_t N, int64_t C,
                               int64_t H, int64_t W, int64_t kh, int64_t kw,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int count_include_pad, int64_t divisor_override,
                               int64_t OH, int64_t OW, float *dx);

/* x: [N, C, H, W] -> y: [N, C, OH, OW] (overwritten). Output (oh, ow) averages
 * rows floor(oh*H/OH) .. ceil((oh+1)*H/OH)-1 and the analogous columns.
 * OH == OW == 1 takes the global-average fast path. */
void an_adaptive_avgpool2d_forward_f32(const float *x, int64_t N, int64_t C,
                                       int64_t H, int64_t W, int64_t OH,
                                       int64_t OW, float *y);

/* dy: [N, C, OH, OW] -> dx: [N, C, H, W] (+=). */
void an_adaptive_avgpool2d_backward_f32(const float *dy, int64_t N, int64_t C,
                                        int64_t H, int64_t W, int64_t OH,
                                        int64_t OW, float *dx);

/* Global average pool = adaptive (1, 1). x: [N, C, H, W] -> y: [N, C]. */
void an_global_avgpool2d_forward_f32(const float *x, int64_t N, int64_t C,
                                     int64_t H, int64_t W, float *y);

/* dy: [N, C] -> dx: [N, C, H, W] (+=, dy / (H*W) everywhere). */
void an_global_avgpool2d_backward_f32(const float *dy, int64_t N, int64_t C,
                                      int64_t H, int64_t W, float *dx);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_POOL_H */
