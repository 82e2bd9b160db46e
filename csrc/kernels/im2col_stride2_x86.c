/* Stride-2 convolutions, and stride-1 ones on planes of at most 16
 * floats (an_im2col_small_plane_panel_avx512, below), with AVX-512 (see
 * im2col.h).  Stride 2: im2col panels
 * gathered straight from x (the forward's B, and through a transpose the
 * weight gradient's), and col2im a row of dx at a time; the col2im's lane
 * plan is built in portable C at the end.  A tap's run of up to 16 outputs along one output row reads
 * every other input of a span of at most 31: two masked loads (the masked
 * lanes, outside the row, are neither read nor fault) and one two-source
 * permute of the even lanes.  The forward of ResNet-20's and ResNet-18's
 * stride-2 layers otherwise copied each image into its four zero-padded
 * stride phases first (pad_phases in ops/conv.c, 17% of the 32 -> 64
 * layer's forward on a Zen 5) and then copied runs of the phases into the
 * panels (15%).  It only moves values and zeros, so the panels, and the
 * sums, are the same as through the phases. */
#include "kernels/im2col.h"
#include "kernels/isa_variants.h"

#ifdef AN_HAVE_STRIDE2_AVX512
#include <immintrin.h>

/* Bits [lo, hi) of a 32-bit mask (empty when hi <= lo). */
static inline uint32_t lane_range(int64_t lo, int64_t hi)
{
    if (lo < 0) lo = 0;
    if (hi > 32) hi = 32;
    if (hi <= lo) return 0;
    const uint32_t below_hi = hi == 32 ? 0xFFFFFFFFu : (1u << hi) - 1u;
    return below_hi & ~((1u << lo) - 1u);
}

AN_TARGET_AVX512 void an_im2col_stride2_panel_avx512(const an_stride2_panel_source *s, int64_t k0,
                                                     int64_t kc, int64_t j0, int64_t cols,
                                                     int width, float *panel)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const int64_t OW = s->OW, W = s->W, HW = s->H * s->W, kw = s->kw, kh = s->kh;
    const int64_t per_image = s->rows * OW;
    for (int64_t j = 0; j < cols;) {
        /* a run of columns along one output row of one image */
        const int64_t col = j0 + j, image = col / per_image, rem = col % per_image;
        const int64_t oh = s->oh0 + rem / OW, ow0 = rem % OW;
        const int64_t run = OW - ow0 < cols - j ? OW - ow0 : cols - j;
        const float *xi = s->x + image * s->image_floats;
        /* per tap (ki, kj) of the kernel: where its span of the run starts
           in a channel plane, and which of the span's 32 lanes lie inside
           the plane (none when the input row is padding) */
        int64_t at_tap[AN_STRIDE2_MAX_TAPS * AN_STRIDE2_MAX_TAPS];
        uint32_t lanes_tap[AN_STRIDE2_MAX_TAPS * AN_STRIDE2_MAX_TAPS];
        const uint32_t span = lane_range(0, 2 * run - 1);
        for (int64_t ki = 0; ki < kh; ki++) {
            const int64_t ih = 2 * oh - s->ph + ki;
            for (int64_t kj = 0; kj < kw; kj++) {
                const int64_t iw0 = 2 * ow0 - s->pw + kj;
                at_tap[ki * kw + kj] = ih * W + iw0;
                lanes_tap[ki * kw + kj] =
                    ih >= 0 && ih < s->H ? lane_range(-iw0, W - iw0) & span : 0;
            }
        }
        const __mmask16 keep = (__mmask16)((1u << run) - 1u);
        const int64_t taps = kh * kw;
        const float *plane = xi + k0 / taps * HW;
        int64_t tap = k0 % taps;
        if (2 * run - 1 <= 16) {
            /* the span fits one vector: one load, a one-source permute */
            for (int64_t k = 0; k < kc; k++) {
                const uintptr_t at = (uintptr_t)plane + (uintptr_t)(at_tap[tap] * (int64_t)sizeof(float));
                const __m512 v = _mm512_maskz_loadu_ps((__mmask16)lanes_tap[tap], (const float *)at);
                _mm512_mask_storeu_ps(panel + k * width + j, keep, _mm512_permutexvar_ps(even, v));
                if (++tap == taps) {
                    tap = 0;
                    plane += HW;
                }
            }
        } else {
            for (int64_t k = 0; k < kc; k++) {
                /* the address of lane 0, possibly outside the row: only
                   lanes inside it are loaded */
                const uintptr_t at = (uintptr_t)plane + (uintptr_t)(at_tap[tap] * (int64_t)sizeof(float));
                const uint32_t lanes = lanes_tap[tap];
                const __m512 lo = _mm512_maskz_loadu_ps((__mmask16)lanes, (const float *)at);
                const __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(lanes >> 16), (const float *)(at + 64));
                _mm512_mask_storeu_ps(panel + k * width + j, keep, _mm512_permutex2var_ps(lo, even, hi));
                if (++tap == taps) {
                    tap = 0;
                    plane += HW;
                }
            }
        }
        j += run;
    }
    for (int64_t k = 0; k < kc && cols < width; k++)
        for (int64_t jj = cols; jj < width; jj++)
            panel[k * width + jj] = 0.0f;
}

