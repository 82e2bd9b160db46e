/* Direct depthwise convolution, see depthwise.h.
 *
 * Every output element is computed as
 *     acc = bias;  acc += w[i][j] * x[...]   for the taps (i, j) in row-major
 *                                             order that fall inside the image
 * by all code paths (generic row-wise, 3x3 interior, checked border points),
 * so the fast paths give bit-identical results to the generic one and the
 * result does not depend on how work is split between threads.
 */
#include "depthwise.h"

#include "cpu/cpu.h"
#include "kernels/batchnorm.h"
#include "kernels/gemm.h"
#include "kernels/gemm_pack.h"
#include "kernels/isa_variants.h"
#include "kernels/vec16.h"

#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this much work a parallel region (thread wake-up) costs more than it saves. */
#define KERNEL_PARALLEL_GRAIN 32768

/* activation codes of an_depthwise_conv2d_forward_act_f32 (the GEMM's) */
#define DW_ACT_NONE AN_GEMM_ACT_NONE
#define DW_ACT_RELU AN_GEMM_ACT_RELU
#define DW_ACT_RELU6 AN_GEMM_ACT_RELU6

/* body(ctx, begin, end) over [0, n) in independent items.  With more than
 * KERNEL_PARALLEL_GRAIN of `work`, a team splits the items in contiguous
 * runs; inside another parallel region (a fused block's threads, each
 * passing its own share of planes) the calling thread runs them all, with
 * no nested team of one per call. */
typedef void (*share_fn)(const void *ctx, int64_t begin, int64_t end);

static inline void run_shared(int64_t n, int64_t work, share_fn body, const void *ctx)
{
#ifdef _OPENMP
    if (work > KERNEL_PARALLEL_GRAIN && !omp_in_parallel()) {
#pragma omp parallel
        {
            const int64_t team = omp_get_num_threads(), thread = omp_get_thread_num();
            body(ctx, n * thread / team, n * (thread + 1) / team);
        }
        return;
    }
#else
    (void)work;
#endif
    body(ctx, 0, n);
}

/* A forward path's plane ranges followed, block by block, by the moments
 * of the planes just written (for the batch norm after the layer, see
 * an_depthwise_conv2d_forward_moments_f32): about 64 KB of output a block,
 * so that its moments read it from L2 at the latest. */
#define MOMENTS_BLOCK_BYTES 65536

typedef struct {
    share_fn body; /* the path's, over planes */
    const void *ctx;
    const float *y;
    int64_t OHW;
    double *moments;
} moments_share;

static void planes_then_moments(const void *ctx, int64_t p0, int64_t p1)
{
    const moments_share *m = ctx;
    int64_t block = MOMENTS_BLOCK_BYTES / (m->OHW * (int64_t)sizeof(float));
    if (block < 1) block = 1;
    for (int64_t b0 = p0; b0 < p1; b0 += block) {
        const int64_t b1 = p1 - b0 < block ? p1 : b0 + block;
        m->body(m->ctx, b0, b1);
        an_batchnorm_plane_moments_f32(m->y + b0 * m->OHW, b1 - b0, m->OHW, m->moments + 2 * b0);
    }
}

/* run_shared over planes, with their moments when `moments` is non-NULL. */
static void run_planes(int64_t planes, int64_t work, share_fn body, const void *ctx,
                       const float *y, int64_t OHW, double *moments)
{
    if (!moments) {
        run_shared(planes, work, body, ctx);
        return;
    }
    const moments_share m = {body, ctx, y, OHW, moments};
    run_shared(planes, work, planes_then_moments, &m);
}

/* Index of an activation code in the kernels' per-activation tables. */
static inline int act_index(int act)
{
    return act == DW_ACT_RELU6 ? 2 : act == DW_ACT_RELU ? 1 : 0;
}

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

/* One output point with bounds checks (used for borders). */
static inline float conv_point_checked(const float *restrict xp,
                                       const float *restrict wk, float init,
                                       int64_t H, int64_t W, int64_t kh,
                                       int64_t kw, int64_t dh, int64_t dw,
                                       int64_t ih0, int64_t iw0)
{
    float acc = init;
    for (int64_t i = 0; i < kh; ++i) {
        const int64_t ih = ih0 + i * dh;
        if (ih < 0 || ih >= H) continue;
        for (int64_t j = 0; j < kw; ++j) {
            const int64_t iw = iw0 + j * dw;
            if (iw < 0 || iw >= W) continue;
            acc += wk[i * kw + j] * xp[ih * W + iw];
        }
    }
    return acc;
}

/* Generic plane: xp [H,W], wk [kh,kw] -> yp [OH,OW]. Each output row is
 * built tap by tap over the ow range that is inside the image, so the inner
 * loops are branch-free and unit stride when sw == 1. */
static void forward_plane_generic(const float *restrict xp,
                                  const float *restrict wk, float b,
                                  int64_t H, int64_t W, int64_t kh, int64_t kw,
                                  int64_t sh, int64_t sw, int64_t ph,
                                  int64_t pw, int64_t dh, int64_t dw,
                                  int64_t OH, int64_t OW, float *restrict yp)
{
    for (int64_t oh = 0; oh < OH; ++oh) {
        float *restrict yrow = yp + oh * OW;
        for (int64_t ow = 0; ow < OW; ++ow) yrow[ow] = b;
        for (int64_t i = 0; i < kh; ++i) {
            const int64_t ih = oh * sh - ph + i * dh;
            if (ih < 0 || ih >= H) continue;
            const float *restrict xrow = xp + ih * W;
            for (int64_t j = 0; j < kw; ++j) {
                const int64_t off = j * dw - pw;
                const float wv = wk[i * kw + j];
                int64_t lo, hi;
                valid_output_range(OW, W, sw, off, &lo, &hi);
                if (sw == 1) {
                    for (int64_t ow = lo; ow < hi; ++ow)
                        yrow[ow] += wv * xrow[ow + off];
                } else {
                    for (int64_t ow = lo; ow < hi; ++ow)
                        yrow[ow] += wv * xrow[ow * sw + off];
                }
            }
        }
    }
}

/* acc + the 9 taps of a 3x3 window whose rows start at x0[i], x1[i],
 * x2[i], in row-major tap order (the order every path sums in). */
static AN_ALWAYS_INLINE float taps3x3(float acc, const float *restrict x0, const float *restrict x1,
                                      const float *restrict x2, int64_t i, const float *restrict w)
{
    acc += w[0] * x0[i];
    acc += w[1] * x0[i + 1];
    acc += w[2] * x0[i + 2];
    acc += w[3] * x1[i];
    acc += w[4] * x1[i + 1];
    acc += w[5] * x1[i + 2];
    acc += w[6] * x2[i];
    acc += w[7] * x2[i + 1];
    acc += w[8] * x2[i + 2];
    return acc;
}

/* Planes whose zero-framed copy has at most this many floats (66 x 66, i.e.
 * up to 64 x 64; 17 KB of stack) are convolved from that copy. */
#define SMALL_PADDED_PLANE 4356

/* The activation of one output, as an_epilogue_rows computes it. */
static AN_ALWAYS_INLINE float activate_one(float v, int act)
{
    if (act != DW_ACT_NONE)
        v = v <= 0.0f ? 0.0f : v; /* NaN passes, -0 becomes +0, as in relu */
    if (act == DW_ACT_RELU6)
        v = v >= 6.0f ? 6.0f : v;
    return v;
}

/* The vector width of each ISA's build (AN_BY_ISA(AN_ROW_LANES_) at run
 * time): AVX2 keeps a vector in one ymm register. */
#define AN_ROW_LANES_generic 16
#define AN_ROW_LANES_avx2 8
#define AN_ROW_LANES_avx512 16

#ifdef AN_HAVE_VEC16
#define AN_HAVE_ROW_VEC 1
/* loops over registers: unrolled so that acc[] and w[] stay in registers */
#define AN_UNROLL _Pragma("GCC unroll 16")
/* Output rows computed together by rows3x3_s1. */
#define ROW_BLOCK 4

/* An input row outside the plane, for the stride-2 kernels that read rows
   through a pointer (rows3x3_s2_avx2, s2d_split): up to 64 floats wide. */
#define ZERO_ROW_FLOATS 64
static const float zero_row[ZERO_ROW_FLOATS] = {0};

#define FLAT_GROUP 4    /* output vectors computed together */
#define FLAT_MAX_PLANE 256
#define FLAT_PAD 16     /* >= W + 1, and a whole vector so the copies stay aligned */
#define FLAT_SLOT (FLAT_MAX_PLANE + 2 * FLAT_PAD)
#define FLAT_COPY (FLAT_GROUP * FLAT_SLOT) /* one copy: a slot per plane of a group */
#define FLAT_BUFFER (3 * FLAT_COPY)          /* copies for the left, centre and right taps */

/* planes p = (image, channel) of x [planes, H, W] -> y; channel p % C */
typedef struct {
    const float *x, *w, *bias;
    float *y;
    int64_t planes, C, H, W;
    int rotate, accumulate, act;
} flat_job;

static int row_lanes(void) { return AN_BY_ISA(AN_ROW_LANES_); }

#define ROW_LANES 16
#define ROW_IOTA ((an_mask16){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
#include "kernels/depthwise_rows_impl.h"
#undef ROW_LANES
#undef ROW_IOTA
#define ROW_LANES 8
#define ROW_IOTA ((an_mask8){0, 1, 2, 3, 4, 5, 6, 7})
#include "kernels/depthwise_rows_impl.h"
#undef ROW_LANES
#undef ROW_IOTA

/* rows3x3_s1 / rows3x3_s2 / flat3x3_s1_body at width LANES (a compile-time
 * constant in every caller) */
static AN_ALWAYS_INLINE void rows3x3_s1(const int LANES, const float *restrict xp, int64_t H,
                                        int64_t W, int64_t oh0, const int ROWS,
                                        const float *restrict wk, float b, const int accumulate,
                                        const int act, float *restrict y)
{
    if (LANES == 8)
        rows3x3_s1_L8(xp, H, W, oh0, ROWS, wk, b, accumulate, act, y);
    else
        rows3x3_s1_L16(xp, H, W, oh0, ROWS, wk, b, accumulate, act, y);
}

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include "kernels/simd_activate.h"

/* rows3x3_s2 at 8 lanes on AVX2: the same sums, with the columns split by
 * vshufps, which keeps 128-bit lanes apart.  Splitting x[2c .. 2c + 15]
 * that way gives output columns c, c+1, c+4, c+5, c+2, c+3, c+6, c+7 in its
 * 8 lanes, for the centre taps (even columns) and the right ones (odd), and
 * the left taps come in the same order from the odd columns of
 * x[2c - 2 .. 2c + 13] (at c = 0 a masked load that reads zero for column
 * -1, reading nothing outside the row); each sum then runs in that order
 * and one vpermpd puts the outputs back before the store.  The generic
 * two-source shuffles of rows3x3_s2_L8 compiled to two vpermd and a blend
 * each, the left tap to a cross-lane pair, and the 9 weights, the
 * accumulators and the rows left gcc short of registers (a test and branch
 * per input row, weights reloaded from the stack).  On the Zen 3, 144 32x32
 * planes to 16x16, alternating processes: 0.73x that kernel's time on one
 * thread, 0.65x on two; MobileNetV2's fused stride-2 block on them 0.93x
 * with the chunked bands of the same round. */
#define S2_AVX2_MAX_W ZERO_ROW_FLOATS /* rows up to the zero row's width; wider ones take rows3x3_s2_L8 */

AN_TARGET_AVX2 static AN_ALWAYS_INLINE void rows3x3_s2_avx2_body(
    const float *restrict xp, int64_t H, int64_t W, int64_t oh0, const int ROWS,
    const float *restrict wk, float b, const int act, float *restrict y)
{
    const __m256i past_column_minus_one = _mm256_setr_epi32(0, 0, -1, -1, -1, -1, -1, -1);
    const int64_t OW = W / 2;
    __m256 w[9];
    AN_UNROLL
    for (int t = 0; t < 9; ++t) w[t] = _mm256_set1_ps(wk[t]);
    for (int64_t c = 0; c < OW; c += 8) {
        __m256 acc[ROW_BLOCK];
        AN_UNROLL
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_set1_ps(b);
        /* input row 2 oh0 - 1 + i feeds output row oh0 + r through kernel row i - 2 r */
        AN_UNROLL
        for (int i = 0; i < 2 * ROWS + 1; ++i) {
            const int64_t ih = 2 * oh0 - 1 + i;
            const float *in = (ih >= 0 && ih < H ? xp + ih * W : zero_row) + 2 * c;
            const __m256 lo = _mm256_loadu_ps(in), hi = _mm256_loadu_ps(in + 8);
            const __m256 lo_left = c == 0 ? _mm256_maskload_ps(in - 2, past_column_minus_one)
                                          : _mm256_loadu_ps(in - 2);
            const __m256 hi_left = _mm256_loadu_ps(in + 6);
            const __m256 mid = _mm256_shuffle_ps(lo, hi, 0x88), right = _mm256_shuffle_ps(lo, hi, 0xDD);
            const __m256 left = _mm256_shuffle_ps(lo_left, hi_left, 0xDD);
            AN_UNROLL
            for (int r = 0; r < ROWS; ++r) {
                const int k = i - 2 * r;
                if (k < 0 || k > 2)
                    continue;
                acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(w[3 * k], left));
                acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(w[3 * k + 1], mid));
                acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(w[3 * k + 2], right));
            }
        }
        AN_UNROLL
        for (int r = 0; r < ROWS; ++r) {
            const __m256 ordered =
                _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(acc[r]), 0xD8));
            _mm256_storeu_ps(y + r * OW + c, an_avx2_activate(ordered, act));
        }
    }
}

AN_TARGET_AVX2 static void rows3x3_s2_avx2(const float *xp, int64_t H, int64_t W, int64_t oh0,
                                           int rows, const float *wk, float b, int act, float *y)
{
    if (rows == ROW_BLOCK)
        rows3x3_s2_avx2_body(xp, H, W, oh0, ROW_BLOCK, wk, b, act, y);
    else
        rows3x3_s2_avx2_body(xp, H, W, oh0, 1, wk, b, act, y);
}
#endif

static AN_ALWAYS_INLINE void rows3x3_s2(const int LANES, const float *restrict xp, int64_t H,
                                        int64_t W, int64_t oh0, const int ROWS,
                                        const float *restrict wk, float b, const int act,
                                        float *restrict y)
{
#if defined(__x86_64__) || defined(_M_X64)
    if (LANES == 8 && W <= S2_AVX2_MAX_W) /* the AVX2 build's width */
        rows3x3_s2_avx2(xp, H, W, oh0, ROWS, wk, b, act, y);
    else if (LANES == 8)
        rows3x3_s2_L8(xp, H, W, oh0, ROWS, wk, b, act, y);
#else
    if (LANES == 8)
        rows3x3_s2_L8(xp, H, W, oh0, ROWS, wk, b, act, y);
#endif
    else
        rows3x3_s2_L16(xp, H, W, oh0, ROWS, wk, b, act, y);
}

static AN_ALWAYS_INLINE void flat3x3_s1_body(const int LANES, const flat_job *j, int64_t chunk0,
                                             int64_t chunk1, float *restrict buf,
                                             const int PER_PLANE, const int accumulate,
                                             const int act)
{
    if (LANES == 8)
        flat3x3_s1_body_L8(j, chunk0, chunk1, buf, PER_PLANE, accumulate, act);
    else
        flat3x3_s1_body_L16(j, chunk0, chunk1, buf, PER_PLANE, accumulate, act);
}
#endif

