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

/* A stride-2 convolution's column matrix over `rows` output rows from oh0
 * of consecutive images (image i at x + i * image_floats, first channel of
 * the group): column j is output (image j / (rows*OW), row oh0 +
 * j % (rows*OW) / OW, column j % OW), row k tap (c, ki, kj) = (k / (kh*kw),
 * k / kw % kh, k % kw), dilation 1. */
#define AN_STRIDE2_MAX_TAPS 16
#define AN_STRIDE2_MAX_OW 16
typedef struct {
    const float *x;
    int64_t image_floats;
    int64_t H, W, kh, kw, ph, pw; /* kh, kw <= AN_STRIDE2_MAX_TAPS */
    int64_t OW;                   /* <= AN_STRIDE2_MAX_OW: a run fits one vector */
    int64_t oh0, rows;
} an_stride2_panel_source;

/* Where each tap column's values land in a stride-2 input row, as lanes
 * L = 2 ow + j of up to three vectors (input column L - pw): a permute
 * index and a lane mask per (tap column, vector), the lanes of all of them,
 * and how many vectors the row's span needs.  It depends on the sizes
 * only: built once per tile, in portable C. */
typedef struct {
    _Alignas(64) int32_t index[AN_STRIDE2_MAX_TAPS][3][16];
    uint16_t taken[AN_STRIDE2_MAX_TAPS][3];
    uint16_t row_lanes[3];
    int vectors;
} an_col2im_stride2_plan;
void an_col2im_stride2_plan_init(an_col2im_stride2_plan *plan, int64_t W, int64_t kw, int64_t pw,
                                 int64_t OW);

/* A stride-1 convolution on planes of at most 16 floats (input and
 * output: ResNet-18's and ResNet-101's 4x4 layers): column j of the
 * column matrix of consecutive whole images (image i at x + i *
 * image_floats, first channel of the group) is output pixel j % (OH*OW) of
 * image j / (OH*OW); row k is tap (c, ki, kj) = (k / (kh*kw), k / kw % kh,
 * k % kw). */
#define AN_SMALL_PLANE_MAX_FLOATS 16
#define AN_SMALL_PLANE_MAX_TAPS 25
typedef struct {
    const float *x;
    int64_t image_floats;
    int64_t HW, OHW, taps; /* H * W and OH * OW <= AN_SMALL_PLANE_MAX_FLOATS */
    /* output lane p of tap t takes input lane index[t][p], or 0 where bit p
       of inside[t] is clear (the input lies in the padding) */
    _Alignas(64) int32_t index[AN_SMALL_PLANE_MAX_TAPS][AN_SMALL_PLANE_MAX_FLOATS];
    uint16_t inside[AN_SMALL_PLANE_MAX_TAPS];
} an_small_plane_source;
/* Fills s for images of H x W planes (kh * kw <= AN_SMALL_PLANE_MAX_TAPS),
 * in portable C: once per tile, not per panel. */
void an_small_plane_source_init(an_small_plane_source *s, const float *x, int64_t image_floats,
                                int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh,
                                int64_t kw, int64_t ph, int64_t pw, int64_t dh, int64_t dw);

/* The AVX-512 stride-2 and small-plane kernels below are built (x86-64
   with GCC or Clang); callers guard their use with this and check the ISA. */
#if defined(__x86_64__) && defined(__GNUC__)
#define AN_HAVE_STRIDE2_AVX512 1
#endif

#ifdef AN_HAVE_STRIDE2_AVX512
/* Rows [k0, k0+kc) of columns [j0, j0+cols) packed as panel[k * width + j]
 * (columns [cols, width) zero), with AVX-512: the caller checks the ISA. */
void an_im2col_stride2_panel_avx512(const an_stride2_panel_source *s, int64_t k0, int64_t kc,
                                    int64_t j0, int64_t cols, int width, float *panel);
/* The same for a stride-1 small-plane convolution (an_small_plane_source):
 * each tap of a channel is its plane, loaded once into a vector, permuted
 * with the lanes that fall in the padding zeroed. */
void an_im2col_small_plane_panel_avx512(const an_small_plane_source *s, int64_t k0, int64_t kc,
                                        int64_t j0, int64_t cols, int width, float *panel);
/* an_col2im_add_ld_f32 for one channel (C = 1), stride 2, dilation 1,
 * OW <= AN_STRIDE2_MAX_OW and kw <= AN_STRIDE2_MAX_TAPS, with AVX-512: the
 * same bits.  `plan` comes from an_col2im_stride2_plan_init. */
void an_col2im_add_stride2_avx512(const an_col2im_stride2_plan *plan, const float *col, int64_t ld,
                                  int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t ph,
                                  int64_t pw, int64_t OH, int64_t OW, float *dx);
#endif

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_IM2COL_H */