/* Small planes (im2col.h): the column matrix's row for tap t over one
 * image is its channel's plane permuted, output lane p taking input lane
 * index[t][p], zero where that input lies in the padding.  The padded path
 * (pad_tile and pack_padded_panel in ops/conv.c) copied every image into a
 * zero-padded 6x6 plane and then gathered four runs of 4 floats per tap:
 * 6% of the forward of a 512 -> 512 layer on 4x4 at batch 32.  The same
 * values and zeros, so the same sums. */
AN_TARGET_AVX512 void an_im2col_small_plane_panel_avx512(const an_small_plane_source *s,
                                                         int64_t k0, int64_t kc, int64_t j0,
                                                         int64_t cols, int width, float *panel)
{
    const int64_t taps = s->taps, HW = s->HW, OHW = s->OHW;
    const __mmask16 plane_lanes = (__mmask16)((1u << HW) - 1u);
    for (int64_t j = 0; j < cols;) {
        /* the columns of one image: its pixels [p0, p0 + run) */
        const int64_t col = j0 + j, image = col / OHW, p0 = col % OHW;
        const int64_t run = OHW - p0 < cols - j ? OHW - p0 : cols - j;
        const __mmask16 keep = (__mmask16)(((1u << run) - 1u) << p0);
        /* where lane 0 would go, possibly before the row: only lanes
           [p0, p0 + run) are stored */
        const uintptr_t lane0 = (uintptr_t)(panel + j) - (uintptr_t)(p0 * (int64_t)sizeof(float));
        const float *plane = s->x + image * s->image_floats + k0 / taps * HW;
        int64_t tap = k0 % taps;
        __m512 v = _mm512_maskz_loadu_ps(plane_lanes, plane);
        for (int64_t k = 0; k < kc; k++) {
            const __m512 taken = _mm512_maskz_permutexvar_ps(
                (__mmask16)s->inside[tap], _mm512_load_si512(s->index[tap]), v);
            _mm512_mask_storeu_ps((float *)(lane0 + (uintptr_t)(k * width * (int64_t)sizeof(float))),
                                  keep, taken);
            if (++tap == taps && k + 1 < kc) {
                tap = 0;
                plane += HW;
                v = _mm512_maskz_loadu_ps(plane_lanes, plane);
            }
        }
        j += run;
    }
    for (int64_t k = 0; k < kc && cols < width; k++)
        for (int64_t jj = cols; jj < width; jj++)
            panel[k * width + jj] = 0.0f;
}

/* One channel of a stride-2 col2im (an_col2im_add_ld_f32 with C = 1,
 * dilation 1, OW <= 16): for each kernel row i and output row oh, the
 * input row that they reach is loaded once as lanes L = 2 ow + j of up to
 * three vectors (input column L - pw), each tap column j's OW values are
 * spread onto its lanes by a permute and added under a mask (lanes of
 * other taps, and -0.0 there, are left alone), and the row is stored once.
 * A fixed kernel row reaches an input row from one output row only, so
 * each element receives its additions in the scalar loop's order (kernel
 * row, then tap column): the same bits.  A load and store per tap instead
 * lost: each masked store was followed at once by the next tap's load of
 * the same span, which the store could not forward. */