/* 3x3, padding 1, dilation 1, stride s (a compile-time 1 or 2 after
 * inlining): xp [H,W] -> yp [OH,OW]. The interior needs no bounds checks and
 * keeps the 9 weights in registers; the one-pixel frame goes through the
 * checked point function. When accumulate is set the existing yp value is the
 * initial accumulator instead of b (used by the input gradient).  LANES:
 * the row kernels' vector width. */
/* The plane in a (H + 2) x (W + 2) frame of zeros. */
static AN_ALWAYS_INLINE void frame_plane(const float *restrict xp, int64_t H, int64_t W,
                                         float *restrict frame)
{
    const int64_t Wp = W + 2;
    for (int64_t k = 0; k < Wp; ++k) frame[k] = frame[(H + 1) * Wp + k] = 0.0f;
    for (int64_t h = 0; h < H; ++h) {
        float *row = frame + (h + 1) * Wp;
        row[0] = row[W + 1] = 0.0f;
        for (int64_t k = 0; k < W; ++k) row[k + 1] = xp[h * W + k];
    }
}

static AN_ALWAYS_INLINE void conv_plane_3x3_p1(
    const int LANES, const float *restrict xp, const float *restrict wk, float b, int64_t H,
    int64_t W, const int64_t s, int64_t OH, int64_t OW, const int accumulate,
    const int act, float *restrict yp)
{
    if ((H + 2) * (W + 2) <= SMALL_PADDED_PLANE) {
#ifdef AN_HAVE_ROW_VEC
        if (s == 1 && OW % LANES == 0) {
            int64_t oh = 0;
            for (; oh + ROW_BLOCK <= OH; oh += ROW_BLOCK)
                rows3x3_s1(LANES, xp, H, W, oh, ROW_BLOCK, wk, b, accumulate, act, yp + oh * OW);
            for (; oh < OH; ++oh) rows3x3_s1(LANES, xp, H, W, oh, 1, wk, b, accumulate, act, yp + oh * OW);
            return;
        }
        if (s == 2 && OW % LANES == 0 && W == 2 * OW && !accumulate) {
            int64_t oh = 0;
            for (; oh + ROW_BLOCK <= OH; oh += ROW_BLOCK)
                rows3x3_s2(LANES, xp, H, W, oh, ROW_BLOCK, wk, b, act, yp + oh * OW);
            for (; oh < OH; ++oh) rows3x3_s2(LANES, xp, H, W, oh, 1, wk, b, act, yp + oh * OW);
            return;
        }
#endif
        /* Planes up to 64 x 64 are copied into a zero frame, and every
         * output runs the same branch-free 9 taps (a tap on the frame adds
         * w * 0, which leaves a finite sum unchanged).  The border path ran
         * 4x4 planes (12 of 16 outputs on the border) at a third of
         * PyTorch's speed, and rows of 30 interior outputs half in scalar
         * tails.  Stride 1 goes further: on the framed plane, output
         * (oh, ow) and tap (i, j) read element (oh * Wp + ow) + i * Wp + j,
         * so all outputs form one flat run (with 2 junk columns per row,
         * dropped on the way out) that vectorises end to end. */
        float padded[SMALL_PADDED_PLANE];
        const int64_t Wp = W + 2;
        frame_plane(xp, H, W, padded);
        if (s == 1) {
            float flat[SMALL_PADDED_PLANE];
            const int64_t n = (OH - 1) * Wp + OW;
            for (int64_t oh = 0; oh < OH; ++oh) {
                float *f = flat + oh * Wp;
                for (int64_t ow = 0; ow < OW; ++ow) f[ow] = accumulate ? yp[oh * OW + ow] : b;
                if (oh + 1 < OH)
                    for (int64_t ow = OW; ow < Wp; ++ow) f[ow] = 0.0f;
            }
            const float *restrict x0 = padded;
            const float *restrict x1 = padded + Wp;
            const float *restrict x2 = padded + 2 * Wp;
            float *restrict out = flat;
            for (int64_t k = 0; k < n; ++k) {
                float acc = taps3x3(out[k], x0, x1, x2, k, wk);
                out[k] = acc;
            }
            for (int64_t oh = 0; oh < OH; ++oh)
                for (int64_t ow = 0; ow < OW; ++ow) yp[oh * OW + ow] = activate_one(flat[oh * Wp + ow], act);
            return;
        }
        for (int64_t oh = 0; oh < OH; ++oh) {
            float *restrict yrow = yp + oh * OW;
            const float *restrict x0 = padded + oh * s * Wp;
            const float *restrict x1 = x0 + Wp;
            const float *restrict x2 = x1 + Wp;
            for (int64_t ow = 0; ow < OW; ++ow) {
                const int64_t iw = ow * s;
                float acc = taps3x3(accumulate ? yrow[ow] : b, x0, x1, x2, iw, wk);
                yrow[ow] = activate_one(acc, act);
            }
        }
        return;
    }
    /* output rows/cols whose whole 3-wide window is inside the image */
    int64_t r_lo, r_hi, c_lo, c_hi;
    valid_output_range(OH, H - 2, s, -1, &r_lo, &r_hi);
    valid_output_range(OW, W - 2, s, -1, &c_lo, &c_hi);
    for (int64_t oh = 0; oh < OH; ++oh) {
        float *restrict yrow = yp + oh * OW;
        const int64_t ih0 = oh * s - 1;
        if (oh < r_lo || oh >= r_hi) {
            for (int64_t ow = 0; ow < OW; ++ow)
                yrow[ow] = conv_point_checked(xp, wk, accumulate ? yrow[ow] : b,
                                              H, W, 3, 3, 1, 1, ih0,
                                              ow * s - 1);
            continue;
        }
        for (int64_t ow = 0; ow < c_lo; ++ow)
            yrow[ow] = conv_point_checked(xp, wk, accumulate ? yrow[ow] : b,
                                          H, W, 3, 3, 1, 1, ih0, ow * s - 1);
        const float *restrict x0 = xp + ih0 * W;
        const float *restrict x1 = x0 + W;
        const float *restrict x2 = x1 + W;
        for (int64_t ow = c_lo; ow < c_hi; ++ow) {
            const int64_t iw = ow * s - 1;
            float acc = taps3x3(accumulate ? yrow[ow] : b, x0, x1, x2, iw, wk);
            yrow[ow] = acc;
        }
        for (int64_t ow = c_hi; ow < OW; ++ow)
            yrow[ow] = conv_point_checked(xp, wk, accumulate ? yrow[ow] : b,
                                          H, W, 3, 3, 1, 1, ih0, ow * s - 1);
    }
    if (act != DW_ACT_NONE)
        for (int64_t i = 0; i < OH * OW; ++i) yp[i] = activate_one(yp[i], act);
}

/* The 3x3 plane compiled for each ISA (the same C, so the same results:
 * every output is its own sum in a fixed order, and -std=c11 contracts no
 * FMAs).  Baseline x86-64 code ran it 4 lanes wide without FMA, at 14-20
 * GFLOP/s; the wrappers below fix stride and accumulation at compile time. */
typedef void (*plane3x3_fn)(const float *xp, const float *wk, float b, int64_t H, int64_t W,
                            int64_t s, int64_t OH, int64_t OW, int accumulate, int act, float *yp);

/* Copies of a 32-float row became memcpy calls, 28% of the 3x3 forward:
 * keep them as inline vector moves. */
#if defined(__GNUC__) && !defined(__clang__)
#define AN_INLINE_COPIES __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define AN_INLINE_COPIES
#endif

/* stride S with accumulation and the activation fixed at compile time */
#define AN_PLANE3X3_CASES(S)                                                                     \
    if (accumulate)                                                                              \
        conv_plane_3x3_p1(LANES, xp, wk, b, H, W, S, OH, OW, 1, DW_ACT_NONE, yp);                       \
    else if (act == DW_ACT_RELU)                                                                 \
        conv_plane_3x3_p1(LANES, xp, wk, b, H, W, S, OH, OW, 0, DW_ACT_RELU, yp);                       \
    else if (act == DW_ACT_RELU6)                                                                \
        conv_plane_3x3_p1(LANES, xp, wk, b, H, W, S, OH, OW, 0, DW_ACT_RELU6, yp);                      \
    else                                                                                         \
        conv_plane_3x3_p1(LANES, xp, wk, b, H, W, S, OH, OW, 0, DW_ACT_NONE, yp);

#define AN_DEFINE_PLANE3X3(suffix, attribute)                                                    \
    attribute AN_INLINE_COPIES static void plane3x3_##suffix(const float *xp, const float *wk, float b,           \
                                            int64_t H, int64_t W, int64_t s, int64_t OH,          \
                                            int64_t OW, int accumulate, int act, float *yp)      \
    {                                                                                            \
        const int LANES = AN_ROW_LANES_##suffix;                                                 \
        if (s == 1) {                                                                            \
            AN_PLANE3X3_CASES(1)                                                                 \
        } else {                                                                                 \
            AN_PLANE3X3_CASES(2)                                                                 \
        }                                                                                        \
    }

AN_FOR_EACH_ISA(AN_DEFINE_PLANE3X3)

static plane3x3_fn choose_plane3x3(void) { return AN_BY_ISA(plane3x3_); }

#ifdef AN_HAVE_ROW_VEC
/* Output rows [r0, r1) of a plane that conv_plane_3x3_p1 runs row by row
 * (see an_depthwise3x3_rows_applies): the same row kernels, so the same
 * sums, for one band of rows; yp is output row r0. */
typedef void (*plane3x3_rows_fn)(const float *xp, const float *wk, float b, int64_t H, int64_t W,
                                 int64_t s, int64_t r0, int64_t r1, int act, float *yp);

#define AN_ROWS3X3_RANGE(S, ACT)                                                                 \
    do {                                                                                         \
        int64_t oh = r0;                                                                         \
        for (; oh + ROW_BLOCK <= r1; oh += ROW_BLOCK)                                            \
            AN_ROWS3X3_CALL(S, ROW_BLOCK, ACT);                                                  \
        for (; oh < r1; ++oh)                                                                    \
            AN_ROWS3X3_CALL(S, 1, ACT);                                                          \
    } while (0)
#define AN_ROWS3X3_CALL_1(ROWS, ACT) rows3x3_s1(LANES, xp, H, W, oh, ROWS, wk, b, 0, ACT, yp + (oh - r0) * OW)
#define AN_ROWS3X3_CALL_2(ROWS, ACT) rows3x3_s2(LANES, xp, H, W, oh, ROWS, wk, b, ACT, yp + (oh - r0) * OW)
#define AN_ROWS3X3_CALL(S, ROWS, ACT) AN_ROWS3X3_CALL_##S(ROWS, ACT)
#define AN_ROWS3X3_ACTS(S)                                                                       \
    if (act == DW_ACT_RELU)                                                                      \
        AN_ROWS3X3_RANGE(S, DW_ACT_RELU);                                                        \
    else if (act == DW_ACT_RELU6)                                                                \
        AN_ROWS3X3_RANGE(S, DW_ACT_RELU6);                                                       \
    else                                                                                         \
        AN_ROWS3X3_RANGE(S, DW_ACT_NONE);

#define AN_DEFINE_PLANE3X3_ROWS(suffix, attribute)                                               \
    attribute AN_INLINE_COPIES static void plane3x3_rows_##suffix(                               \
        const float *xp, const float *wk, float b, int64_t H, int64_t W, int64_t s, int64_t r0,  \
        int64_t r1, int act, float *yp)                                                          \
    {                                                                                            \
        const int64_t OW = W / s;                                                                \
        const int LANES = AN_ROW_LANES_##suffix;                                                 \
        if (s == 1) {                                                                            \
            AN_ROWS3X3_ACTS(1)                                                                   \
        } else {                                                                                 \
            AN_ROWS3X3_ACTS(2)                                                                   \
        }                                                                                        \
    }

AN_FOR_EACH_ISA(AN_DEFINE_PLANE3X3_ROWS)

static plane3x3_rows_fn choose_plane3x3_rows(void) { return AN_BY_ISA(plane3x3_rows_); }
#endif

static int is_3x3_p1_d1(int64_t kh, int64_t kw, int64_t ph, int64_t pw,
                        int64_t dh, int64_t dw)
{
    return kh == 3 && kw == 3 && ph == 1 && pw == 1 && dh == 1 && dw == 1;
}

/* Whether a plane takes rows3x3_s1: 3x3, stride 1, padding 1, rows a whole
 * number of vectors wide, small enough for the framed paths (whose sums it
 * reproduces).  It beats the channels-last blocks below on the planes both
 * could take (192x16x16 forward 27 -> 13 us, 1 thread), so those leave such
 * planes to it. */
static int rows3x3_fits(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t dh, int64_t dw)
{
#ifdef AN_HAVE_ROW_VEC
    return is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == 1 && sw == 1 && W % row_lanes() == 0 &&
           (H + 2) * (W + 2) <= SMALL_PADDED_PLANE;
#else
    (void)H, (void)W, (void)kh, (void)kw, (void)sh, (void)sw, (void)ph, (void)pw, (void)dh, (void)dw;
    return 0;
#endif
}

/* ---- Narrow planes, flattened: see depthwise_rows_impl.h ------------- */
#ifdef AN_HAVE_ROW_VEC
/* Whether flat3x3_s1 takes the plane: W divides the vector (so the wrap
 * columns fall on the same lanes of every vector) and H*W is whole vectors,
 * four of them a whole number of planes or the other way round. */
static int flat3x3_fits(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t multiplier)
{
    const int64_t lanes = row_lanes(), vectors = H * W / lanes;
    return multiplier == 1 && is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == 1 && sw == 1 &&
           (W == 4 || W == 8) && H > 0 && H * W % lanes == 0 && H * W <= FLAT_MAX_PLANE &&
           (FLAT_GROUP % vectors == 0 || vectors % FLAT_GROUP == 0);
}

typedef void (*flat_fn)(const flat_job *j, int64_t chunk0, int64_t chunk1, float *buf);

/* the plane's vectors, accumulation and the activation fixed at compile time */
#define flat3x3_s1_acts(PER_PLANE)                                                               \
    do {                                                                                         \
        if (j->accumulate)                                                                       \
            flat3x3_s1_body(LANES, j, chunk0, chunk1, buf, PER_PLANE, 1, DW_ACT_NONE);                  \
        else if (j->act == DW_ACT_RELU)                                                          \
            flat3x3_s1_body(LANES, j, chunk0, chunk1, buf, PER_PLANE, 0, DW_ACT_RELU);                  \
        else if (j->act == DW_ACT_RELU6)                                                         \
            flat3x3_s1_body(LANES, j, chunk0, chunk1, buf, PER_PLANE, 0, DW_ACT_RELU6);                 \
        else                                                                                     \
            flat3x3_s1_body(LANES, j, chunk0, chunk1, buf, PER_PLANE, 0, DW_ACT_NONE);                  \
    } while (0)
#define AN_DEFINE_FLAT(suffix, attribute)                                                        \
    attribute static void flat3x3_s1_##suffix(const flat_job *j, int64_t chunk0, int64_t chunk1, \
                                              float *buf)                                        \
    {                                                                                            \
        const int LANES = AN_ROW_LANES_##suffix;                                                 \
        const int64_t vectors = j->H * j->W / LANES;                                             \
        if (vectors == 1)                                                                        \
            flat3x3_s1_acts(1);                                                                  \
        else if (vectors == 2)                                                                   \
            flat3x3_s1_acts(2);                                                                  \
        else                                                                                     \
            flat3x3_s1_acts(FLAT_GROUP);                                                         \
    }
