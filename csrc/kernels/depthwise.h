/* Direct depthwise 2-D convolution (groups == C_in), float32, NCHW.
 *
 * Input channel c feeds output channels c*multiplier .. c*multiplier +
 * multiplier-1, so C_out = C * multiplier and the weight is
 * [C_out, 1, kh, kw]. Output size OH, OW is computed by the caller:
 *   OH = (H + 2*ph - dh*(kh-1) - 1) / sh + 1   (likewise OW).
 * Pure kernels: no allocation, cannot fail; parallel (OpenMP) inside, with
 * results bit-identical for any thread count. Backward functions accumulate
 * (+=) into their gradient outputs.
 */
#ifndef APPEALNET_KERNELS_DEPTHWISE_H
#define APPEALNET_KERNELS_DEPTHWISE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x: [N, C, H, W]; w: [C*multiplier, 1, kh, kw]; bias: [C*multiplier] or NULL;
 * y: [N, C*multiplier, OH, OW] (overwritten). */
void an_depthwise_conv2d_forward_f32(
    const float *x, const float *w, const float *bias,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *y);

/* The same with an activation (AN_GEMM_ACT_NONE / _RELU / _RELU6 of
   kernels/gemm.h) applied to each plane as it is written: the same bits as
   the forward followed by an_bias_act_rows over y, without the extra pass. */
void an_depthwise_conv2d_forward_act_f32(
    const float *x, const float *w, const float *bias,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, int act, float *y);

/* The same, and with `moments` non-NULL ([N * C * multiplier][2] doubles)
   the output planes' moments for a batch norm's statistics
   (an_batchnorm_plane_moments_f32), computed on each plane or block of
   planes right after it is written, while it is in cache.  Returns 1 when
   the moments were computed, 0 when this shape's path does not compute
   them (the caller then makes its own pass over y); 0 for NULL. */
int an_depthwise_conv2d_forward_moments_f32(
    const float *x, const float *w, const float *bias,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, int act, float *y, double *moments);

/* Whether the forward above runs a 3x3, padding-1, stride-`stride`
 * depthwise layer (multiplier 1) on H x W planes plane by plane, row by row
 * (planes of whole vectors up to 64x64, not the 4/8-wide or channels-last
 * paths).  Then an_depthwise3x3_rows_f32 computes any band of its output
 * rows with the same bits: output rows [r0, r1) of channels [0, C) of
 * H x W planes, plane c of x at x + c * x_plane (rows r0 - 1 .. r1 for
 * stride 1, 2 r0 - 1 .. 2 r1 - 1 for stride 2 are read, those outside
 * [0, H) taken as zero), row r0 of output plane c at y + c * y_plane (the
 * band's rows one after the other), act as in the forward.  H may be a
 * band's height: a caller that copies a band of rows with its neighbour
 * rows into a buffer of its own gets the band's outputs from that buffer.
 * On the calling thread (no parallel region). */
int an_depthwise3x3_rows_applies(int64_t H, int64_t W, int64_t stride);
void an_depthwise3x3_rows_f32(const float *x, int64_t x_plane, const float *w, const float *bias,
                              int64_t C, int64_t H, int64_t W, int64_t stride, int64_t r0,
                              int64_t r1, int act, float *y, int64_t y_plane);
/* Whether the forward above takes a band of band_rows rows of W-wide
 * planes (3x3, stride `stride`, padding 0 over the rows, whose frame rows
 * the caller supplies as zeros, and 1 over the columns) with its
 * channels-last small-plane kernel, whose sums are those of the padded
 * layer's (bias, then the taps in row-major order, a tap on padding adding
 * w * 0).  The kernel has a parallel region of its own; inside another one
 * it runs on the calling thread. */
int an_depthwise3x3_band_applies(int64_t band_rows, int64_t W, int64_t stride);
/* dy: [N, C*multiplier, OH, OW]; w: [C*multiplier, 1, kh, kw];
 * dx: [N, C, H, W] (accumulated into). */
void an_depthwise_conv2d_backward_input_f32(
    const float *dy, const float *w,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *dx);

/* dy: [N, C*multiplier, OH, OW]; x: [N, C, H, W];
 * dweight: [C*multiplier, 1, kh, kw] (accumulated into);
 * dbias: [C*multiplier] or NULL (accumulated into). */
void an_depthwise_conv2d_backward_weight_f32(
    const float *dy, const float *x,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *dweight,
    float *dbias);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_DEPTHWISE_H */