static inline __attribute__((always_inline)) AN_TARGET_AVX512 void
col2im_stride2_rows(const int vectors, const an_col2im_stride2_plan *plan, const float *col,
                    int64_t ld, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t ph, int64_t pw,
                    int64_t OH, int64_t OW, float *dx)
{
    const __mmask16 values = (__mmask16)((1u << OW) - 1u);
    for (int64_t i = 0; i < kh; ++i) {
        for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t ih = 2 * oh - ph + i;
            if (ih < 0 || ih >= H) continue;
            /* lane 0 is input column -pw: only lanes inside the row are touched */
            const uintptr_t row = (uintptr_t)(dx + ih * W) - (uintptr_t)(pw * (int64_t)sizeof(float));
            __m512 acc[3];
            for (int r = 0; r < vectors; ++r)
                acc[r] = _mm512_maskz_loadu_ps(plan->row_lanes[r], (const float *)(row + 64 * (uintptr_t)r));
            for (int64_t j = 0; j < kw; ++j) {
                const __m512 v = _mm512_maskz_loadu_ps(values, col + (i * kw + j) * ld + oh * OW);
                for (int r = 0; r < vectors; ++r)
                    acc[r] = _mm512_mask_add_ps(
                        acc[r], plan->taken[j][r], acc[r],
                        _mm512_permutexvar_ps(_mm512_load_si512(plan->index[j][r]), v));
            }
            for (int r = 0; r < vectors; ++r)
                _mm512_mask_storeu_ps((float *)(row + 64 * (uintptr_t)r), plan->row_lanes[r], acc[r]);
        }
    }
}

AN_TARGET_AVX512 void an_col2im_add_stride2_avx512(const an_col2im_stride2_plan *plan,
                                                   const float *col, int64_t ld, int64_t H,
                                                   int64_t W, int64_t kh, int64_t kw, int64_t ph,
                                                   int64_t pw, int64_t OH, int64_t OW, float *dx)
{
    switch (plan->vectors) {
    case 1: col2im_stride2_rows(1, plan, col, ld, H, W, kh, kw, ph, pw, OH, OW, dx); return;
    case 2: col2im_stride2_rows(2, plan, col, ld, H, W, kh, kw, ph, pw, OH, OW, dx); return;
    default: col2im_stride2_rows(3, plan, col, ld, H, W, kh, kw, ph, pw, OH, OW, dx); return;
    }
}

#endif

void an_col2im_stride2_plan_init(an_col2im_stride2_plan *plan, int64_t W, int64_t kw, int64_t pw,
                                 int64_t OW)
{
    const int64_t span = 2 * (OW - 1) + kw; /* lanes 0 .. 2 (OW-1) + kw - 1 */
    plan->vectors = (int)((span + 15) / 16);
    for (int r = 0; r < 3; ++r) plan->row_lanes[r] = 0;
    for (int64_t j = 0; j < kw; ++j) {
        /* outputs ow with 0 <= 2 ow + j - pw < W */
        const int64_t first = j - pw >= 0 ? 0 : (pw - j + 1) / 2;
        int64_t end = W - (j - pw) > 0 ? (W - (j - pw) + 1) / 2 : 0;
        if (end > OW) end = OW;
        for (int r = 0; r < 3; ++r) {
            uint32_t lanes = 0;
            for (int l = 0; l < 16; ++l) {
                const int64_t twice_ow = 16 * r + l - j, ow = twice_ow / 2;
                plan->index[j][r][l] = twice_ow >= 0 && ow < 16 ? (int32_t)ow : 0;
                if (twice_ow >= 0 && twice_ow % 2 == 0 && ow >= first && ow < end) lanes |= 1u << l;
            }
            plan->taken[j][r] = (uint16_t)lanes;
            plan->row_lanes[r] = (uint16_t)(plan->row_lanes[r] | lanes);
        }
    }
}