AN_FOR_EACH_ISA(AN_DEFINE_FLAT)

typedef struct {
    flat_job job;
    flat_fn run;
} flat_share;

static void flat_chunks(const void *ctx, int64_t chunk0, int64_t chunk1)
{
    const flat_share *f = ctx;
    _Alignas(64) float buf[2 * FLAT_BUFFER];
    memset(buf, 0, sizeof buf);
    f->run(&f->job, chunk0, chunk1, buf);
}

/* y = act(conv(x, w) + bias), or y += conv(x, w rotated by 180 degrees) (the
 * data gradient), over planes = N * C planes of H x W (flat3x3_fits). */
static int flat_run(const float *x, const float *w, const float *bias, int rotate, int accumulate,
                    int act, int64_t planes, int64_t C, int64_t H, int64_t W, float *y,
                    double *moments)
{
    const flat_share f = {{x, w, bias, y, planes, C, H, W, rotate, accumulate, act},
                          AN_BY_ISA(flat3x3_s1_)};
    const int64_t vectors = H * W / row_lanes();
    if (vectors >= FLAT_GROUP) { /* a chunk is a plane */
        run_planes(planes, planes * H * W * 9, flat_chunks, &f, y, H * W, moments);
        return moments != NULL;
    }
    const int64_t chunks = (planes * vectors + FLAT_GROUP - 1) / FLAT_GROUP;
    run_shared(chunks, planes * H * W * 9, flat_chunks, &f);
    return 0;
}
#endif

/* A plane-at-a-time kernel (the column-split stride-2 one below, the
   AVX-512 masked ones after it), planes [p0, p1) of job j. */
typedef struct planes_job planes_job;
typedef void (*planes_fn)(const planes_job *j, int64_t p0, int64_t p1);
struct planes_job {
    const float *x, *w, *bias;
    int64_t C, H, W, ph, OH; /* ph, OH: the stride-2 kernels' top padding and output rows */
    int act;                 /* where the kernel does not fix it at compile time */
    float *y;
    planes_fn run;
};

static void planes_share(const void *ctx, int64_t p0, int64_t p1)
{
    const planes_job *j = ctx;
    j->run(j, p0, p1);
}

/* ---- Stride 2, columns split once ------------------------------------ *
 * A 3x3, stride-2 layer (padding 1 on the sides, 0 or 1 on top: a fused
 * block's band of rows, or a whole plane) whose output rows are 4 wide or a
 * whole number of 8-lane vectors, at most S2D_MAX_OUT outputs a plane.
 * Output (oh, ow) reads columns 2 ow - 1, 2 ow and 2 ow + 1 (odd, even, odd)
 * of input rows 2 oh - ph + i.  The plane's rows are first split, two input
 * vectors at a time, into their even columns, their odd columns, and the
 * odd columns moved one place right behind the frame's zero: in two streams
 * of rows (those of kernel rows 0 and 2: rows -ph, 2 - ph, ...; those of
 * kernel row 1: rows 1 - ph, 3 - ph, ...), OW floats a row, one row after
 * another, rows outside the plane zero.  Every output vector then takes 9
 * plain loads, at the same offset in each stream (kernel row 2 one stream
 * row on), and sums the bias, then w * x tap by tap in row-major order: the
 * framed plane's sum, bit for bit.  The channels-last blocks this replaces
 * on these planes transpose each plane in and out: on the AVX2 Zen 3 (in
 * one process, alternating) 192 16x16 planes took 0.58x their time on one
 * thread and 0.62x on two, 576 8x8 planes 0.55x and 0.67x.  Not on 32x32
 * planes: there the generic 8-lane row kernel (rows3x3_s2_L8), which splits
 * the columns in registers, took 0.81-0.89x this kernel's time (the split's
 * stores and reloads; AVX2's own row kernel, rows3x3_s2_avx2, is faster
 * still), hence the limit of 64 outputs. */
#ifdef AN_HAVE_ROW_VEC
#define S2D_LANES 8
#define S2D_MAX_OUT 64           /* output positions of a plane, 8 x 8 */
#define S2D_MAX_W ZERO_ROW_FLOATS /* input row width (the zero row's) */
/* floats of a stream: the outputs' rows and one more (up to S2D_MAX_W / 2
   wide), and the last vector's lanes past them (4-wide rows go in pairs) */
#define S2D_STREAM (S2D_MAX_OUT + S2D_MAX_W / 2 + S2D_LANES)

static int s2d_fits(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                    int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t multiplier,
                    int64_t OH, int64_t OW)
{
    return kh == 3 && kw == 3 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && pw == 1 &&
           (ph == 0 || ph == 1) && multiplier == 1 && H >= 1 && W >= 2 && W % 2 == 0 &&
           W <= S2D_MAX_W && OW == W / 2 && (OW == 4 || OW % S2D_LANES == 0) && OH >= 1 &&
           OH == (H + 2 * ph - 3) / 2 + 1 && OH * OW % S2D_LANES == 0 &&
           OH * OW <= S2D_MAX_OUT;
}

/* Stream rows [0, rows) from input row `first` on, every other row, into
 * left / centre / right (see above); the last vector may run past `rows`
 * (its extra lanes are never read). */
static AN_ALWAYS_INLINE void s2d_split(const float *restrict xp, int64_t H, int64_t W, int64_t OW,
                                       int64_t first, int64_t rows, float *restrict left,
                                       float *restrict centre, float *restrict right)
{
    const an_mask8 evens = {0, 2, 4, 6, 8, 10, 12, 14}, odds = {1, 3, 5, 7, 9, 11, 13, 15};
    const an_mask8 from_left = {7, 8, 9, 10, 11, 12, 13, 14};
    const an_mask8 all = {-1, -1, -1, -1, -1, -1, -1, -1};
    const an_mask8 not_first = {0, -1, -1, -1, -1, -1, -1, -1};
    const an_mask8 not_fourths = {0, -1, -1, -1, 0, -1, -1, -1};
    an_vec8 previous = {0};
    int64_t q = 0;
    /* a vector's 8 input floats for outputs q .. q + 3 and for q + 4 .. q + 7:
       two rows of 4 outputs, or one row's next 16 columns */
    for (int64_t r = 0; r < rows; r += OW == 4 ? 2 : 1)
        for (int64_t c = 0; c < OW; c += S2D_LANES, q += S2D_LANES) {
            const int64_t row = first + 2 * r, next = row + 2;
            const float *lo_at = (row >= 0 && row < H ? xp + row * W : zero_row) + 2 * c;
            const float *hi_at = OW == 4 ? (next >= 0 && next < H ? xp + next * W : zero_row)
                                         : lo_at + S2D_LANES;
            const an_vec8 lo = an_vec8_load(lo_at), hi = an_vec8_load(hi_at);
            const an_vec8 even = __builtin_shuffle(lo, hi, evens);
            const an_vec8 odd = __builtin_shuffle(lo, hi, odds);
            const an_mask8 keep = OW == 4 ? not_fourths : c == 0 ? not_first : all;
            an_vec8_store(centre + q, even);
            an_vec8_store(right + q, odd);
            an_vec8_store(left + q,
                          (an_vec8)((an_mask8)__builtin_shuffle(previous, odd, from_left) & keep));
            previous = odd;
        }
}

/* The `rows` output rows of one plane (ph its top padding) into yp. */
static AN_ALWAYS_INLINE void s2d_plane(const float *restrict xp, const float *restrict wk, float b,
                                       int64_t H, int64_t W, int64_t ph, int64_t rows, int act,
                                       float *restrict yp)
{
    _Alignas(32) float outer[3][S2D_STREAM], inner[3][S2D_STREAM];
    const int64_t OW = W / 2;
    s2d_split(xp, H, W, OW, -ph, rows + 1, outer[0], outer[1], outer[2]);
    s2d_split(xp, H, W, OW, 1 - ph, rows, inner[0], inner[1], inner[2]);
    an_vec8 w[9];
    for (int t = 0; t < 9; ++t) w[t] = (an_vec8){0} + wk[t];
    for (int64_t o = 0; o < rows * OW; o += S2D_LANES) {
        an_vec8 acc = (an_vec8){0} + b;
        for (int j = 0; j < 3; ++j) acc += w[j] * an_vec8_load(outer[j] + o);
        for (int j = 0; j < 3; ++j) acc += w[3 + j] * an_vec8_load(inner[j] + o);
        for (int j = 0; j < 3; ++j) acc += w[6 + j] * an_vec8_load(outer[j] + o + OW);
        an_vec8_store(yp + o, an_vec8_activate(acc, act));
    }
}

#define AN_DEFINE_S2D(suffix, attribute)                                                         \
    attribute static void s2d_planes_##suffix(const planes_job *j, int64_t p0, int64_t p1)       \
    {                                                                                            \
        const int64_t OW = j->W / 2;                                                             \
        for (int64_t p = p0; p < p1; ++p) {                                                      \
            const int64_t c = p % j->C;                                                          \
            s2d_plane(j->x + p * j->H * j->W, j->w + c * 9, j->bias ? j->bias[c] : 0.0f, j->H,   \
                      j->W, j->ph, j->OH, j->act, j->y + p * j->OH * OW);                        \
        }                                                                                        \
    }
AN_FOR_EACH_ISA(AN_DEFINE_S2D)

/* y = act(conv(x, w) + bias) over planes = N * C planes (s2d_fits). */
static void s2d_run(const float *x, const float *w, const float *bias, int act, int64_t planes,
                    int64_t C, int64_t H, int64_t W, int64_t ph, int64_t OH, float *y,
                    double *moments)
{
    const planes_job j = {x, w, bias, C, H, W, ph, OH, act, y, AN_BY_ISA(s2d_planes_)};
    run_planes(planes, planes * OH * (W / 2) * 9, planes_share, &j, y, OH * (W / 2), moments);
}
#endif

/* ---- 4- and 8-wide planes, operands shifted in registers (AVX-512) ---- *
 * The forward of the planes flat3x3 takes, without its three copies: a
 * vector holds 16 / W rows of a plane, and each tap's operand is made from
 * the vector and the ones above and below it by one valignd, its mask
 * clearing the lanes whose tap falls on the padding (a column past a row's
 * edge; above the plane's first row and below its last the neighbour
 * vector is zero).  The sums are flat3x3's: the bias, then w * x added for
 * every tap in row-major order (a multiply and an add, as the vector code
 * above compiles to under -std=c11), w * 0 on the padding.  Until the
 * twenty-third round each operand was a masked load from the plane, one
 * row and one column away: on one thread of the Zen 5, 384 8x8 planes took
 * 6.7 us a call against 5.3 now, 576 8x8 10.6 against 7.5, 960 4x4 6.5
 * against 4.7, the same bits. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(AN_HAVE_ROW_VEC)
#include "kernels/simd_activate.h"
#define AN_HAVE_MASKED_SMALL 1

/* The nine taps of `count` (1 to 4, a compile-time constant after
 * inlining) vectors of output rows, each from its own vector of input rows
 * and the ones above and below it; acc[g] holds its bias on entry.  Tap
 * (i, j) of lane l reads lane l + (i - 1) W + j - 1 of above:here:below,
 * one valignd of here with the vector on that side. */
/* One operand: lanes [imm, imm + 16) of hi:lo, the lanes outside `keep` zero. */
#define SHIFTED(keep, hi, lo, imm)                                                               \
    _mm512_castsi512_ps(_mm512_maskz_alignr_epi32((keep), _mm512_castps_si512(hi),               \
                                                  _mm512_castps_si512(lo), (imm)))

AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
shifted_taps(const int count, const int W, const __m512 above[4], const __m512 here[4],
             const __m512 below[4], const float *const wt[4], __mmask16 keep_left,
             __mmask16 keep_right, __m512 acc[4])
{
    const __mmask16 all = (__mmask16)0xFFFF;
#pragma GCC unroll 4
    for (int g = 0; g < count; ++g) {
        const __m512 a = above[g], h = here[g], b = below[g];
        __m512 in[9];
/* the rows above (from lane UP = 16 - W of above:here) and below (lane
   DOWN = W of here:below), each a column left, centred and right */
#define SHIFTED_OUTER_ROWS(UP, DOWN)                                                             \
    do {                                                                                         \
        in[0] = SHIFTED(keep_left, h, a, (UP) - 1);                                              \
        in[1] = SHIFTED(all, h, a, (UP));                                                        \
        in[2] = SHIFTED(keep_right, h, a, (UP) + 1);                                             \
        in[6] = SHIFTED(keep_left, b, h, (DOWN) - 1);                                            \
        in[7] = SHIFTED(all, b, h, (DOWN));                                                      \
        in[8] = SHIFTED(keep_right, b, h, (DOWN) + 1);                                           \
    } while (0)
        if (W == 8)
            SHIFTED_OUTER_ROWS(8, 8);
        else
            SHIFTED_OUTER_ROWS(12, 4);
#undef SHIFTED_OUTER_ROWS
        in[3] = SHIFTED(keep_left, h, a, 15);
        in[4] = h;
        in[5] = SHIFTED(keep_right, b, h, 1);
#pragma GCC unroll 9
        for (int t = 0; t < 9; ++t)
            acc[g] = _mm512_add_ps(acc[g], _mm512_mul_ps(_mm512_set1_ps(wt[g][t]), in[t]));
    }
}

/* Planes [p0, p1): y = act(conv(x, w) + bias), or with `backward` (a
 * compile-time constant) y += conv(x, w rotated by 180 degrees), the data
 * gradient, started from y as flat3x3's is. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
shifted_planes(const float *x, const float *w, const float *bias, int64_t C, int64_t H,
               const int W, int64_t p0, int64_t p1, const int act, const int backward, float *y)
{
    const int64_t HW = H * W, vectors = HW / 16;
    __mmask16 keep_left = 0, keep_right = 0;
    for (int l = 0; l < 16; ++l) {
        keep_left |= (__mmask16)((l % W != 0) << l);
        keep_right |= (__mmask16)((l % W != W - 1) << l);
    }
    const __m512 zero = _mm512_setzero_ps();
    float rotated[4][9]; /* the backward's kernels, taps reversed */
    int64_t p = p0;
    if (vectors == 1) /* 4x4 planes: four planes at a time */
        for (; p + 4 <= p1; p += 4) {
            __m512 acc[4], here[4];
            const __m512 none[4] = {zero, zero, zero, zero};
            const float *wp[4];
            for (int g = 0; g < 4; ++g) {
                const int64_t c = (p + g) % C;
                wp[g] = w + c * 9;
                if (backward) {
                    for (int t = 0; t < 9; ++t) rotated[g][t] = w[c * 9 + 8 - t];
                    wp[g] = rotated[g];
                }
                acc[g] = backward ? _mm512_loadu_ps(y + (p + g) * 16)
                                  : _mm512_set1_ps(bias ? bias[c] : 0.0f);
                here[g] = _mm512_loadu_ps(x + (p + g) * 16);
            }
            shifted_taps(4, W, none, here, none, wp, keep_left, keep_right, acc);
            for (int g = 0; g < 4; ++g) _mm512_storeu_ps(y + (p + g) * 16, an_avx512_activate(acc[g], act));
        }
    for (; p < p1; ++p) {
        const int64_t c = p % C;
        const float *plane = x + p * HW;
        float *out = y + p * HW;
        const float *k = w + c * 9;
        if (backward) {
            for (int t = 0; t < 9; ++t) rotated[0][t] = w[c * 9 + 8 - t];
            k = rotated[0];
        }
        const float *wt[4] = {k, k, k, k};
        const __m512 start = _mm512_set1_ps(bias ? bias[c] : 0.0f);
        for (int64_t v = 0; v < vectors; v += 4) { /* up to four vectors of the plane together */
            const int count = vectors - v < 4 ? (int)(vectors - v) : 4;
            __m512 acc[4], above[4], here[4], below[4];
            for (int g = 0; g < 4; ++g) {
                const int64_t u = v + g;
                acc[g] = backward ? (u < vectors ? _mm512_loadu_ps(out + u * 16) : zero) : start;
                here[g] = u < vectors ? _mm512_loadu_ps(plane + u * 16) : zero;
                above[g] = u >= 1 && u - 1 < vectors ? _mm512_loadu_ps(plane + (u - 1) * 16) : zero;
                below[g] = u + 1 < vectors ? _mm512_loadu_ps(plane + (u + 1) * 16) : zero;
            }
            if (count == 4)
                shifted_taps(4, W, above, here, below, wt, keep_left, keep_right, acc);
            else
                for (int g = 0; g < count; ++g)
                    shifted_taps(1, W, above + g, here + g, below + g, wt, keep_left, keep_right,
                                 acc + g);
            for (int g = 0; g < count; ++g)
                _mm512_storeu_ps(out + (v + g) * 16, an_avx512_activate(acc[g], act));
        }
    }
}

