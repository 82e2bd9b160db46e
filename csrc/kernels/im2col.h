/* im2col / col2im for 2-D convolution lowered to GEMM.
 *
 * Both functions work on ONE image (or one group of one image) and are meant
 * to be called from inside a caller's (possibly parallel) loop, so they never
 * spawn threads themselves. Pure kernels: no allocation, cannot fail.
 */
#ifndef APPEALNET_KERNELS_IM2COL_H
#define APPEALNET_KERNELS_IM2COL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x:   [C, H, W]                      (one image's channels)
 * col: [C*kh*kw, OH*OW] row-major, row index (c*kh + i)*kw + j,
 *      col[row, oh*OW + ow] = x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
 *      or 0 where that position lies in the padding.
 * Used as out[Cout, OH*OW] = Wt[Cout, C*kh*kw] @ col.  col is overwritten. */
void an_im2col_f32(const float *x, int64_t C, int64_t H, int64_t W,
                   int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                   int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                   int64_t OH, int64_t OW, float *col);

/* Adjoint of an_im2col_f32: dx[C, H, W] += col2im(col[C*kh*kw, OH*OW]).
 * Padding positions of col are dropped. dx is accumulated into. */
void an_col2im_add_f32(const float *col, int64_t C, int64_t H, int64_t W,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                       int64_t OH, int64_t OW, float *dx);

/* The same with an explicit row stride: row r of col starts at col + r*ld
 * (ld >= OH*OW).  Lets several images share one column matrix
 * [C*kh*kw, images*OH*OW], image i's columns starting at col + i*OH*OW, so
 * a single GEMM with a wide N covers them all. */
void an_im2col_ld_f32(const float *x, int64_t C, int64_t H, int64_t W,
                      int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                      int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                      int64_t OH, int64_t OW, float *col, int64_t ld);
void an_col2im_add_ld_f32(const float *col, int64_t ld, int64_t C, int64_t H, int64_t W,
                          int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                          int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                          int64_t OH, int64_t OW, float *dx);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_IM2COL_H */
