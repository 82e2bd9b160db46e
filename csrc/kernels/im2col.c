/* im2col / col2im, see im2col.h.
 *
 * Instead of testing every element against the image bounds, each
 * (kernel row i, kernel column j, output row oh) triple is handled as one
 * output row segment: the range of ow whose input column falls inside the
 * image is computed once with integer arithmetic, the parts left and right of
 * it are zero (im2col) or skipped (col2im), and the middle is a plain copy
 * (memcpy when the stride is 1) or a strided gather/scatter.
 */
#include "im2col.h"

#include <string.h>

/* Outputs o in [0, n_out) read input position o*stride + offset. Returns in
 * [*lo, *hi) the o whose position lies in [0, n_in); lo <= hi always. */
static inline void valid_output_range(int64_t n_out, int64_t n_in,
                                      int64_t stride, int64_t offset,
                                      int64_t *lo, int64_t *hi)
{
    int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t end = offset >= n_in ? 0 : (n_in - offset + stride - 1) / stride;
    if (first > n_out) first = n_out;
    if (end > n_out) end = n_out;
    if (end < first) end = first;
    *lo = first;
    *hi = end;
}

/* x: [C,H,W] -> col: [C*kh*kw, OH*OW] */
void an_im2col_f32(const float *x, int64_t C, int64_t H, int64_t W,
                   int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                   int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                   int64_t OH, int64_t OW, float *col)
{
    an_im2col_ld_f32(x, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, col, OH * OW);
}

/* x: [C,H,W] -> col rows of stride ld */
void an_im2col_ld_f32(const float *x, int64_t C, int64_t H, int64_t W,
                      int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                      int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                      int64_t OH, int64_t OW, float *col, int64_t ld)
{
    for (int64_t c = 0; c < C; ++c) {
        const float *restrict xc = x + c * H * W;
        for (int64_t i = 0; i < kh; ++i) {
            for (int64_t j = 0; j < kw; ++j) {
                float *restrict dst = col + ((c * kh + i) * kw + j) * ld;
                const int64_t col_off = j * dw - pw;
                int64_t ow_lo, ow_hi;
                valid_output_range(OW, W, sw, col_off, &ow_lo, &ow_hi);
                for (int64_t oh = 0; oh < OH; ++oh) {
                    float *restrict drow = dst + oh * OW;
                    const int64_t ih = oh * sh - ph + i * dh;
                    if (ih < 0 || ih >= H || ow_lo == ow_hi) {
                        memset(drow, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    /* input column of output ow is ow*sw + col_off */
                    const float *restrict xrow = xc + ih * W;
                    if (ow_lo > 0)
                        memset(drow, 0, (size_t)ow_lo * sizeof(float));
                    if (sw == 1) {
                        memcpy(drow + ow_lo, xrow + ow_lo + col_off,
                               (size_t)(ow_hi - ow_lo) * sizeof(float));
                    } else if (sw == 2) {
                        /* constant stride lets the compiler use shuffles */
                        for (int64_t ow = ow_lo; ow < ow_hi; ++ow)
                            drow[ow] = xrow[2 * ow + col_off];
                    } else {
                        for (int64_t ow = ow_lo; ow < ow_hi; ++ow)
                            drow[ow] = xrow[ow * sw + col_off];
                    }
                    if (ow_hi < OW)
                        memset(drow + ow_hi, 0,
                               (size_t)(OW - ow_hi) * sizeof(float));
                }
            }
        }
    }
}

/* col: [C*kh*kw, OH*OW] -> dx: [C,H,W] (accumulate) */
void an_col2im_add_f32(const float *col, int64_t C, int64_t H, int64_t W,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                       int64_t OH, int64_t OW, float *dx)
{
    an_col2im_add_ld_f32(col, OH * OW, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, dx);
}

/* col rows of stride ld -> dx: [C,H,W] (accumulate) */
void an_col2im_add_ld_f32(const float *col, int64_t ld, int64_t C, int64_t H, int64_t W,
                          int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                          int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                          int64_t OH, int64_t OW, float *dx)
{
    for (int64_t c = 0; c < C; ++c) {
        float *restrict dxc = dx + c * H * W;
        for (int64_t i = 0; i < kh; ++i) {
            for (int64_t j = 0; j < kw; ++j) {
                const float *restrict src =
                    col + ((c * kh + i) * kw + j) * ld;
                const int64_t col_off = j * dw - pw;
                int64_t ow_lo, ow_hi;
                valid_output_range(OW, W, sw, col_off, &ow_lo, &ow_hi);
                if (ow_lo == ow_hi) continue;
                for (int64_t oh = 0; oh < OH; ++oh) {
                    const int64_t ih = oh * sh - ph + i * dh;
                    if (ih < 0 || ih >= H) continue;
                    const float *restrict srow = src + oh * OW;
                    float *restrict xrow = dxc + ih * W;
                    if (sw == 1) {
                        for (int64_t ow = ow_lo; ow < ow_hi; ++ow)
                            xrow[ow + col_off] += srow[ow];
                    } else {
                        for (int64_t ow = ow_lo; ow < ow_hi; ++ow)
                            xrow[ow * sw + col_off] += srow[ow];
                    }
                }
            }
        }
    }
}

void an_small_plane_source_init(an_small_plane_source *s, const float *x, int64_t image_floats,
                                int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh,
                                int64_t kw, int64_t ph, int64_t pw, int64_t dh, int64_t dw)
{
    s->x = x;
    s->image_floats = image_floats;
    s->HW = H * W;
    s->OHW = OH * OW;
    s->taps = kh * kw;
    for (int64_t t = 0; t < s->taps; t++) {
        const int64_t ki = t / kw, kj = t % kw;
        unsigned lanes = 0;
        for (int64_t p = 0; p < AN_SMALL_PLANE_MAX_FLOATS; p++) {
            const int64_t ih = p / OW - ph + ki * dh, iw = p % OW - pw + kj * dw;
            const int in_plane = p < s->OHW && ih >= 0 && ih < H && iw >= 0 && iw < W;
            s->index[t][p] = in_plane ? (int32_t)(ih * W + iw) : 0;
            lanes |= (unsigned)in_plane << p;
        }
        s->inside[t] = (uint16_t)lanes;
    }
}