#define AN_MASKED_VARIANT(WIDTH, ACT, BACKWARD, NAME)                                            \
    AN_TARGET_AVX512 static void NAME(const planes_job *j, int64_t p0, int64_t p1)               \
    {                                                                                            \
        shifted_planes(j->x, j->w, j->bias, j->C, j->H, WIDTH, p0, p1, ACT, BACKWARD, j->y);     \
    }
AN_MASKED_VARIANT(8, DW_ACT_NONE, 0, masked_w8_none)
AN_MASKED_VARIANT(8, DW_ACT_RELU, 0, masked_w8_relu)
AN_MASKED_VARIANT(8, DW_ACT_RELU6, 0, masked_w8_relu6)
AN_MASKED_VARIANT(4, DW_ACT_NONE, 0, masked_w4_none)
AN_MASKED_VARIANT(4, DW_ACT_RELU, 0, masked_w4_relu)
AN_MASKED_VARIANT(4, DW_ACT_RELU6, 0, masked_w4_relu6)
AN_MASKED_VARIANT(8, DW_ACT_NONE, 1, masked_w8_data_grad)
AN_MASKED_VARIANT(4, DW_ACT_NONE, 1, masked_w4_data_grad)

/* Whether the masked kernel takes what flat3x3 would: its planes, and the
 * CPU running AVX-512. */
static int masked_fits(int64_t H, int64_t W)
{
    return an_cpu_info_get()->isa == AN_ISA_AVX512 && (W == 4 || W == 8) && H * W % 16 == 0;
}

/* y = act(conv(x, w) + bias) over planes = N * C planes, split by planes. */
static void masked_run(const float *x, const float *w, const float *bias, int act, int64_t planes,
                       int64_t C, int64_t H, int64_t W, float *y, double *moments)
{
    static const planes_fn by_act[2][3] = {{masked_w4_none, masked_w4_relu, masked_w4_relu6},
                                           {masked_w8_none, masked_w8_relu, masked_w8_relu6}};
    const planes_job j = {x, w, bias, C, H, W, 1, H, act, y, by_act[W == 8][act_index(act)]};
    run_planes(planes, planes * H * W * 9, planes_share, &j, y, H * W, moments);
}

/* dx += conv(dy, w rotated by 180 degrees) over planes = N * C planes (the
 * data gradient flat_run computes, the same bits, without its copies).
 * Batch 128, two threads, the forward and this gradient of a layer: 576
 * 8x8 planes 3.17 -> 2.87 ms, 960 4x4 1.06 -> 0.77 ms, 384 8x8 1.75 ->
 * 1.73 (the passes over the 19 MB gradients, zeroed and then accumulated
 * into, take the rest). */
static void masked_data_grad_run(const float *dy, const float *w, int64_t planes, int64_t C,
                                 int64_t H, int64_t W, float *dx)
{
    const planes_job j = {dy, w, NULL, C, H, W, 1, H, DW_ACT_NONE, dx,
                          W == 8 ? masked_w8_data_grad : masked_w4_data_grad};
    run_shared(planes, planes * H * W * 9, planes_share, &j);
}

/* ---- Stride 2 onto 4- and 8-wide outputs (AVX-512) --------------------- *
 * 8x8 planes -> 4x4, and 16-wide planes (or a band's rows) -> 8 wide: the
 * even and odd columns of the input rows gathered by permutes, with no
 * zero frame and no channels-last copy (the channels-last kernel spent most
 * of its time in those copies here: 576x8x8 -> 4x4 took 13 us against
 * onnxruntime's 7).  A tap's column 2j - 1 + kj is the odd column of j - 1
 * (kj = 0), the even column of j (kj = 1) or the odd column of j (kj = 2).
 * Every output starts from its bias and adds its nine products in tap
 * order, a zero where the tap falls outside the plane: the sums of the
 * channels-last kernel, bit for bit. */

/* v shifted up by `lanes` lanes (a lane's value from `lanes` below), zeros
 * where `keep` is clear. */
#define S2_SHIFT(v, lanes, keep)                                                                 \
    _mm512_castsi512_ps(_mm512_maskz_alignr_epi32((keep), _mm512_castps_si512(v),               \
                                                  _mm512_castps_si512(v), 16 - (lanes)))

/* The nine products of one output vector, in tap order, onto acc. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) __m512
s2_sum(__m512 acc, const __m512 wk[9], const __m512 taps[9])
{
#pragma GCC unroll 9
    for (int t = 0; t < 9; ++t)
        acc = _mm512_add_ps(acc, _mm512_mul_ps(wk[t], taps[t]));
    return acc;
}

/* 8x8 planes (padding 1) -> 4x4: one vector of 16 outputs (lane 4i + j)
 * per plane.  Rows 2i (tap row 1) and 2i + 1 (tap row 2) come from the
 * plane's two halves by two permutes and a blend each; tap row 0 (row
 * 2i - 1) is tap row 2 moved down one output row. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
s2_w8_planes(const float *x, const float *w, const float *bias, int64_t C, int64_t p0, int64_t p1,
             const int act, float *y)
{
    /* plane index (mod 32: the permute's two sources hold four rows) of
       lane 4i + j, rows 2i (+1) and columns 2j (+1) */
    int idx[4][16];
    for (int l = 0; l < 16; ++l) {
        const int i = l / 4, j = l % 4;
        for (int odd_row = 0; odd_row < 2; ++odd_row)
            for (int odd_col = 0; odd_col < 2; ++odd_col)
                idx[odd_row * 2 + odd_col][l] = ((2 * i + odd_row) * 8 + 2 * j + odd_col) & 31;
    }
    __m512i gather[4];
    for (int k = 0; k < 4; ++k) gather[k] = _mm512_loadu_si512(idx[k]);
    const __mmask16 upper = 0xFF00, not_first_col = 0xEEEE, not_first_row = 0xFFF0;
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C;
        const float *plane = x + p * 64;
        const __m512 z0 = _mm512_loadu_ps(plane), z1 = _mm512_loadu_ps(plane + 16);
        const __m512 z2 = _mm512_loadu_ps(plane + 32), z3 = _mm512_loadu_ps(plane + 48);
        __m512 by_row[2][2]; /* [odd row][odd column] */
        for (int k = 0; k < 4; ++k)
            by_row[k / 2][k % 2] = _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(z0, gather[k], z1),
                                                        _mm512_permutex2var_ps(z2, gather[k], z3));
        __m512 taps[9];
        for (int r = 1; r <= 2; ++r) { /* tap rows 1 and 2: rows 2i and 2i + 1 */
            const __m512 even = by_row[r - 1][0], odd = by_row[r - 1][1];
            taps[3 * r] = S2_SHIFT(odd, 1, not_first_col);
            taps[3 * r + 1] = even;
            taps[3 * r + 2] = odd;
        }
        for (int k = 0; k < 3; ++k) /* tap row 0: row 2i - 1, tap row 2 of output row i - 1 */
            taps[k] = S2_SHIFT(taps[6 + k], 4, not_first_row);
        __m512 wk[9];
        for (int t = 0; t < 9; ++t) wk[t] = _mm512_set1_ps(w[c * 9 + t]);
        const __m512 acc = s2_sum(_mm512_set1_ps(bias ? bias[c] : 0.0f), wk, taps);
        _mm512_storeu_ps(y + p * 16, an_avx512_activate(acc, act));
    }
}

/* 16-wide planes of H rows (padding ph = 0 or 1 on top, 1 on the sides)
 * -> OH rows of 8: output rows i and i + half in one vector (lanes 0-7,
 * 8-15), so that tap row 2 of rows (i, i + half) is tap row 0 of rows
 * (i + 1, i + 1 + half) and each input row is permuted once. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
s2_w16_planes(const float *x, const float *w, const float *bias, int64_t C, int64_t H, int64_t ph,
              int64_t OH, int64_t p0, int64_t p1, const int act, float *y)
{
    int even_idx[16], odd_idx[16];
    for (int l = 0; l < 16; ++l) {
        even_idx[l] = (l / 8) * 16 + 2 * (l % 8);
        odd_idx[l] = even_idx[l] + 1;
    }
    const __m512i even_of = _mm512_loadu_si512(even_idx), odd_of = _mm512_loadu_si512(odd_idx);
    const __mmask16 not_first_col = 0xFEFE;
    const int64_t half = (OH + 1) / 2;
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C;
        const float *plane = x + p * H * 16;
        float *out = y + p * OH * 8;
        __m512 wk[9];
        for (int t = 0; t < 9; ++t) wk[t] = _mm512_set1_ps(w[c * 9 + t]);
        const __m512 start = _mm512_set1_ps(bias ? bias[c] : 0.0f);
        __m512 taps[9];
        for (int64_t i = 0; i < half; ++i) {
            for (int r = i == 0 ? 0 : 1; r <= 2; ++r) {
                const int64_t ra = 2 * i - ph + r, rb = 2 * (i + half) - ph + r;
                const __m512 a = ra >= 0 && ra < H ? _mm512_loadu_ps(plane + ra * 16) : _mm512_setzero_ps();
                const __m512 b = rb >= 0 && rb < H ? _mm512_loadu_ps(plane + rb * 16) : _mm512_setzero_ps();
                const __m512 odd = _mm512_permutex2var_ps(a, odd_of, b);
                taps[3 * r] = S2_SHIFT(odd, 1, not_first_col);
                taps[3 * r + 1] = _mm512_permutex2var_ps(a, even_of, b);
                taps[3 * r + 2] = odd;
            }
            const __m512 acc = an_avx512_activate(s2_sum(start, wk, taps), act);
            _mm256_storeu_ps(out + i * 8, _mm512_castps512_ps256(acc));
            if (i + half < OH)
                _mm256_storeu_ps(out + (i + half) * 8, _mm512_extractf32x8_ps(acc, 1));
            for (int k = 0; k < 3; ++k) taps[k] = taps[6 + k];
        }
    }
}
#undef S2_SHIFT

#define AN_S2_VARIANT(ACT, NAME)                                                                 \
    AN_TARGET_AVX512 static void NAME##_w8(const planes_job *j, int64_t p0, int64_t p1)          \
    {                                                                                            \
        s2_w8_planes(j->x, j->w, j->bias, j->C, p0, p1, ACT, j->y);                              \
    }                                                                                            \
    AN_TARGET_AVX512 static void NAME##_w16(const planes_job *j, int64_t p0, int64_t p1)         \
    {                                                                                            \
        s2_w16_planes(j->x, j->w, j->bias, j->C, j->H, j->ph, j->OH, p0, p1, ACT, j->y);         \
    }
AN_S2_VARIANT(DW_ACT_NONE, s2_none)
AN_S2_VARIANT(DW_ACT_RELU, s2_relu)
AN_S2_VARIANT(DW_ACT_RELU6, s2_relu6)

/* Whether the stride-2 kernels take this geometry (3x3, stride 2,
 * dilation 1, one output per channel, padding 1 on the sides) on this CPU:
 * 8x8 planes with padding 1, or 16-wide planes with padding 0 or 1 on top. */
static int s2_fits(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                   int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t multiplier, int64_t OH,
                   int64_t OW)
{
    if (an_cpu_info_get()->isa != AN_ISA_AVX512 || kh != 3 || kw != 3 || sh != 2 || sw != 2 ||
        dh != 1 || dw != 1 || multiplier != 1 || pw != 1 || H < 1)
        return 0;
    if (W == 8)
        return H == 8 && ph == 1 && OH == 4 && OW == 4;
    return W == 16 && OW == 8 && (ph == 0 || ph == 1) && OH == (H + 2 * ph - 3) / 2 + 1 && OH >= 1;
}

/* y = act(conv(x, w) + bias) over planes = N * C planes, split by planes. */
static void s2_run(const float *x, const float *w, const float *bias, int act, int64_t planes,
                   int64_t C, int64_t H, int64_t W, int64_t ph, int64_t OH, float *y,
                   double *moments)
{
    static const planes_fn by_act[2][3] = {{s2_none_w8, s2_relu_w8, s2_relu6_w8},
                                           {s2_none_w16, s2_relu_w16, s2_relu6_w16}};
    const planes_job j = {x, w, bias, C, H, W, ph, OH, act, y, by_act[W == 16][act_index(act)]};
    run_planes(planes, planes * H * W * 9 / 4, planes_share, &j, y, OH * (W / 2), moments);
}
#endif

/* ---- Small planes, channels-last -------------------------------------- *
 * On small planes a plane-at-a-time kernel is mostly overhead: a
 * 4x4 output row is 4 lanes, and the frame, the weights and the loop set-up
 * are paid per channel (960-channel 4x4 layers ran at 5 GFLOP/s).  Here 16
 * channels are convolved together: their planes are copied transposed into
 * a zero-framed channels-last block, every tap is then one 16-lane multiply
 * and add per output position (two 8-lane ones on AVX2 and the portable
 * build: cl_taps8), and the outputs are transposed back.  Each
 * output sums  bias (or the value it accumulates onto), then w * x for every
 * tap in row-major order, as the framed 3x3 path does, so both agree bit for
 * bit (a tap on the frame adds w * 0). */
#define CL_LANES 16
#define CL_MAX_FRAME 400 /* framed input positions, e.g. 20 x 20 */
#define CL_MAX_OUT 256   /* output positions, e.g. 16 x 16 */
#define CL_MAX_TAPS 49
/* Planes up to this many pixels take this path: up to 16x16 it measured
 * faster than the plane-at-a-time kernels (144x16x16 forward 24 -> 19 us,
 * stride 2 20 -> 10 us); 8x8 and below by 2-4x. */
#define CL_MAX_PLANE 256
/* The builds that compute the taps in 8-lane halves (cl_taps8): AVX2 (its
 * row width is 8) and the portable one, whose 16-lane vectors (four SSE
 * registers on x86-64) also went through the stack: 240 channels 5x5 at
 * 4x4, batch 32, one thread, forward 1327 -> 1064 us, forward+backward
 * 6551 -> 4692 us.  AVX-512 keeps its 16-lane zmm. */
#define AN_CL_NARROW_generic 1
#define AN_CL_NARROW_avx2 1
#define AN_CL_NARROW_avx512 0

#if defined(__GNUC__)
#define AN_HAVE_CHANNELS_LAST 1
typedef float cl_vec __attribute__((vector_size(CL_LANES * sizeof(float))));

typedef struct {
    int64_t H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
} cl_geometry;

/* panel[k * width + r] = src[r * row_stride + k] for r < rows (zero for
 * rows <= r < width), k < kc: through the GEMM's SIMD transposes where the
 * CPU has them.  Moves values only, so every ISA gives the same result. */
static void cl_transpose(const float *src, int64_t row_stride, int64_t rows, int64_t kc, int width,
                         float *panel)
{
    if (an_pack_transpose_simd(src, row_stride, rows, kc, width, panel))
        return;
    for (int64_t k = 0; k < kc; ++k) {
        int64_t r = 0;
        for (; r < rows; ++r) panel[k * width + r] = src[r * row_stride + k];
        for (; r < width; ++r) panel[k * width + r] = 0.0f;
    }
}

/* A kernel's taps and steps: the compile-time constants KH, KW and S of the
 * common instantiations (unit dilation), or g's where they are 0. */
typedef struct {
    int64_t kh, kw, sh, sw, dh, dw;
} cl_steps;

static AN_ALWAYS_INLINE cl_steps cl_steps_of(const cl_geometry *g, const int KH, const int KW,
                                             const int S)
{
    const cl_steps t = {KH ? KH : g->kh, KW ? KW : g->kw, S ? S : g->sh,
                        S ? S : g->sw,   KH ? 1 : g->dh,  KH ? 1 : g->dw};
    return t;
}

/* The taps of every output position: kh, kw and the strides are
 * compile-time constants in the common instantiations (0 = read from g). */
static AN_ALWAYS_INLINE void cl_taps(const cl_geometry *g, const int KH, const int KW, const int S,
                                     const float *restrict wt, const float *restrict frame,
                                     int accumulate, float *restrict out)
{
    const cl_steps steps = cl_steps_of(g, KH, KW, S);
    const int64_t kh = steps.kh, kw = steps.kw, sh = steps.sh, sw = steps.sw, dh = steps.dh,
                  dw = steps.dw;
    const int64_t Wf = g->W + 2 * g->pw;
    const cl_vec vbias = *(const cl_vec *)out;
    for (int64_t oh = 0; oh < g->OH; ++oh) {
        for (int64_t ow = 0; ow < g->OW; ++ow) {
            cl_vec *o = (cl_vec *)(out + (oh * g->OW + ow) * CL_LANES);
            cl_vec acc = accumulate ? *o : vbias;
            for (int64_t i = 0; i < kh; ++i) {
                const float *row = frame + ((oh * sh + i * dh) * Wf + ow * sw) * CL_LANES;
                for (int64_t j = 0; j < kw; ++j)
                    acc = acc + *(const cl_vec *)(wt + (i * kw + j) * CL_LANES) *
                                    *(const cl_vec *)(row + j * dw * CL_LANES);
            }
            *o = acc;
        }
    }
}

/* cl_taps for up to P (a constant, <= 4) adjacent outputs of a row, the 16
 * channels as two 8-lane halves: each tap's weights are loaded once for the
 * P outputs, whose 2P sums stay in registers.  at: the frame at the first
 * output's window; o: its output position. */
static AN_ALWAYS_INLINE void cl_taps8_group(const int P, const cl_steps *st, const int64_t Wf,
                                            const float *restrict wt,
                                            const float *restrict at, const an_vec8 bias[2],
                                            int accumulate, float *restrict o)
{
    an_vec8 acc[4][2];
    for (int p = 0; p < P; ++p)
        for (int h = 0; h < 2; ++h)
            acc[p][h] = accumulate ? an_vec8_load(o + p * CL_LANES + 8 * h) : bias[h];
    for (int64_t i = 0; i < st->kh; ++i) {
        const float *row = at + i * st->dh * Wf * CL_LANES;
        for (int64_t j = 0; j < st->kw; ++j) {
            const float *tap = wt + (i * st->kw + j) * CL_LANES;
            const an_vec8 w0 = an_vec8_load(tap), w1 = an_vec8_load(tap + 8);
            for (int p = 0; p < P; ++p) {
                const float *xv = row + (p * st->sw + j * st->dw) * CL_LANES;
                acc[p][0] = acc[p][0] + w0 * an_vec8_load(xv);
                acc[p][1] = acc[p][1] + w1 * an_vec8_load(xv + 8);
            }
        }
    }
    for (int p = 0; p < P; ++p)
        for (int h = 0; h < 2; ++h) an_vec8_store(o + p * CL_LANES + 8 * h, acc[p][h]);
}

/* cl_taps in 8-lane halves, four outputs of a row at a time, for the
 * builds whose vectors are 8 floats or narrower (AVX2, the portable one).
 * There the 16-lane vectors of cl_taps went through the stack, each load
 * as four 16-byte moves whose 32-byte reload could not be forwarded: the
 * 5x5 depthwise layers of EfficientNet-B0 at 4x4 and 2x2 ran at about half
 * PyTorch's speed.  On a Zen 3, batch 32, in one process alternating with
 * cl_taps: 240 channels 5x5 at 4x4 0.44x the time on one thread, 672 at
 * 2x2 0.57x, 144 at 8x8 stride 2 0.37x, 40 at 14x14 0.32x (0.36-0.58x on
 * two threads).  Every lane sums the same products in the same order, so
 * the bits are those of cl_taps. */
static AN_ALWAYS_INLINE void cl_taps8(const cl_geometry *g, const int KH, const int KW, const int S,
                                      const float *restrict wt, const float *restrict frame,
                                      int accumulate, float *restrict out)
{
    const cl_steps st = cl_steps_of(g, KH, KW, S);
    const int64_t Wf = g->W + 2 * g->pw, step = st.sw * CL_LANES;
    /* the bias sits where the first output goes */
    const an_vec8 bias[2] = {an_vec8_load(out), an_vec8_load(out + 8)};
    for (int64_t oh = 0; oh < g->OH; ++oh) {
        const float *row = frame + oh * st.sh * Wf * CL_LANES;
        float *o = out + oh * g->OW * CL_LANES;
        int64_t ow = 0;
        for (; ow + 4 <= g->OW; ow += 4)
            cl_taps8_group(4, &st, Wf, wt, row + ow * step, bias, accumulate, o + ow * CL_LANES);
        for (; ow + 2 <= g->OW; ow += 2)
            cl_taps8_group(2, &st, Wf, wt, row + ow * step, bias, accumulate, o + ow * CL_LANES);
        for (; ow < g->OW; ++ow)
            cl_taps8_group(1, &st, Wf, wt, row + ow * step, bias, accumulate, o + ow * CL_LANES);
    }
}

/* A block's weights for cl_block: wt[t * 16 + c] = tap t of channel c's
 * kernel w[c * taps + t] (zero for c >= channels), the taps reversed (the
 * kernel rotated by 180 degrees) when `rotate`: the data gradient as a
 * convolution. */
static void cl_block_weights(const float *w, int64_t taps, int64_t channels, int rotate,
                             float *restrict wt)
{
    cl_transpose(w, taps, channels, taps, CL_LANES, wt);
    if (rotate)
        for (int64_t t = 0; t < taps / 2; ++t)
            for (int c = 0; c < CL_LANES; ++c) {
                float swap = wt[t * CL_LANES + c];
                wt[t * CL_LANES + c] = wt[(taps - 1 - t) * CL_LANES + c];
                wt[(taps - 1 - t) * CL_LANES + c] = swap;
            }
}

/* One image's block of `channels` (<= 16) planes: x planes `x_plane`
 * floats apart, y planes OH*OW apart, the block's weights wt from
 * cl_block_weights.  frame: (H+2ph) x (W+2pw) x 16 floats whose border is
 * zero; out: OH*OW*16 floats.  Both 64-byte aligned. */
static AN_ALWAYS_INLINE void cl_block(const cl_geometry *g, const float *x, int64_t x_plane,
                                      const float *restrict wt, const float *bias, int accumulate,
                                      int64_t channels, float *y, float *restrict frame,
                                      float *restrict out, const int narrow)
{
    const int64_t Wf = g->W + 2 * g->pw, OHW = g->OH * g->OW;
    if (g->ph == 0 && g->pw == 0) {
        cl_transpose(x, x_plane, channels, g->H * g->W, CL_LANES, frame);
    } else { /* transposed into out (free until the taps), then row by row into the frame */
        cl_transpose(x, x_plane, channels, g->H * g->W, CL_LANES, out);
        for (int64_t h = 0; h < g->H; ++h)
            memcpy(frame + ((h + g->ph) * Wf + g->pw) * CL_LANES, out + h * g->W * CL_LANES,
                   sizeof(float) * (size_t)(g->W * CL_LANES));
    }
    if (accumulate) {
        cl_transpose(y, OHW, channels, OHW, CL_LANES, out);
    } else {
        /* Two loops, not one with `bias ? bias[c] : 0`: gcc made that a
         * masked vector load, which with no bias (an all-false mask on
         * address 0) took 45% of the time of EfficientNet's 5x5 layer on
         * 2x2 planes (Zen 5; a masked-off access to an unmapped page is
         * slow). */
        if (bias)
            for (int64_t c = 0; c < CL_LANES; ++c) out[c] = c < channels ? bias[c] : 0.0f;
        else
            for (int64_t c = 0; c < CL_LANES; ++c) out[c] = 0.0f;
    }
    const int s = g->sh == g->sw && g->sh <= 2 ? (int)g->sh : 0;
    const int unit = g->dh == 1 && g->dw == 1;
#define CL_TAPS(KH, KW, S)                                                \
    do {                                                                  \
        if (narrow)                                                       \
            cl_taps8(g, KH, KW, S, wt, frame, accumulate, out);           \
        else                                                              \
            cl_taps(g, KH, KW, S, wt, frame, accumulate, out);            \
    } while (0)
    if (unit && g->kh == 3 && g->kw == 3 && s == 1)
        CL_TAPS(3, 3, 1);
    else if (unit && g->kh == 3 && g->kw == 3 && s == 2)
        CL_TAPS(3, 3, 2);
    else if (unit && g->kh == 5 && g->kw == 5 && s == 1)
        CL_TAPS(5, 5, 1);
    else if (unit && g->kh == 5 && g->kw == 5 && s == 2)
        CL_TAPS(5, 5, 2);
    else
        CL_TAPS(0, 0, 0);
#undef CL_TAPS
    cl_transpose(out, CL_LANES, OHW, channels, (int)OHW, y);
}

/* Weight gradient of one block of `channels` planes over all N images:
 * per image, dy and the framed x are transposed channels-last and every tap
 * gathers its 16 lanes with one multiply and add per output position; the
 * per-image sums are added up in double, image after image (a fixed order
 * per channel, whatever the threads). */
static AN_ALWAYS_INLINE void cl_wgrad_taps(const cl_geometry *g, const int KH, const int KW,
                                           const int S, const float *restrict frame,
                                           const float *restrict dyt, cl_vec *restrict acc)
{
    const cl_steps steps = cl_steps_of(g, KH, KW, S);
    const int64_t kh = steps.kh, kw = steps.kw, sh = steps.sh, sw = steps.sw, dh = steps.dh,
                  dw = steps.dw;
    const int64_t Wf = g->W + 2 * g->pw, OH = g->OH, OW = g->OW;
    for (int64_t t = 0; t < kh * kw; ++t) acc[t] = (cl_vec){0};
    for (int64_t oh = 0; oh < OH; ++oh) {
        for (int64_t ow = 0; ow < OW; ++ow) {
            const cl_vec d = *(const cl_vec *)(dyt + (oh * OW + ow) * CL_LANES);
            for (int64_t i = 0; i < kh; ++i) {
                const float *row = frame + ((oh * sh + i * dh) * Wf + ow * sw) * CL_LANES;
                for (int64_t j = 0; j < kw; ++j)
                    acc[i * kw + j] = acc[i * kw + j] + d * *(const cl_vec *)(row + j * dw * CL_LANES);
            }
        }
    }
}

/* Taps [j0, j0 + J) (J a constant, <= 4) of kernel row i, lanes [h, h + 8):
 * each tap's 8 sums over the output positions in cl_wgrad_taps' order, the
 * J of them in registers while dy is read once. */
static AN_ALWAYS_INLINE void cl_wgrad_taps8_group(const int J, const int64_t i, const int64_t j0,
                                                  const int64_t h, const cl_steps *st,
                                                  const cl_geometry *g, const float *restrict frame,
                                                  const float *restrict dyt, float *restrict acc)
{
    const int64_t Wf = g->W + 2 * g->pw;
    an_vec8 sum[4];
    for (int jj = 0; jj < J; ++jj) sum[jj] = (an_vec8){0};
    for (int64_t oh = 0; oh < g->OH; ++oh) {
        const float *row = frame + ((oh * st->sh + i * st->dh) * Wf + j0 * st->dw) * CL_LANES + h;
        for (int64_t ow = 0; ow < g->OW; ++ow) {
            const an_vec8 d = an_vec8_load(dyt + (oh * g->OW + ow) * CL_LANES + h);
            for (int jj = 0; jj < J; ++jj)
                sum[jj] = sum[jj] + d * an_vec8_load(row + (ow * st->sw + jj * st->dw) * CL_LANES);
        }
    }
    for (int jj = 0; jj < J; ++jj)
        an_vec8_store(acc + (i * st->kw + j0 + jj) * CL_LANES + h, sum[jj]);
}

/* cl_wgrad_taps in 8-lane halves for the narrow builds (see cl_taps8):
 * there the 9 or 25 16-lane sums of a kernel lived on the stack, each
 * update a split load and store.  Here up to four taps of a kernel row are
 * summed at a time, over the positions in the same order, so every sum has
 * the bits of cl_wgrad_taps'.  Forward and backward of a layer together,
 * batch 32, one thread, against cl_wgrad_taps (and cl_taps): 5x5 0.25-0.71x
 * the time, 3x3 at 8x8 and 4x4 (MobileNetV2's 144 and 960 channels)
 * 0.58x and 0.65x. */
static AN_ALWAYS_INLINE void cl_wgrad_taps8(const cl_geometry *g, const int KH, const int KW,
                                            const int S, const float *restrict frame,
                                            const float *restrict dyt, float *restrict acc)
{
    const cl_steps st = cl_steps_of(g, KH, KW, S);
    for (int64_t i = 0; i < st.kh; ++i)
        for (int64_t h = 0; h < CL_LANES; h += 8) {
            int64_t j = 0;
            for (; j + 4 <= st.kw; j += 4)
                cl_wgrad_taps8_group(4, i, j, h, &st, g, frame, dyt, acc);
            for (; j + 2 <= st.kw; j += 2)
                cl_wgrad_taps8_group(2, i, j, h, &st, g, frame, dyt, acc);
            for (; j < st.kw; ++j)
                cl_wgrad_taps8_group(1, i, j, h, &st, g, frame, dyt, acc);
        }
}

static AN_ALWAYS_INLINE void cl_wgrad_block(const cl_geometry *g, const float *x, const float *dy,
                                            int64_t N, int64_t C, int64_t channels, float *dweight,
                                            float *restrict frame, float *restrict out,
                                            const int narrow)
{
    const int64_t Wf = g->W + 2 * g->pw, taps = g->kh * g->kw, HW = g->H * g->W,
                  OHW = g->OH * g->OW;
    double total[CL_MAX_TAPS * CL_LANES];
    for (int64_t i = 0; i < taps * CL_LANES; ++i) total[i] = 0.0;
    const int s = g->sh == g->sw && g->sh <= 2 ? (int)g->sh : 0;
    const int unit = g->dh == 1 && g->dw == 1;
    for (int64_t n = 0; n < N; ++n) {
        const float *xn = x + n * C * HW, *dyn = dy + n * C * OHW;
        _Alignas(64) float acc[CL_MAX_TAPS * CL_LANES]; /* tap t's lanes at acc + t * CL_LANES */
        if (g->ph == 0 && g->pw == 0) {
            cl_transpose(xn, HW, channels, HW, CL_LANES, frame);
        } else {
            cl_transpose(xn, HW, channels, HW, CL_LANES, out);
            for (int64_t h = 0; h < g->H; ++h)
                memcpy(frame + ((h + g->ph) * Wf + g->pw) * CL_LANES, out + h * g->W * CL_LANES,
                       sizeof(float) * (size_t)(g->W * CL_LANES));
        }
        cl_transpose(dyn, OHW, channels, OHW, CL_LANES, out);
#define CL_WGRAD_TAPS(KH, KW, S)                                          \
    do {                                                                  \
        if (narrow)                                                       \
            cl_wgrad_taps8(g, KH, KW, S, frame, out, acc);                \
        else                                                              \
            cl_wgrad_taps(g, KH, KW, S, frame, out, (cl_vec *)acc);       \
    } while (0)
        if (unit && g->kh == 3 && g->kw == 3 && s == 1)
            CL_WGRAD_TAPS(3, 3, 1);
        else if (unit && g->kh == 3 && g->kw == 3 && s == 2)
            CL_WGRAD_TAPS(3, 3, 2);
        else if (unit && g->kh == 5 && g->kw == 5 && s == 1)
            CL_WGRAD_TAPS(5, 5, 1);
        else if (unit && g->kh == 5 && g->kw == 5 && s == 2)
            CL_WGRAD_TAPS(5, 5, 2);
        else
            CL_WGRAD_TAPS(0, 0, 0);
#undef CL_WGRAD_TAPS
        for (int64_t i = 0; i < taps * CL_LANES; ++i) total[i] += (double)acc[i];
    }
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t t = 0; t < taps; ++t) dweight[c * taps + t] += (float)total[t * CL_LANES + c];
}

typedef void (*cl_wgrad_fn)(const cl_geometry *g, const float *x, const float *dy, int64_t N,
                            int64_t C, int64_t channels, float *dweight, float *frame, float *out);

#define AN_DEFINE_CL_WGRAD(suffix, attribute)                                                    \
    attribute static void cl_wgrad_##suffix(const cl_geometry *g, const float *x, const float *dy, \
                                            int64_t N, int64_t C, int64_t channels,               \
                                            float *dweight, float *frame, float *out)            \
    {                                                                                            \
        cl_wgrad_block(g, x, dy, N, C, channels, dweight, frame, out, AN_CL_NARROW_##suffix);    \
    }

typedef void (*cl_block_fn)(const cl_geometry *g, const float *x, int64_t x_plane, const float *wt,
                            const float *bias, int accumulate, int64_t channels, float *y,
                            float *frame, float *out);

#define AN_DEFINE_CL_BLOCK(suffix, attribute)                                                    \
    attribute static void cl_block_##suffix(const cl_geometry *g, const float *x, int64_t x_plane, \
                                            const float *wt, const float *bias, int accumulate,  \
                                            int64_t channels, float *y, float *frame, float *out) \
    {                                                                                            \
        if (accumulate)                                                                          \
            cl_block(g, x, x_plane, wt, bias, 1, channels, y, frame, out, AN_CL_NARROW_##suffix); \
        else                                                                                     \
            cl_block(g, x, x_plane, wt, bias, 0, channels, y, frame, out, AN_CL_NARROW_##suffix); \
    }
#endif
#ifdef AN_HAVE_CHANNELS_LAST
AN_FOR_EACH_ISA(AN_DEFINE_CL_BLOCK)

static cl_block_fn choose_cl_block(void) { return AN_BY_ISA(cl_block_); }

static int cl_fits(const cl_geometry *g, int64_t multiplier)
{
    return multiplier == 1 && g->H * g->W <= CL_MAX_PLANE && g->kh * g->kw <= CL_MAX_TAPS &&
           (g->H + 2 * g->ph) * (g->W + 2 * g->pw) <= CL_MAX_FRAME && g->OH * g->OW <= CL_MAX_OUT;
}

AN_FOR_EACH_ISA(AN_DEFINE_CL_WGRAD)

static cl_wgrad_fn choose_cl_wgrad(void) { return AN_BY_ISA(cl_wgrad_); }

/* Runs unit(ctx, u, scratch) for u < units on the team, each thread with
 * its own zero-framed block, output block and weights block.  Units are
 * independent, so any split across threads gives the same result. */
typedef struct {
    float *frame, *out; /* the zero-framed input block, the output block */
    float *weights;     /* a block's weights (cl_block_weights), kept between units */
    int64_t weights_of; /* the channel block they are of (-1: none yet) */
} cl_scratch;

typedef void (*cl_unit_fn)(const void *ctx, int64_t u, cl_scratch *s);

typedef struct {
    const cl_geometry *g;
    cl_unit_fn unit;
    const void *ctx;
} cl_share;

static void cl_units(const void *ctx, int64_t u0, int64_t u1)
{
    const cl_share *c = ctx;
    const int64_t frame_floats = (c->g->H + 2 * c->g->ph) * (c->g->W + 2 * c->g->pw) * CL_LANES;
    _Alignas(64) float frame[CL_MAX_FRAME * CL_LANES];
    _Alignas(64) float out[CL_MAX_OUT * CL_LANES];
    _Alignas(64) float weights[CL_MAX_TAPS * CL_LANES];
    cl_scratch s = {frame, out, weights, -1};
    for (int64_t i = 0; i < frame_floats; ++i) frame[i] = 0.0f;
    for (int64_t u = u0; u < u1; ++u) c->unit(c->ctx, u, &s);
}

static void cl_for_units(const cl_geometry *g, int64_t units, int64_t work, cl_unit_fn unit,
                         const void *ctx)
{
    const cl_share c = {g, unit, ctx};
    run_shared(units, work, cl_units, &c);
}

typedef struct {
    const cl_geometry *g;
    cl_block_fn block;
    const float *x, *w, *bias;
    float *y;
    int rotate, accumulate, act;
    int64_t C, N;
    double *moments; /* the planes' moments (NULL: none), see run_planes */
} cl_forward_job;

/* unit u = (block of 16 channels, image), the images of a block
 * consecutive: a thread transposes a block's weights once for its run of
 * images.  Transposed for every image, the 25 taps of 5x5 kernels on 2x2
 * planes were six times the floats of the image itself: EfficientNet's
 * 672-channel layer there, batch 32, 2 threads, forward 187 -> 142 us
 * (Zen 5).  Each output's sum is unchanged. */
static void cl_forward_unit(const void *ctx, int64_t u, cl_scratch *s)
{
    const cl_forward_job *j = ctx;
    const int64_t HW = j->g->H * j->g->W, OHW = j->g->OH * j->g->OW, taps = j->g->kh * j->g->kw;
    const int64_t block = u / j->N, n = u % j->N, c0 = block * CL_LANES;
    const int64_t channels = j->C - c0 < CL_LANES ? j->C - c0 : CL_LANES;
    if (s->weights_of != block) {
        cl_block_weights(j->w + c0 * taps, taps, channels, j->rotate, s->weights);
        s->weights_of = block;
    }
    j->block(j->g, j->x + (n * j->C + c0) * HW, HW, s->weights, j->bias ? j->bias + c0 : NULL,
             j->accumulate, channels, j->y + (n * j->C + c0) * OHW, s->frame, s->out);
    /* the block's planes are still in cache */
    an_bias_act_rows(j->y + (n * j->C + c0) * OHW, channels, OHW, OHW, NULL, j->act);
    if (j->moments)
        an_batchnorm_plane_moments_f32(j->y + (n * j->C + c0) * OHW, channels, OHW,
                                       j->moments + 2 * (n * j->C + c0));
}

/* Every image and block of 16 channels of x [N, C, H, W] -> y [N, C, OH, OW]
 * (overwritten, or accumulated onto). */
static void cl_run(const cl_geometry *g, const float *x, const float *w, int rotate,
                   const float *bias, int accumulate, int act, int64_t N, int64_t C, float *y,
                   double *moments)
{
    const int64_t blocks = (C + CL_LANES - 1) / CL_LANES;
    const int64_t HW = g->H * g->W, OHW = g->OH * g->OW;
    const cl_forward_job job = {g, choose_cl_block(), x, w, bias, y, rotate, accumulate,
                                act, C, N, moments};
    cl_for_units(g, N * blocks, N * C * (HW > OHW ? HW : OHW) * g->kh * g->kw, cl_forward_unit,
                 &job);
}

typedef struct {
    const cl_geometry *g;
    cl_wgrad_fn block;
    const float *x, *dy;
    float *dweight;
    int64_t N, C;
} cl_wgrad_job;

/* unit b = one block of 16 channels, all images inside it */
static void cl_wgrad_unit(const void *ctx, int64_t b, cl_scratch *s)
{
    const cl_wgrad_job *j = ctx;
    const int64_t HW = j->g->H * j->g->W, OHW = j->g->OH * j->g->OW, taps = j->g->kh * j->g->kw;
    const int64_t c0 = b * CL_LANES, channels = j->C - c0 < CL_LANES ? j->C - c0 : CL_LANES;
    j->block(j->g, j->x + c0 * HW, j->dy + c0 * OHW, j->N, j->C, channels, j->dweight + c0 * taps,
             s->frame, s->out);
}

/* dweight += the weight gradient. */
static void cl_run_wgrad(const cl_geometry *g, const float *x, const float *dy, int64_t N,
                         int64_t C, float *dweight)
{
    const int64_t HW = g->H * g->W, OHW = g->OH * g->OW;
    const cl_wgrad_job job = {g, choose_cl_wgrad(), x, dy, dweight, N, C};
    cl_for_units(g, (C + CL_LANES - 1) / CL_LANES, N * C * (HW > OHW ? HW : OHW) * g->kh * g->kw,
                 cl_wgrad_unit, &job);
}
#endif

/* x [N,C,H,W], w [C*M,1,kh,kw], bias [C*M] or NULL -> y [N,C*M,OH,OW] */
int an_depthwise_conv2d_forward_moments_f32(
    const float *x, const float *w, const float *bias,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, int act, float *y, double *moments)
{
    const int64_t Cout = C * multiplier;
    const int64_t planes = N * Cout;
#ifdef AN_HAVE_ROW_VEC
    if (flat3x3_fits(H, W, kh, kw, sh, sw, ph, pw, dh, dw, multiplier)) {
#ifdef AN_HAVE_MASKED_SMALL
        if (masked_fits(H, W)) {
            masked_run(x, w, bias, act, planes, C, H, W, y, moments);
            return moments != NULL;
        }
#endif
        return flat_run(x, w, bias, 0, 0, act, planes, C, H, W, y, moments);
    }
#endif
#ifdef AN_HAVE_MASKED_SMALL
    if (s2_fits(H, W, kh, kw, sh, sw, ph, pw, dh, dw, multiplier, OH, OW)) {
        s2_run(x, w, bias, act, planes, C, H, W, ph, OH, y, moments);
        return moments != NULL;
    }
#endif
#ifdef AN_HAVE_ROW_VEC
    if (s2d_fits(H, W, kh, kw, sh, sw, ph, pw, dh, dw, multiplier, OH, OW)) {
        s2d_run(x, w, bias, act, planes, C, H, W, ph, OH, y, moments);
        return moments != NULL;
    }
#endif
#ifdef AN_HAVE_CHANNELS_LAST
    const cl_geometry cg = {H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW};
    if (cl_fits(&cg, multiplier) && !rows3x3_fits(H, W, kh, kw, sh, sw, ph, pw, dh, dw)) {
        cl_run(&cg, x, w, 0, bias, 0, act, N, C, y, moments);
        return moments != NULL;
    }
#endif
    const int fast3x3 = is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == sw &&
                        (sh == 1 || sh == 2);
    const plane3x3_fn plane3x3 = choose_plane3x3();
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const int64_t n = p / Cout, co = p % Cout, ci = co / multiplier;
        const float *xp = x + (n * C + ci) * H * W;
        const float *wk = w + co * kh * kw;
        const float b = bias ? bias[co] : 0.0f;
        float *yp = y + p * OH * OW;
        if (fast3x3)
            plane3x3(xp, wk, b, H, W, sh, OH, OW, 0, act, yp);
        else {
            forward_plane_generic(xp, wk, b, H, W, kh, kw, sh, sw, ph, pw, dh,
                                  dw, OH, OW, yp);
            an_bias_act_rows(yp, 1, OH * OW, OH * OW, NULL, act); /* while hot */
        }
        if (moments) /* the plane is in L1 */
            an_batchnorm_plane_moments_f32(yp, 1, OH * OW, moments + 2 * p);
    }
    return moments != NULL;
}

void an_depthwise_conv2d_forward_act_f32(
    const float *x, const float *w, const float *bias,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, int act, float *y)
{
    an_depthwise_conv2d_forward_moments_f32(x, w, bias, N, C, H, W, multiplier, kh, kw, sh, sw,
                                            ph, pw, dh, dw, OH, OW, act, y, NULL);
}

int an_depthwise3x3_rows_applies(int64_t H, int64_t W, int64_t stride)
{
#ifdef AN_HAVE_ROW_VEC
    if ((stride != 1 && stride != 2) || H < 1 || W < 1)
        return 0;
    const int64_t OH = (H - 1) / stride + 1, OW = (W - 1) / stride + 1;
    /* the paths an_depthwise_conv2d_forward_act_f32 tries before the planes */
    if (flat3x3_fits(H, W, 3, 3, stride, stride, 1, 1, 1, 1, 1))
        return 0;
#ifdef AN_HAVE_CHANNELS_LAST
    const cl_geometry cg = {H, W, 3, 3, stride, stride, 1, 1, 1, 1, OH, OW};
    if (cl_fits(&cg, 1) && !rows3x3_fits(H, W, 3, 3, stride, stride, 1, 1, 1, 1))
        return 0;
#endif
    /* and the planes conv_plane_3x3_p1 runs row by row */
    (void)OH;
    return (H + 2) * (W + 2) <= SMALL_PADDED_PLANE && OW % row_lanes() == 0 &&
           (stride == 1 || W == 2 * OW);
#else
    (void)H, (void)W, (void)stride;
    return 0;
#endif
}

int an_depthwise3x3_band_applies(int64_t band_rows, int64_t W, int64_t stride)
{
#ifdef AN_HAVE_CHANNELS_LAST
    if ((stride != 1 && stride != 2) || band_rows < 3 || W < 1)
        return 0;
    const int64_t OH = (band_rows - 3) / stride + 1, OW = (W - 1) / stride + 1;
    const cl_geometry cg = {band_rows, W, 3, 3, stride, stride, 0, 1, 1, 1, OH, OW};
    return cl_fits(&cg, 1);
#else
    (void)band_rows, (void)W, (void)stride;
    return 0;
#endif
}

void an_depthwise3x3_rows_f32(const float *x, int64_t x_plane, const float *w, const float *bias,
                              int64_t C, int64_t H, int64_t W, int64_t stride, int64_t r0,
                              int64_t r1, int act, float *y, int64_t y_plane)
{
#ifdef AN_HAVE_ROW_VEC
    const plane3x3_rows_fn rows = choose_plane3x3_rows();
    for (int64_t c = 0; c < C; ++c)
        rows(x + c * x_plane, w + c * 9, bias ? bias[c] : 0.0f, H, W, stride, r0, r1, act,
             y + c * y_plane);
#else
    (void)x, (void)x_plane, (void)w, (void)bias, (void)C, (void)H, (void)W, (void)stride;
    (void)r0, (void)r1, (void)act, (void)y, (void)y_plane;
#endif
}

void an_depthwise_conv2d_forward_f32(
    const float *x, const float *w, const float *bias,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *y)
{
    an_depthwise_conv2d_forward_act_f32(x, w, bias, N, C, H, W, multiplier, kh, kw, sh, sw, ph,
                                        pw, dh, dw, OH, OW, DW_ACT_NONE, y);
}

/* Generic input gradient of one (input plane, output plane) pair:
 * dxp [H,W] += scatter of dyp [OH,OW] through wk [kh,kw]. Row-wise like the
 * forward, so the innermost loop is an unit-stride axpy when sw == 1. */
static void backward_input_plane_generic(
    const float *restrict dyp, const float *restrict wk, int64_t H, int64_t W,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *restrict dxp)
{
    for (int64_t oh = 0; oh < OH; ++oh) {
        const float *restrict dyrow = dyp + oh * OW;
        for (int64_t i = 0; i < kh; ++i) {
            const int64_t ih = oh * sh - ph + i * dh;
            if (ih < 0 || ih >= H) continue;
            float *restrict dxrow = dxp + ih * W;
            for (int64_t j = 0; j < kw; ++j) {
                const int64_t off = j * dw - pw;
                const float wv = wk[i * kw + j];
                int64_t lo, hi;
                valid_output_range(OW, W, sw, off, &lo, &hi);
                if (sw == 1) {
                    for (int64_t ow = lo; ow < hi; ++ow)
                        dxrow[ow + off] += wv * dyrow[ow];
                } else {
                    for (int64_t ow = lo; ow < hi; ++ow)
                        dxrow[ow * sw + off] += wv * dyrow[ow];
                }
            }
        }
    }
}

/* Input gradient for 3x3, stride 2, padding 1, dilation 1, as a gather:
 * input row ih receives kernel row i from output row oh = (ih + 1 - i) / 2
 * when that division is exact, so even rows get one tap row (i = 1) and odd
 * rows two (i = 0 from oh+1, i = 2 from oh); columns likewise. Even and odd
 * columns are produced together from unit-stride dy reads, which vectorises,
 * unlike the stride-2 scatter of the generic path. Taps are summed in
 * (i, j) row-major order on top of the existing dx value. */
static int s2_taps(int64_t pos, int64_t n_out, int64_t tap[2], int64_t out[2])
{
    int count = 0;
    for (int64_t t = 0; t < 3; ++t) {
        const int64_t q = pos + 1 - t;
        if (q < 0 || (q & 1) || q / 2 >= n_out) continue;
        tap[count] = t;
        out[count] = q / 2;
        ++count;
    }
    return count;
}

/* Columns [iw0, W) of dx's row whose dy rows and kernel rows are (toh,
 * ti)[0 .. nr): each sum in tap order (dy rows, then columns). */
static void s2_data_grad_columns(const float *restrict dyp, const float *restrict wk,
                                 const int64_t ti[2], const int64_t toh[2], int nr, int64_t iw0,
                                 int64_t W, int64_t OW, float *restrict dxrow)
{
    for (int64_t iw = iw0; iw < W; ++iw) {
        int64_t tj[2], tow[2];
        const int nc = s2_taps(iw, OW, tj, tow);
        float acc = dxrow[iw];
        for (int r = 0; r < nr; ++r)
            for (int c = 0; c < nc; ++c)
                acc += wk[ti[r] * 3 + tj[c]] * dyp[toh[r] * OW + tow[c]];
        dxrow[iw] = acc;
    }
}

#ifdef AN_HAVE_MASKED_SMALL
/* backward_input_plane_3x3_s2_p1 (below) 16 column pairs a vector: the
 * even and odd columns of dx split and rejoined by permutes; column 2b + 1
 * adds dy column b + 1 only where it exists (a masked add, as the scalar
 * code skips it), so every sum is the scalar code's multiplies and adds in
 * its order: the same bits.  The scalar loops and their per-column tail
 * took half of EfficientNet's 96-channel stride-2 layer on 16x16 planes,
 * forward and backward at batch 32. */
AN_TARGET_AVX512 static void backward_input_plane_3x3_s2_p1_avx512(
    const float *restrict dyp, const float *restrict wk, int64_t H, int64_t W, int64_t OH,
    int64_t OW, float *restrict dxp)
{
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                                 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                                29, 31);
    const __m512i low_pairs = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                                23);
    const __m512i high_pairs = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14,
                                                 30, 15, 31);
    const int64_t pairs = W / 2; /* column 2b needs dy column b < OW: always */
    for (int64_t ih = 0; ih < H; ++ih) {
        float *restrict dxrow = dxp + ih * W;
        int64_t ti[2], toh[2];
        const int nr = s2_taps(ih, OH, ti, toh);
        if (nr == 0) continue;
        const float *restrict r0 = dyp + toh[0] * OW;
        const float *restrict r1 = dyp + toh[nr - 1] * OW;
        const float *wa = wk + ti[0] * 3, *wb = wk + ti[nr - 1] * 3;
        const __m512 a0 = _mm512_set1_ps(wa[0]), a1 = _mm512_set1_ps(wa[1]),
                     a2 = _mm512_set1_ps(wa[2]);
        const __m512 b0 = _mm512_set1_ps(wb[0]), b1 = _mm512_set1_ps(wb[1]),
                     b2 = _mm512_set1_ps(wb[2]);
        for (int64_t b = 0; b < pairs; b += 16) {
            const int n = pairs - b < 16 ? (int)(pairs - b) : 16;
            const int n_next = OW - 1 - b < n ? (int)(OW - 1 - b) : n; /* pairs with column b + 1 */
            const __mmask16 here = (__mmask16)((1u << n) - 1);
            const __mmask16 next = n_next > 0 ? (__mmask16)((1u << n_next) - 1) : 0;
            const __mmask16 low = n >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * n)) - 1);
            const __mmask16 high = n > 8 ? (__mmask16)((1u << (2 * (n - 8))) - 1) : 0;
            const __m512 lo = _mm512_maskz_loadu_ps(low, dxrow + 2 * b);
            const __m512 hi = _mm512_maskz_loadu_ps(high, dxrow + 2 * b + 16);
            __m512 even = _mm512_permutex2var_ps(lo, even_lanes, hi);
            __m512 odd = _mm512_permutex2var_ps(lo, odd_lanes, hi);
            const __m512 x0 = _mm512_maskz_loadu_ps(here, r0 + b);
            const __m512 x0_next = _mm512_maskz_loadu_ps(next, r0 + b + 1);
            even = _mm512_add_ps(even, _mm512_mul_ps(a1, x0));
            odd = _mm512_mask_add_ps(odd, next, odd, _mm512_mul_ps(a0, x0_next));
            odd = _mm512_add_ps(odd, _mm512_mul_ps(a2, x0));
            if (nr == 2) { /* even and odd are independent: each keeps its order */
                const __m512 x1 = _mm512_maskz_loadu_ps(here, r1 + b);
                const __m512 x1_next = _mm512_maskz_loadu_ps(next, r1 + b + 1);
                even = _mm512_add_ps(even, _mm512_mul_ps(b1, x1));
                odd = _mm512_mask_add_ps(odd, next, odd, _mm512_mul_ps(b0, x1_next));
                odd = _mm512_add_ps(odd, _mm512_mul_ps(b2, x1));
            }
            _mm512_mask_storeu_ps(dxrow + 2 * b, low, _mm512_permutex2var_ps(even, low_pairs, odd));
            _mm512_mask_storeu_ps(dxrow + 2 * b + 16, high,
                                  _mm512_permutex2var_ps(even, high_pairs, odd));
        }
        s2_data_grad_columns(dyp, wk, ti, toh, nr, 2 * pairs, W, OW, dxrow);
    }
}
#endif

static void backward_input_plane_3x3_s2_p1(const float *restrict dyp,
                                            const float *restrict wk,
                                            int64_t H, int64_t W, int64_t OH,
                                            int64_t OW, float *restrict dxp)
{
    /* columns 0 .. 2*nb-1 come from the pair loop: iw = 2b uses ow = b,
     * iw = 2b+1 uses ow = b+1 and b; the rest go through s2_taps */
    int64_t nb = W / 2 < OW - 1 ? W / 2 : OW - 1;
    if (nb < 0) nb = 0;
    for (int64_t ih = 0; ih < H; ++ih) {
        float *restrict dxrow = dxp + ih * W;
        int64_t ti[2], toh[2];
        const int nr = s2_taps(ih, OH, ti, toh);
        if (nr == 0) continue;
        const float *restrict r0 = dyp + toh[0] * OW;
        const float *restrict r1 = dyp + toh[nr - 1] * OW;
        const float *wa = wk + ti[0] * 3, *wb = wk + ti[nr - 1] * 3;
        const float a0 = wa[0], a1 = wa[1], a2 = wa[2];
        const float b0 = wb[0], b1 = wb[1], b2 = wb[2];
        if (nr == 1) {
            for (int64_t b = 0; b < nb; ++b) {
                float even = dxrow[2 * b], odd = dxrow[2 * b + 1];
                even += a1 * r0[b];
                odd += a0 * r0[b + 1];
                odd += a2 * r0[b];
                dxrow[2 * b] = even;
                dxrow[2 * b + 1] = odd;
            }
        } else {
            for (int64_t b = 0; b < nb; ++b) {
                float even = dxrow[2 * b], odd = dxrow[2 * b + 1];
                even += a1 * r0[b];
                even += b1 * r1[b];
                odd += a0 * r0[b + 1];
                odd += a2 * r0[b];
                odd += b0 * r1[b + 1];
                odd += b2 * r1[b];
                dxrow[2 * b] = even;
                dxrow[2 * b + 1] = odd;
            }
        }
        s2_data_grad_columns(dyp, wk, ti, toh, nr, 2 * nb, W, OW, dxrow);
    }
}

/* dy [N,C*M,OH,OW], w [C*M,1,kh,kw] -> dx [N,C,H,W] (+=) */
void an_depthwise_conv2d_backward_input_f32(
    const float *dy, const float *w,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *dx)
{
    const int64_t Cout = C * multiplier;
    const int64_t planes = N * C;
#ifdef AN_HAVE_ROW_VEC
    if (flat3x3_fits(H, W, kh, kw, sh, sw, ph, pw, dh, dw, multiplier)) {
#ifdef AN_HAVE_MASKED_SMALL
        if (masked_fits(H, W)) {
            masked_data_grad_run(dy, w, planes, C, H, W, dx);
            return;
        }
#endif
        flat_run(dy, w, NULL, 1, 1, DW_ACT_NONE, planes, C, H, W, dx, NULL);
        return;
    }
#endif
#ifdef AN_HAVE_CHANNELS_LAST
    /* Stride 1 keeping the size: the transpose is the convolution of dy
     * with the kernel rotated by 180 degrees and the complementary padding. */
    if (sh == 1 && sw == 1 && OH == H && OW == W && dh * (kh - 1) >= ph && dw * (kw - 1) >= pw) {
        const cl_geometry cg = {OH, OW, kh, kw, 1, 1, dh * (kh - 1) - ph, dw * (kw - 1) - pw,
                                dh, dw, H, W};
        if (cl_fits(&cg, multiplier) && !rows3x3_fits(H, W, kh, kw, sh, sw, ph, pw, dh, dw)) {
            cl_run(&cg, dy, w, 1, NULL, 1, DW_ACT_NONE, N, C, dx, NULL);
            return;
        }
    }
#endif
    /* 3x3 stride 1 pad 1 keeps the size, and its transpose is the same
     * convolution with the kernel rotated by 180 degrees: gather instead of
     * scatter, reusing the forward's interior/border split. */
    const int flip3x3 = is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == 1 &&
                        sw == 1 && OH == H && OW == W;
    const int gather3x3s2 =
        is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == 2 && sw == 2;
#ifdef AN_HAVE_MASKED_SMALL
    const int avx512 = an_cpu_info_get()->isa == AN_ISA_AVX512;
#endif
    const plane3x3_fn plane3x3 = choose_plane3x3();
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t p = 0; p < planes; ++p) {
        const int64_t n = p / C, ci = p % C;
        float *dxp = dx + p * H * W;
        for (int64_t m = 0; m < multiplier; ++m) {
            const int64_t co = ci * multiplier + m;
            const float *dyp = dy + (n * Cout + co) * OH * OW;
            const float *wk = w + co * kh * kw;
            if (flip3x3) {
                float rot[9];
                for (int t = 0; t < 9; ++t) rot[t] = wk[8 - t];
                plane3x3(dyp, rot, 0.0f, OH, OW, 1, H, W, 1, DW_ACT_NONE, dxp);
            } else if (gather3x3s2) {
#ifdef AN_HAVE_MASKED_SMALL
                if (avx512)
                    backward_input_plane_3x3_s2_p1_avx512(dyp, wk, H, W, OH, OW, dxp);
                else
#endif
                    backward_input_plane_3x3_s2_p1(dyp, wk, H, W, OH, OW, dxp);
            } else {
                backward_input_plane_generic(dyp, wk, H, W, kh, kw, sh, sw, ph,
                                             pw, dh, dw, OH, OW, dxp);
            }
        }
    }
}

/* Dot product of a[0..n) with b[0], b[stride], ... . Eight float partial sums
 * (a fixed, thread-independent order the compiler can vectorise), combined
 * in double. */
#define DOT_LANES 8
static inline double dot_strided(const float *restrict a,
                                 const float *restrict b, int64_t n,
                                 int64_t stride)
{
    float part[DOT_LANES] = {0};
    int64_t k = 0;
    if (stride == 1) {
        for (; k + DOT_LANES <= n; k += DOT_LANES)
            for (int l = 0; l < DOT_LANES; ++l) part[l] += a[k + l] * b[k + l];
    } else {
        for (; k + DOT_LANES <= n; k += DOT_LANES)
            for (int l = 0; l < DOT_LANES; ++l)
                part[l] += a[k + l] * b[(k + l) * stride];
    }
    double s = 0.0;
    for (int l = 0; l < DOT_LANES; ++l) s += (double)part[l];
    for (; k < n; ++k) s += (double)a[k] * (double)b[k * stride];
    return s;
}

static inline double sum_floats(const float *restrict a, int64_t n)
{
    float part[DOT_LANES] = {0};
    int64_t k = 0;
    for (; k + DOT_LANES <= n; k += DOT_LANES)
        for (int l = 0; l < DOT_LANES; ++l) part[l] += a[k + l];
    double s = 0.0;
    for (int l = 0; l < DOT_LANES; ++l) s += (double)part[l];
    for (; k < n; ++k) s += (double)a[k];
    return s;
}

/* Kernels with at most this many taps sum all taps in one pass over each
 * plane; larger ones go tap by tap (weight_grad_by_tap). */
#define ONE_PASS_MAX_TAPS 49

/* dweight[co] for kernels of up to ONE_PASS_MAX_TAPS taps: one pass over
 * each (image, output row), every tap's products accumulated in eight float
 * lanes (lane = position within a block of 8 outputs of the tap's valid
 * range), flushed to double once per image, in a fixed order.  Reading the
 * planes tap by tap instead re-read each from L2 once per tap and reduced a
 * short dot product to double per row: the weight gradient alone was 11% of
 * a MobileNetV2 training step. */
/* 3x3, padding 1, stride 1 or 2, planes up to 64 x 64: the plane is copied
 * into a zero frame and every tap runs over whole output rows (the edge
 * outputs multiply the frame's zeros, as im2col's padding does), so rows of
 * 8 or 16 outputs are single vector blocks instead of 7-element scalar
 * tails: on ShuffleNetV2's 8x8 and 4x4 planes this gradient was 9% of the
 * training step.  Longer rows were vectorised already. */
/* Output rows up to this long take the framed path (measured: 8-wide rows
 * 1.35x faster; 32-wide rows, already vectorised, lost the frame copy). */
#define FRAMED_MAX_ROW 16

static inline __attribute__((always_inline)) void weight_grad_3x3_framed(
    const float *dy, const float *x, int64_t N, int64_t C, int64_t Cout, int64_t H, int64_t W,
    int64_t multiplier, const int64_t s, int64_t OH, int64_t OW, int64_t co, double *tap_sum)
{
    const int64_t ci = co / multiplier, Wp = W + 2;
    float frame[SMALL_PADDED_PLANE];
    for (int t = 0; t < 9; ++t) tap_sum[t] = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const float *restrict dyp = dy + (n * Cout + co) * OH * OW;
        frame_plane(x + (n * C + ci) * H * W, H, W, frame);
        float lanes[9][DOT_LANES];
        for (int t = 0; t < 9; ++t)
            for (int l = 0; l < DOT_LANES; ++l) lanes[t][l] = 0.0f;
        for (int64_t oh = 0; oh < OH; ++oh) {
            const float *restrict dyrow = dyp + oh * OW;
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) {
                    float *restrict acc = lanes[i * 3 + j];
                    const float *restrict xs = frame + (oh * s + i) * Wp + j;
                    int64_t ow = 0;
                    for (; ow + DOT_LANES <= OW; ow += DOT_LANES)
                        for (int l = 0; l < DOT_LANES; ++l)
                            acc[l] += dyrow[ow + l] * xs[(ow + l) * s];
                    for (int l = 0; ow < OW; ++ow, ++l) acc[l] += dyrow[ow] * xs[ow * s];
                }
        }
        for (int t = 0; t < 9; ++t) {
            double plane = 0.0;
            for (int l = 0; l < DOT_LANES; ++l) plane += (double)lanes[t][l];
            tap_sum[t] += plane;
        }
    }
}

/* 3x3, pad 1, stride 1 on planes wider than the framed path takes (the
 * 32x32 planes of MobileNetV2 and ShuffleNetV2 at 32x32 inputs).  The
 * general loop below ran 24 GFLOP/s there on two threads: each tap's run
 * was split at the plane's edge, and the last 7 columns of a 32-wide row
 * went lane by lane through the stack array (a load, add and store per
 * product, 21% of its samples on that store).  Here each output row is
 * taken 8 columns at a time for all nine taps, the taps' 8-lane sums in
 * vector registers (GCC vector types, as the channels-last blocks use),
 * reading a zero-framed copy of the plane.  Where a tap falls on the
 * frame's left or right column, dy's lane is zeroed first, so the product
 * is 0 x 0 = +0 (dy times the frame's 0 would turn an inf or NaN of dy
 * into a NaN the true sum does not have); the frame's top and bottom rows
 * are not read at all.
 * Lane l holds the columns ow = l mod 8 of each row, rows in order; the
 * lanes are combined per image in double as elsewhere.  Plain C with
 * explicit lanes: the same bits under every ISA and thread count. */
#define WIDE_GRAD_LANES 8
#define WIDE_GRAD_MAX_FRAME (66 * 66) /* planes up to 64 x 64 */
typedef float wide_vec __attribute__((vector_size(WIDE_GRAD_LANES * sizeof(float))));
static AN_ALWAYS_INLINE wide_vec wide_load(const float *p)
{
    wide_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}
static AN_ALWAYS_INLINE int weight_grad_3x3_wide_fits(int64_t H, int64_t W, int64_t OH, int64_t OW)
{
    return OH == H && OW == W && W % WIDE_GRAD_LANES == 0 && (H + 2) * (W + 2) <= WIDE_GRAD_MAX_FRAME;
}

static AN_ALWAYS_INLINE void weight_grad_3x3_wide(const float *dy, const float *x, int64_t N,
                                                  int64_t C, int64_t Cout, int64_t H, int64_t W,
                                                  int64_t multiplier, int64_t co, double *tap_sum)
{
    const int64_t ci = co / multiplier, Wp = W + 2;
    float frame[WIDE_GRAD_MAX_FRAME];
    for (int t = 0; t < 9; ++t) tap_sum[t] = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const float *restrict dyp = dy + (n * Cout + co) * H * W;
        frame_plane(x + (n * C + ci) * H * W, H, W, frame);
        wide_vec t0 = {0}, t1 = {0}, t2 = {0}, t3 = {0}, t4 = {0}, t5 = {0}, t6 = {0}, t7 = {0},
                 t8 = {0};
        for (int64_t oh = 0; oh < H; ++oh) {
            const float *restrict dyrow = dyp + oh * W;
            /* frame rows oh, oh + 1, oh + 2: input rows oh - 1, oh, oh + 1 */
            const float *restrict r0 = frame + oh * Wp, *restrict r1 = r0 + Wp, *restrict r2 = r1 + Wp;
            const int top = oh > 0, bottom = oh < H - 1;
            for (int64_t ow = 0; ow < W; ow += WIDE_GRAD_LANES) {
                const wide_vec d = wide_load(dyrow + ow);
                wide_vec d0 = d, d2 = d; /* for tap columns 0 and 2 */
                if (ow == 0) d0[0] = 0.0f;
                if (ow + WIDE_GRAD_LANES == W) d2[WIDE_GRAD_LANES - 1] = 0.0f;
                if (top) {
                    t0 += d0 * wide_load(r0 + ow);
                    t1 += d * wide_load(r0 + ow + 1);
                    t2 += d2 * wide_load(r0 + ow + 2);
                }
                t3 += d0 * wide_load(r1 + ow);
                t4 += d * wide_load(r1 + ow + 1);
                t5 += d2 * wide_load(r1 + ow + 2);
                if (bottom) {
                    t6 += d0 * wide_load(r2 + ow);
                    t7 += d * wide_load(r2 + ow + 1);
                    t8 += d2 * wide_load(r2 + ow + 2);
                }
            }
        }
        float acc[9][WIDE_GRAD_LANES];
        const wide_vec sums[9] = {t0, t1, t2, t3, t4, t5, t6, t7, t8};
        memcpy(acc, sums, sizeof acc);
        for (int t = 0; t < 9; ++t) {
            double plane = 0.0;
            for (int l = 0; l < WIDE_GRAD_LANES; ++l) plane += (double)acc[t][l];
            tap_sum[t] += plane;
        }
    }
}

static inline __attribute__((always_inline)) void weight_grad_one_pass(const float *dy, const float *x, int64_t N, int64_t C,
                                 int64_t Cout, int64_t H, int64_t W, int64_t multiplier,
                                 int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                 int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                                 int64_t co, double *tap_sum)
{
    const int64_t ci = co / multiplier, taps = kh * kw;
    if (is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == sw && (sh == 1 || sh == 2) &&
        OW <= FRAMED_MAX_ROW && (H + 2) * (W + 2) <= SMALL_PADDED_PLANE) {
        weight_grad_3x3_framed(dy, x, N, C, Cout, H, W, multiplier, sh, OH, OW, co, tap_sum);
        return;
    }
    if (is_3x3_p1_d1(kh, kw, ph, pw, dh, dw) && sh == 1 && sw == 1 &&
        weight_grad_3x3_wide_fits(H, W, OH, OW)) {
        weight_grad_3x3_wide(dy, x, N, C, Cout, H, W, multiplier, co, tap_sum);
        return;
    }
    int64_t lo[ONE_PASS_MAX_TAPS], hi[ONE_PASS_MAX_TAPS];
    for (int64_t j = 0; j < kw; ++j) valid_output_range(OW, W, sw, j * dw - pw, &lo[j], &hi[j]);
    for (int64_t t = 0; t < taps; ++t) tap_sum[t] = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const float *restrict dyp = dy + (n * Cout + co) * OH * OW;
        const float *restrict xp = x + (n * C + ci) * H * W;
        float lanes[ONE_PASS_MAX_TAPS][DOT_LANES];
        for (int64_t t = 0; t < taps; ++t)
            for (int l = 0; l < DOT_LANES; ++l) lanes[t][l] = 0.0f;
        for (int64_t oh = 0; oh < OH; ++oh) {
            const float *restrict dyrow = dyp + oh * OW;
            for (int64_t i = 0; i < kh; ++i) {
                const int64_t ih = oh * sh - ph + i * dh;
                if (ih < 0 || ih >= H) continue;
                for (int64_t j = 0; j < kw; ++j) {
                    float *restrict acc = lanes[i * kw + j];
                    const int64_t a = lo[j], b = hi[j];
                    /* input column of output ow: ow * sw + j * dw - pw */
                    const float *restrict xrow = xp + ih * W + j * dw - pw;
                    int64_t ow = a;
                    if (sw == 1) {
                        for (; ow + DOT_LANES <= b; ow += DOT_LANES)
                            for (int l = 0; l < DOT_LANES; ++l)
                                acc[l] += dyrow[ow + l] * xrow[ow + l];
                    } else {
                        for (; ow + DOT_LANES <= b; ow += DOT_LANES)
                            for (int l = 0; l < DOT_LANES; ++l)
                                acc[l] += dyrow[ow + l] * xrow[(ow + l) * sw];
                    }
                    for (int l = 0; ow < b; ++ow, ++l) acc[l] += dyrow[ow] * xrow[ow * sw];
                }
            }
        }
        for (int64_t t = 0; t < taps; ++t) {
            double plane = 0.0;
            for (int l = 0; l < DOT_LANES; ++l) plane += (double)lanes[t][l];
            tap_sum[t] += plane;
        }
    }
}

typedef void (*weight_grad_fn)(const float *dy, const float *x, int64_t N, int64_t C,
                               int64_t Cout, int64_t H, int64_t W, int64_t multiplier,
                               int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                               int64_t co, double *tap_sum);

/* Per ISA, like the 3x3 planes: the lanes are explicit, so the sums are the
 * same whatever the vector width. */
#define AN_DEFINE_WEIGHT_GRAD(suffix, attribute)                                                 \
    attribute AN_INLINE_COPIES static void weight_grad_##suffix(                                                  \
        const float *dy, const float *x, int64_t N, int64_t C, int64_t Cout, int64_t H,          \
        int64_t W, int64_t multiplier, int64_t kh, int64_t kw, int64_t sh, int64_t sw,           \
        int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW, int64_t co,      \
        double *tap_sum)                                                                         \
    {                                                                                            \
        weight_grad_one_pass(dy, x, N, C, Cout, H, W, multiplier, kh, kw, sh, sw, ph, pw, dh,    \
                             dw, OH, OW, co, tap_sum);                                           \
    }

AN_FOR_EACH_ISA(AN_DEFINE_WEIGHT_GRAD)

static weight_grad_fn choose_weight_grad(void) { return AN_BY_ISA(weight_grad_); }

/* dweight[co] tap by tap, for kernels too large for the lanes above. */
static void weight_grad_by_tap(const float *dy, const float *x, int64_t N, int64_t C,
                               int64_t Cout, int64_t H, int64_t W, int64_t multiplier,
                               int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                               int64_t co, float *dweight)
{
    const int64_t ci = co / multiplier;
    for (int64_t i = 0; i < kh; ++i) {
        for (int64_t j = 0; j < kw; ++j) {
            const int64_t off = j * dw - pw;
            int64_t lo, hi;
            valid_output_range(OW, W, sw, off, &lo, &hi);
            double acc = 0.0;
            if (lo < hi) {
                for (int64_t n = 0; n < N; ++n) {
                    const float *dyp = dy + (n * Cout + co) * OH * OW;
                    const float *xp = x + (n * C + ci) * H * W;
                    for (int64_t oh = 0; oh < OH; ++oh) {
                        const int64_t ih = oh * sh - ph + i * dh;
                        if (ih < 0 || ih >= H) continue;
                        acc += dot_strided(dyp + oh * OW + lo, xp + ih * W + lo * sw + off,
                                           hi - lo, sw);
                    }
                }
            }
            dweight[co * kh * kw + i * kw + j] += (float)acc;
        }
    }
}

/* dy [N,C*M,OH,OW], x [N,C,H,W] -> dweight [C*M,1,kh,kw] (+=),
 * dbias [C*M] (+=, optional). Parallel over output channels; the batch and
 * the spatial positions are summed in a fixed order, so the result does not
 * depend on the thread count. */
/* The bias gradient of output channel co: per-image sums added in double. */
static float bias_grad_of(const float *dy, int64_t N, int64_t Cout, int64_t OHW, int64_t co)
{
    double acc = 0.0;
    for (int64_t n = 0; n < N; ++n) acc += sum_floats(dy + (n * Cout + co) * OHW, OHW);
    return (float)acc;
}

void an_depthwise_conv2d_backward_weight_f32(
    const float *dy, const float *x,
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t multiplier,
    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
    int64_t dh, int64_t dw, int64_t OH, int64_t OW, float *dweight,
    float *dbias)
{
    const int64_t Cout = C * multiplier;
#ifdef AN_HAVE_CHANNELS_LAST
    const cl_geometry cg = {H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW};
    if (cl_fits(&cg, multiplier)) {
        cl_run_wgrad(&cg, x, dy, N, C, dweight);
        if (dbias) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * OH * OW > KERNEL_PARALLEL_GRAIN)
#endif
            for (int64_t co = 0; co < Cout; ++co) dbias[co] += bias_grad_of(dy, N, Cout, OH * OW, co);
        }
        return;
    }
#endif
    const weight_grad_fn weight_grad = choose_weight_grad();
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * H * W > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t co = 0; co < Cout; ++co) {
        if (kh * kw <= ONE_PASS_MAX_TAPS && kw <= ONE_PASS_MAX_TAPS) {
            double tap_sum[ONE_PASS_MAX_TAPS];
            weight_grad(dy, x, N, C, Cout, H, W, multiplier, kh, kw, sh, sw, ph, pw,
                                 dh, dw, OH, OW, co, tap_sum);
            for (int64_t t = 0; t < kh * kw; ++t) dweight[co * kh * kw + t] += (float)tap_sum[t];
        } else {
            weight_grad_by_tap(dy, x, N, C, Cout, H, W, multiplier, kh, kw, sh, sw, ph, pw, dh,
                               dw, OH, OW, co, dweight);
        }
        if (dbias) dbias[co] += bias_grad_of(dy, N, Cout, OH * OW, co);
    }
}
