/* conv.c — 2-D convolution (NCHW) with autograd.

   The op validates, then walks an ordered list of implementations and the
   first that accepts the shape runs (specialists first, the general
   im2col + GEMM last, which accepts everything):
     1. depthwise   groups == C_in > 1, C_out a multiple of C_in: direct kernel
     2. pointwise   1x1, stride 1, no padding: the tiled GEMM driver of 3.,
                    reading x and writing dx in place (no im2col)
     3. im2col_gemm anything: im2col of a tile (several small images or a
                    band of rows of a large one) per group, one GEMM per tile
   The chosen implementation is remembered on the node so the backward uses
   the same lowering.  Threads: the GEMM drivers run whole image units on
   different threads when there are enough of them, else thread each GEMM.  Every sum over images is taken
   in an order fixed by the shape, so 1 and N threads agree bit for bit. */
#include "conv_internal.h"
#include "../kernels/batchnorm.h"
#include "../kernels/conv3x3_direct.h"
#include "../kernels/depthwise.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_pack.h"
#include "../cpu/cpu.h"
#include "../kernels/im2col.h"
#include "../kernels/winograd.h"
#include <stdlib.h>
#include <string.h>

/* Lowering to GEMM works in tiles of about this many output positions (the
   GEMM's N): several small images, or a band of rows of a large one; the
   multi-image workspace stays within CONV_CHUNK_FLOATS.  See im2col_gemm. */
#define CONV_CHUNK_COLUMNS 512
#define CONV_CHUNK_FLOATS (2 << 20) /* 8 MB */
/* Smallest plane that a 1x1 convolution runs image by image (smaller ones
   run several images per GEMM, read from x by pack_pointwise_panel).  8x8
   planes batch since that reader took the place of a copy: batch 32, two
   threads, in one process alternating with image by image (Zen 3),
   forward and backward 0.69-0.88x the time (ResNet-101's 1024 -> 256 and
   256 -> 1024, MobileNetV2's 64 -> 384 and 384 -> 64, ShuffleNetV2's 116;
   one thread 0.71-0.90x); forward alone 0.88-0.91x for the three with the
   larger outputs, 1.03-1.05x for 384 -> 64, 116 -> 116 and 256 -> 64 (a
   pass over the output that image by image fused into the GEMM).  The
   training steps of MobileNetV2 and ShuffleNetV2 at batch 128 did not move
   (1.00x, 1.02x; 3 and 2 of 6 rounds faster).  16x16 planes measured
   0.98-1.2x: they stay image by image. */
#define CONV_POINTWISE_MIN_PLANE 128

typedef struct {
    int64_t N, C, H, W;        /* input */
    int64_t Cout, kh, kw;      /* weight [Cout, C/groups, kh, kw] */
    int64_t sh, sw, ph, pw, dh, dw, groups;
    int64_t OH, OW;
    /* inference only: the activation the forward applies to y as it writes
       it (the implicit band copy, the multi-image exchange), or in a pass
       over each unit's output right after its GEMM while it is in cache */
    an_activation act;
    /* inference only: y[n, co, :, :] += residual (same layout as y) after the
       bias and before act; set only where the path adds it as it writes y
       (the in-place 1x1 GEMM), the others get a pass afterwards */
    const float *residual;
    /* inference only: the weight pre-packed for the GEMM (an_gemm_pack_a),
       read by the in-place 1x1 GEMM; NULL: packed on each call */
    const float *packed_weight;
    /* training, when a batch norm follows (an_conv2d_batch_norm_act): each
       output plane's moments for its statistics, [N * Cout][2] (see
       an_batchnorm_plane_moments_f32), computed by a path on the planes it
       has just written, while they are in cache; it then sets
       *moments_filled.  A path that does not leaves it 0 and the caller
       computes them in a pass after the convolution.  NULL: none. */
    double *moments;
    int *moments_filled;
} conv_geometry;

/* The moments of images [n0, n0 + count) of y, right after a path wrote
   them (nothing when no batch norm wants them). */
static void images_moments(const conv_geometry *g, const float *y, int64_t n0, int64_t count)
{
    if (!g->moments || count <= 0)
        return;
    const int64_t OHW = g->OH * g->OW;
    an_batchnorm_plane_moments_f32(y + n0 * g->Cout * OHW, count * g->Cout, OHW,
                                   g->moments + 2 * n0 * g->Cout);
}

static void moments_filled(const conv_geometry *g)
{
    if (g->moments)
        *g->moments_filled = 1;
}


/* y[0..n) = act(y + residual) in place (residual NULL: none; relu / relu6
   as an_relu and an_relu6 compute them), threaded in chunks. */
static void epilogue_all(float *y, const float *residual, int64_t n, an_activation act)
{
    if (!residual && act == AN_ACTIVATION_NONE)
        return;
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t start = 0; start < n; start += 4096) {
        int64_t len = n - start < 4096 ? n - start : 4096;
        an_epilogue_rows(y + start, 1, len, len, NULL, residual ? residual + start : NULL, len,
                         gemm_act(act));
    }
}

/* dst[0..n) = act(src + bias) (bias NULL: a copy): one output run leaving a
   GEMM's workspace for y (the copy stays inline vector moves: a memcpy call
   per row of 8-32 floats cost more than the move). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void store_run(float *restrict dst, const float *restrict src, int64_t n, const float *bias,
                      an_activation act)
{
    if (bias) {
        const float b = *bias;
        for (int64_t k = 0; k < n; k++)
            dst[k] = src[k] + b;
    } else {
        for (int64_t k = 0; k < n; k++)
            dst[k] = src[k];
    }
    if (act != AN_ACTIVATION_NONE)
        an_bias_act_rows(dst, 1, n, n, NULL, gemm_act(act));
}

/* y = act(y + bias[o]) over `planes` runs of n floats, `stride` apart (bias
   may be NULL): the output of one in-place GEMM, finished in one pass while
   it is in cache (threaded like the GEMM when called outside a team).
   Filling y with the bias before a GEMM with beta = 1 and activating after
   it took two more passes over the output. */
static void finish_planes(float *y, int64_t planes, int64_t stride, int64_t n, const float *bias,
                          an_activation act)
{
    if (!bias && act == AN_ACTIVATION_NONE)
        return;
#pragma omp parallel for schedule(static) if (planes * n > AN_PARALLEL_GRAIN)
    for (int64_t o = 0; o < planes; o++)
        an_bias_act_rows(y + o * stride, 1, n, n, bias ? bias + o : NULL, gemm_act(act));
}

/* Raw pointers of a backward pass; a NULL gradient is not wanted. */
typedef struct {
    const float *dy, *x, *w;
    float *dx, *dw;
} conv_grads;

typedef struct {
    const char *name;
    int (*accepts)(const conv_geometry *g);
    /* y = conv(x, w) + bias (bias may be NULL); y overwritten */
    an_status (*forward)(const conv_geometry *g, const float *x, const float *w, const float *bias,
                         float *y);
    /* dx, dw zero-initialised by the caller, accumulated into */
    an_status (*backward)(const conv_geometry *g, const conv_grads *grads);
} conv_impl;

static an_status gemm_or_fail(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                              int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                              int64_t ldc)
{
    if (an_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != 0)
        return an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
    return AN_OK;
}

/* y[n, co, :] = bias[co] for every image: the GEMMs then add onto it. */
static void fill_bias(const conv_geometry *g, const float *bias, float *y)
{
    int64_t plane = g->OH * g->OW, rows = g->N * g->Cout;
#pragma omp parallel for schedule(static) if (rows * plane > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        float v = bias[r % g->Cout];
        float *p = y + r * plane;
        for (int64_t i = 0; i < plane; i++)
            p[i] = v;
    }
}

/* ------------------------------------------------------------ depthwise */

static int depthwise_accepts(const conv_geometry *g)
{
    return g->groups > 1 && g->groups == g->C && g->Cout % g->C == 0;
}

static an_status depthwise_forward(const conv_geometry *g, const float *x, const float *w,
                                   const float *bias, float *y)
{
    if (an_depthwise_conv2d_forward_moments_f32(x, w, bias, g->N, g->C, g->H, g->W, g->Cout / g->C,
                                                g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh,
                                                g->dw, g->OH, g->OW, gemm_act(g->act), y,
                                                g->moments))
        moments_filled(g);
    return AN_OK;
}

static an_status depthwise_backward(const conv_geometry *g, const conv_grads *gr)
{
    int64_t mult = g->Cout / g->C;
    if (gr->dx)
        an_depthwise_conv2d_backward_input_f32(gr->dy, gr->w, g->N, g->C, g->H, g->W, mult, g->kh,
                                               g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                                               g->OH, g->OW, gr->dx);
    if (gr->dw)
        an_depthwise_conv2d_backward_weight_f32(gr->dy, gr->x, g->N, g->C, g->H, g->W, mult, g->kh,
                                                g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                                                g->OH, g->OW, gr->dw, NULL);
    return AN_OK;
}

/* ------------------------------------------------------------ pointwise */

/* A 1x1 stride-1 unpadded convolution is y[n, g] = W_g @ x[n, g] with x
   already in GEMM layout [C/groups, H*W]: the tiled driver below runs it
   with no im2col copy at all (planes under 128 pixels run several images per
   GEMM, its B panels gathered straight from x by pack_pointwise_panel), and
   the data gradient is a GEMM writing straight into dx. */
static int pointwise_accepts(const conv_geometry *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* ---------------------------------------------------------- im2col_gemm */

/* The output is lowered a tile at a time into one column matrix
   col[cg*kh*kw, tile columns] and each tile is one GEMM of about
   CONV_CHUNK_COLUMNS columns:
     - small planes: a tile is several whole images.  With one image per
       GEMM, late layers (4x4 or 8x8 outputs) ran GEMMs with N = 16 or 64
       that repacked the whole weight matrix for every image, and the weight
       gradient re-read and re-wrote all of dW once per image;
     - large planes: a tile is a band of output rows of one image, so the
       column matrix stays in L2 between im2col and the GEMM's packing
       (a 64-channel 3x3 layer at 32x32 has 2.4 MB of columns per image).
   The tiling depends on the shape alone (never on the thread count), so the
   order of every sum is fixed and results do not change with threads. */

typedef struct {
    int64_t images; /* images per tile (whole images when > 1) */
    int64_t rows;   /* output rows per tile (OH when images > 1) */
} conv_tiling;

static int im2col_gemm_accepts(const conv_geometry *g)
{
    (void)g;
    return 1;
}

/* Splits `count` into pieces of at most `most`, all of near-equal size:
   25 + 7 images would run the last GEMM at a quarter width. */
static int64_t balanced_piece(int64_t count, int64_t most)
{
    if (most < 1)
        most = 1;
    if (most >= count)
        return count > 0 ? count : 1;
    int64_t pieces = (count + most - 1) / most;
    return (count + pieces - 1) / pieces;
}

static conv_tiling plan_tiles(const conv_geometry *g)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW > 0 ? g->OH * g->OW : 1, OW = g->OW > 0 ? g->OW : 1;
    conv_tiling t = {1, g->OH};
    /* a 1x1 image is read in place; copying it to batch images pays only
       on tiny planes (measured) */
    int64_t batch_below = pointwise_accepts(g) ? CONV_POINTWISE_MIN_PLANE : CONV_CHUNK_COLUMNS;
    if (OHW < batch_below) {
        /* whole images, within the workspace budget (columns + GEMM output) */
        int64_t n = (CONV_CHUNK_COLUMNS + OHW - 1) / OHW;
        int64_t per_image = (ckk + og) * OHW;
        if (per_image > 0 && n > CONV_CHUNK_FLOATS / per_image)
            n = CONV_CHUNK_FLOATS / per_image;
        t.images = balanced_piece(g->N, n);
    } else {
        t.rows = balanced_piece(g->OH, (CONV_CHUNK_COLUMNS + OW - 1) / OW);
    }
    return t;
}

/* col[cg*kh*kw, nb*rows*OW] of group `grp` for images [n0, n0+nb) and
   output rows [oh0, oh0+rows).  A band of rows is the convolution of a
   virtual image whose top padding is ph - oh0*sh (negative past the first
   band).  One (image, channel) pair per iteration, each writing its own
   block of rows and columns, so pairs split across threads.  (1x1 tiles
   never come here: their panels are read from x, see pack_pointwise_panel.) */
static void im2col_tile(const conv_geometry *g, const float *x, int64_t n0, int64_t nb,
                        int64_t oh0, int64_t rows, int64_t grp, float *col)
{
    int64_t cg = g->C / g->groups, HW = g->H * g->W, cols = rows * g->OW;
    int64_t kk = g->kh * g->kw, ld = nb * cols, pairs = nb * cg;
#pragma omp parallel for schedule(static) if (pairs * kk * cols > AN_PARALLEL_GRAIN)
    for (int64_t p = 0; p < pairs; p++) {
        int64_t i = p / cg, c = p % cg;
        an_im2col_ld_f32(x + ((n0 + i) * g->C + grp * cg + c) * HW, 1, g->H, g->W, g->kh, g->kw,
                         g->sh, g->sw, g->ph - oh0 * g->sh, g->pw, g->dh, g->dw, rows, g->OW,
                         col + c * kk * ld + i * cols, ld);
    }
}

/* The column matrix of a tile, never written out: the GEMM asks for it a
   packed panel at a time (an_gemm_f32_pack_b) and this gathers each panel
   straight from x.  im2col followed by the GEMM's own packing copied every
   column twice (13-20% of a ResNet-20 step).  Column j of the tile is output
   position (image j / (rows*OW), row oh0 + (j % (rows*OW)) / OW, column
   j % OW); row k is tap (c, ki, kj) = (k / (kh*kw), k / kw % kh, k % kw). */
typedef struct {
    const conv_geometry *g;
    const float *x;       /* image n0, first channel of the group */
    int64_t oh0, rows;    /* output rows of the tile */
} im2col_source;

/* Outputs o in [0, n_out) read input position o*stride + offset. Returns in
   [*lo, *hi) the o whose position lies in [0, n_in); lo <= hi always. */
static inline void valid_outputs(int64_t n_out, int64_t n_in, int64_t stride, int64_t offset,
                                 int64_t *lo, int64_t *hi)
{
    int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t end = offset >= n_in ? 0 : (n_in - offset + stride - 1) / stride;
    if (first > n_out)
        first = n_out;
    if (end > n_out)
        end = n_out;
    if (end < first)
        end = first;
    *lo = first;
    *hi = end;
}

/* Columns [cols, width) of a packed panel's kc rows: zero, so the
   micro-kernel runs a full tile past the last column. */
static void zero_panel_columns(float *panel, int64_t kc, int64_t cols, int width)
{
    for (int64_t k = 0; k < kc && cols < width; k++)
        for (int64_t j = cols; j < width; j++)
            panel[k * width + j] = 0.0f;
}

/* Kernels up to this size gather through small per-run tables. */
#define PACK_MAX_TAPS 16

static void pack_im2col_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                              int64_t cols, int width, float *panel)
{
    const im2col_source *src = source;
    const conv_geometry *g = src->g;
    const int64_t per_image = src->rows * g->OW, HW = g->H * g->W, kk = g->kh * g->kw;
    const int tabled = g->kh <= PACK_MAX_TAPS && g->kw <= PACK_MAX_TAPS;
    for (int64_t j = 0; j < cols;) {
        /* a run of columns along one output row of one image */
        const int64_t col = j0 + j, image = col / per_image, rem = col % per_image;
        const int64_t oh = src->oh0 + rem / g->OW, ow0 = rem % g->OW;
        const int64_t run = g->OW - ow0 < cols - j ? g->OW - ow0 : cols - j;
        const float *xi = src->x + image * g->C * HW;
        /* per kernel row: the input row's offset, or -1 outside the image;
           per kernel column: the valid outputs [lo, hi) of the run and the
           input offset of its first output.  Divisions happen here, once
           per run, not once per panel row. */
        int64_t row_at[PACK_MAX_TAPS], col_at[PACK_MAX_TAPS], lo_at[PACK_MAX_TAPS],
            hi_at[PACK_MAX_TAPS];
        if (tabled) {
            for (int64_t ki = 0; ki < g->kh; ki++) {
                int64_t ih = oh * g->sh - g->ph + ki * g->dh;
                row_at[ki] = ih >= 0 && ih < g->H ? ih * g->W : -1;
            }
            for (int64_t kj = 0; kj < g->kw; kj++) {
                int64_t offset = kj * g->dw - g->pw, lo, hi;
                valid_outputs(ow0 + run, g->W, g->sw, offset, &lo, &hi);
                lo = lo > ow0 ? lo - ow0 : 0;
                hi = hi > ow0 ? hi - ow0 : 0;
                lo_at[kj] = lo < hi ? lo : hi;
                hi_at[kj] = hi;
                col_at[kj] = ow0 * g->sw + offset;
            }
        }
        int64_t c = k0 / kk, ki = k0 % kk / g->kw, kj = k0 % g->kw;
        for (int64_t k = 0; k < kc; k++) {
            float *restrict to = panel + k * width + j;
            int64_t row, lo, hi, first;
            if (tabled) {
                row = row_at[ki], lo = lo_at[kj], hi = hi_at[kj], first = col_at[kj];
            } else {
                int64_t ih = oh * g->sh - g->ph + ki * g->dh, offset = kj * g->dw - g->pw;
                row = ih >= 0 && ih < g->H ? ih * g->W : -1;
                valid_outputs(ow0 + run, g->W, g->sw, offset, &lo, &hi);
                lo = lo > ow0 ? lo - ow0 : 0;
                hi = hi > ow0 ? hi - ow0 : 0;
                if (lo > hi)
                    lo = hi;
                first = ow0 * g->sw + offset;
            }
            if (row < 0)
                lo = hi = 0;
            int64_t t = 0;
            for (; t < lo; t++)
                to[t] = 0.0f;
            if (hi > lo) {
                const float *restrict from = xi + c * HW + row + first;
                if (g->sw == 1)
                    for (; t < hi; t++)
                        to[t] = from[t];
                else
                    for (; t < hi; t++)
                        to[t] = from[t * g->sw];
            }
            for (; t < run; t++)
                to[t] = 0.0f;
            if (++kj == g->kw) {
                kj = 0;
                if (++ki == g->kh) {
                    ki = 0;
                    c++;
                }
            }
        }
        j += run;
    }
    zero_panel_columns(panel, kc, cols, width);
}

/* Stride-2 layers with output rows of up to 16 gather their B panels
   straight from x with AVX-512 (an_im2col_stride2_panel_avx512), on small
   planes instead of copying each tile's images into their stride phases
   first (pad_tile), on large planes instead of the phases read in place
   (implicit_strided_accepts).  Forward, 2 threads, batch 32, in one
   process alternating with the phases (Zen 5): ResNet-20's 16 -> 32 on
   32x32 0.78x the time and 32 -> 64 on 16x16 0.82x; ResNet-18's 64 -> 128
   0.87x, its 1x1/2 shortcut 0.49x, 128 -> 256 0.95x, 256 -> 512 0.91x;
   EfficientNet's 3 -> 32 stem 0.78x.  The panels hold the same values.
   Their weight gradients gather the taps the same way
   (pack_stride2_taps_panel) and their data gradients add a row of dx at a
   time (col2im_tile). */
static int stride2_gather_applies(const conv_geometry *g)
{
#ifdef AN_HAVE_STRIDE2_AVX512
    return g->sh == 2 && g->sw == 2 && g->dh == 1 && g->dw == 1 && g->kh <= AN_STRIDE2_MAX_TAPS &&
           g->kw <= AN_STRIDE2_MAX_TAPS && g->OW <= AN_STRIDE2_MAX_OW &&
           an_cpu_info_get()->isa == AN_ISA_AVX512;
#else
    (void)g;
    return 0;
#endif
}

/* Stride-1 layers on planes of at most 16 floats gather their panels
   from x by permutes (an_im2col_small_plane_panel_avx512), which takes
   tiles of whole images. */
_Static_assert(AN_SMALL_PLANE_MAX_FLOATS < CONV_CHUNK_COLUMNS,
               "plan_tiles gives small planes tiles of whole images");
#ifdef AN_HAVE_STRIDE2_AVX512 /* its only callers gather by AVX-512 permutes */
static int small_plane_gather_applies(const conv_geometry *g)
{
    return g->sh == 1 && g->sw == 1 && g->H * g->W <= AN_SMALL_PLANE_MAX_FLOATS &&
           g->OH * g->OW <= AN_SMALL_PLANE_MAX_FLOATS &&
           g->kh * g->kw <= AN_SMALL_PLANE_MAX_TAPS && !pointwise_accepts(g) &&
           an_cpu_info_get()->isa == AN_ISA_AVX512;
}
#endif

/* dx[n0+i, grp channels] += col2im(col) of a tile: one (image, channel)
   plane per iteration, so no two threads add into the same plane; bands
   overlapping in input rows are added one after the other.  At 1x1 each
   element of dx has one column: it is written (dx is not zeroed first). */
static void col2im_tile(const conv_geometry *g, const float *col, int64_t n0, int64_t nb,
                        int64_t oh0, int64_t rows, int64_t grp, float *dx)
{
    int64_t cg = g->C / g->groups, HW = g->H * g->W, cols = rows * g->OW;
    int64_t kk = g->kh * g->kw, ld = nb * cols, pairs = nb * cg;
    if (pointwise_accepts(g)) {
#pragma omp parallel for schedule(static) if (pairs * cols > AN_PARALLEL_GRAIN)
        for (int64_t p = 0; p < pairs; p++) {
            int64_t i = p / cg, c = p % cg;
            const float *from = col + c * ld + i * cols;
            float *to = dx + ((n0 + i) * g->C + grp * cg + c) * HW + oh0 * g->W;
            memcpy(to, from, sizeof(float) * (size_t)cols);
        }
        return;
    }
#ifdef AN_HAVE_STRIDE2_AVX512
    /* stride 2 with rows of up to 16 outputs: a row of dx at a time in
       registers (an_col2im_add_stride2_avx512, the same bits).  Forward and
       backward, 2 threads, batch 32, in one process alternating with the
       scalar loop (Zen 5): ResNet-20's 16 -> 32 0.89x the time, 32 -> 64
       0.95x, ResNet-18's 64 -> 128 0.95x, 128 -> 256 and 256 -> 512 0.98x,
       its 1x1/2 shortcut 0.96x, EfficientNet's stem 0.89x. */
    const int stride2_rows = stride2_gather_applies(g);
    an_col2im_stride2_plan plan;
    if (stride2_rows)
        an_col2im_stride2_plan_init(&plan, g->W, g->kw, g->pw, g->OW);
#endif
#pragma omp parallel for schedule(static) if (pairs * kk * cols > AN_PARALLEL_GRAIN)
    for (int64_t p = 0; p < pairs; p++) {
        int64_t i = p / cg, c = p % cg;
#ifdef AN_HAVE_STRIDE2_AVX512
        if (stride2_rows) {
            an_col2im_add_stride2_avx512(&plan, col + c * kk * ld + i * cols, ld, g->H, g->W, g->kh, g->kw,
                                         g->ph - oh0 * 2, g->pw, rows, g->OW,
                                         dx + ((n0 + i) * g->C + grp * cg + c) * HW);
            continue;
        }
#endif
        an_col2im_add_ld_f32(col + c * kk * ld + i * cols, ld, 1, g->H, g->W, g->kh, g->kw, g->sh,
                             g->sw, g->ph - oh0 * g->sh, g->pw, g->dh, g->dw, rows, g->OW,
                             dx + ((n0 + i) * g->C + grp * cg + c) * HW);
    }
}

/* Moves between the multi-image layout [og, nb*OHW] and the tensor layout
   y[n0+i, grp*og + o, :].  to_tensor: y = chunk (+ bias[co]); otherwise
   chunk = y (gathering dy for the backward GEMMs).
   The store goes through blocks of EXCHANGE_BLOCK_ROWS rows of the chunk,
   image by image: 8 read streams moving forward, and each image's 8 rows
   written as one run.  Row by row (all rows of one image, then the next)
   read each row's OHW floats nb * OHW floats away from the last, lines the
   prefetchers did not follow out of a chunk larger than L2.  Batch 32, in
   one process alternating with that order (Zen 3): MobileNetV2's last 1x1
   (320 -> 1280 on 4x4) forward 0.75x the time on one thread and 0.83x on
   two, ResNet-101's 512 -> 2048 0.88x / 0.91x; layers with small outputs
   (960 -> 160) unchanged; blocks of 4, 16 and 32 rows no better.  The
   gather, in blocks too, measured 1.00-1.06x: it keeps the row order. */
#define EXCHANGE_BLOCK_ROWS 8
static void exchange_chunk(const conv_geometry *g, int64_t n0, int64_t nb, int64_t grp,
                           float *chunk, float *y, const float *bias, int to_tensor)
{
    int64_t og = g->Cout / g->groups, OHW = g->OH * g->OW, ld = nb * OHW, rows = nb * og;
    if (!to_tensor) {
#pragma omp parallel for schedule(static) if (rows * OHW > AN_PARALLEL_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            int64_t i = r / og, o = r % og;
            memcpy(chunk + o * ld + i * OHW, y + ((n0 + i) * g->Cout + grp * og + o) * OHW,
                   (size_t)OHW * sizeof(float));
        }
        return;
    }
    const int64_t blocks = (og + EXCHANGE_BLOCK_ROWS - 1) / EXCHANGE_BLOCK_ROWS;
#pragma omp parallel for schedule(static) if (rows * OHW > AN_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t o0 = b * EXCHANGE_BLOCK_ROWS;
        const int64_t o1 = o0 + EXCHANGE_BLOCK_ROWS < og ? o0 + EXCHANGE_BLOCK_ROWS : og;
        for (int64_t i = 0; i < nb; i++)
            for (int64_t o = o0; o < o1; o++) {
                const int64_t co = grp * og + o;
                store_run(y + ((n0 + i) * g->Cout + co) * OHW, chunk + o * ld + i * OHW, OHW,
                          bias ? bias + co : NULL, g->act);
            }
    }
}

/* Floats of one tile's workspace: the column tile, plus the GEMM output
   (forward) or the gathered dy (backward) when tiles span several images. */
static int64_t tile_workspace_floats(const conv_geometry *g, const conv_tiling *t)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t cols = t->images * t->rows * g->OW;
    int64_t floats = ckk * cols + (t->images > 1 ? og * cols : 0);
    return floats > 0 ? (floats + 15) / 16 * 16 : 16; /* whole cache lines per thread */
}

/* Threads that work on whole image units at once: each unit (a tile of
   images, or one image and all its bands) is computed exactly as it would
   be alone, only which thread runs it changes, so this does not change a
   result.  Worth it with enough units: one parallel region per call instead
   of a few per tile, and on small layers (16 to 64 channels) the GEMM alone
   splits poorly. */
static int unit_threads(int64_t units)
{
    const int threads = team_size();
    return threads > 1 && units >= 2 * threads ? threads : 1;
}





/* y = W_g @ im2col(tile) with the column matrix packed on the fly by
   `pack` from `src`. */
static an_status gemm_packed_or_fail(int64_t M, int64_t N, int64_t K, const float *w,
                                     an_gemm_pack_b_fn pack, const void *src, float beta, float *y,
                                     int64_t ldy)
{
    if (an_gemm_f32_pack_b(0, M, N, K, 1.0f, w, K, pack, src, beta, y, ldy) != 0)
        return an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
    return AN_OK;
}

/* A tile of whole small images with stride 1: the images are zero-padded
   once into the (otherwise unused) column workspace, and the GEMM's B panels
   are gathered from there by plain copies, one run of an output row per tap
   and no bounds logic (pack_im2col_panel re-derived each run's valid range
   per tap: on 8x8 planes its runs are 8 long, and packing cost as much as
   the GEMM). */
/* offsets[k] = where tap k = (c, ki, kj) starts in a zero-padded image of
   planes `plane` floats and rows `Wp` floats: every stride-1 path that reads
   the padded image addresses it through this table. */
static void tap_offsets(const conv_geometry *g, int64_t plane, int64_t Wp, int64_t *offsets)
{
    int64_t ckk = g->C / g->groups * g->kh * g->kw;
    for (int64_t k = 0; k < ckk; k++) {
        int64_t c = k / (g->kh * g->kw), ki = k / g->kw % g->kh, kj = k % g->kw;
        offsets[k] = c * plane + ki * g->dh * Wp + kj * g->dw;
    }
}

/* How the stride-1 paths lay out a zero-padded image (see implicit_gemm). */
typedef struct {
    int64_t Hp, Wp, rows; /* padded plane; output rows per band */
    int64_t Hq, Wq;       /* one stride phase of it (Hp, Wp at stride 1) */
    int64_t pad_floats;   /* one padded image of a group, with read slack */
    int64_t band_floats;  /* one band of GEMM output, og x rows*Wp */
} implicit_plan;

static implicit_plan plan_implicit(const conv_geometry *g);
static void pad_image(const conv_geometry *g, const implicit_plan *pl, const float *x, int64_t cg,
                      float *padded);
static void pad_phases(const conv_geometry *g, const implicit_plan *pl, const float *x, int64_t cg,
                       float *phases);
static void phase_offsets(const conv_geometry *g, const implicit_plan *pl, int64_t *offsets);

/* A tile of nb whole images, group grp, zero-padded into the column
   workspace `col`, image i at col + i * pl->pad_floats, with the tap offsets
   table after them; a strided layer's images split into their stride phases
   (pad_phases), so every tap is again a run of pl->Wq-wide rows.  Returns
   the table, or NULL when this path does not apply (one image per tile, or
   the copies do not fit).  Strided small planes took this in the tenth
   round: ResNet-20's 32 -> 64 stride-2 layer on 16x16 spent 46% of its
   forward in pack_im2col_panel's bounds-checked gathers. */
static const int64_t *pad_tile(const conv_geometry *g, const conv_tiling *t, const float *x,
                               int64_t n0, int64_t nb, int64_t grp, float *col, implicit_plan *pl)
{
    int64_t cg = g->C / g->groups, ckk = cg * g->kh * g->kw;
    if (t->images <= 1)
        return NULL;
    *pl = plan_implicit(g);
    if (nb * pl->pad_floats + 2 * ckk > ckk * t->images * t->rows * g->OW)
        return NULL;
    int64_t *offsets = (int64_t *)(col + nb * pl->pad_floats);
    const int strided = g->sh != 1 || g->sw != 1;
    if (strided)
        phase_offsets(g, pl, offsets);
    else
        tap_offsets(g, pl->Hp * pl->Wp, pl->Wp, offsets);
    /* image by image over the threads, where the tile's GEMM is the one
       threaded (a weight gradient's tiles run one after another): on one
       thread, 16 images of 512 channels kept the other waiting (inside a
       unit of unit_threads, team_size() is 1: no nested region) */
#pragma omp parallel for schedule(static) if (nb * pl->pad_floats > AN_PARALLEL_GRAIN && team_size() > 1)
    for (int64_t i = 0; i < nb; i++) {
        const float *image = x + ((n0 + i) * g->C + grp * cg) * g->H * g->W;
        if (strided)
            pad_phases(g, pl, image, cg, col + i * pl->pad_floats);
        else
            pad_image(g, pl, image, cg, col + i * pl->pad_floats);
    }
    return offsets;
}
typedef struct {
    const conv_geometry *g;
    const float *padded;    /* image i at padded + i * image_floats */
    int64_t image_floats;
    int64_t Wp;             /* a padded row (a stride phase's row when strided) */
    const int64_t *offsets; /* tap -> offset in a padded image */
} padded_tile_source;

/* rows [0, kc) of `run` floats, row k from base + offsets[k] (an element
   loop: a constant run becomes vector moves, any other stays inline, where
   a memcpy call per run of a few floats cost more than the copy) */
static inline __attribute__((always_inline)) void copy_tap_runs(const float *base,
                                                                const int64_t *offsets, int64_t kc,
                                                                float *restrict to, int width,
                                                                int64_t run)
{
    for (int64_t k = 0; k < kc; k++) {
        const float *restrict from = base + offsets[k];
        for (int64_t t = 0; t < run; t++)
            to[k * width + t] = from[t];
    }
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void pack_padded_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                              int64_t cols, int width, float *panel)
{
    const padded_tile_source *src = source;
    const int64_t OW = src->g->OW, OHW = src->g->OH * OW;
    for (int64_t j = 0; j < cols;) {
        const int64_t col = j0 + j, image = col / OHW, rem = col % OHW;
        const int64_t oh = rem / OW, ow0 = rem % OW;
        const int64_t run = OW - ow0 < cols - j ? OW - ow0 : cols - j;
        const float *base = src->padded + image * src->image_floats + oh * src->Wp + ow0;
        /* constant widths become vector moves: the runs are output rows, 8
           or 16 floats on the 8x8 and 16x16 planes of strided layers */
        if (run == 16) {
            copy_tap_runs(base, src->offsets + k0, kc, panel + j, width, 16);
        } else if (run == 8) {
            copy_tap_runs(base, src->offsets + k0, kc, panel + j, width, 8);
        } else if (run == 4) {
            copy_tap_runs(base, src->offsets + k0, kc, panel + j, width, 4);
        } else {
            copy_tap_runs(base, src->offsets + k0, kc, panel + j, width, run);
        }
        j += run;
    }
    zero_panel_columns(panel, kc, cols, width);
}

/* B of a 1x1 tile of whole images, read straight from x: column j is pixel
   j % OHW of image j / OHW, row k its channel k, so a run of columns inside
   one image is a run of its plane.  The general path copied each image
   into the column workspace first (its "padding" is none at 1x1) and then
   gathered runs of one output row (4 floats on a 4x4 plane).  Batch 32, in
   one process alternating with that path (Zen 3): MobileNetV2's 960 -> 160
   on 4x4 0.67x the time on one thread and 0.75x on two, ShuffleNetV2's 232
   0.74x / 0.75x, EfficientNet's 240 -> 40 0.38x / 0.40x, 1024 -> 1024 on
   2x2 0.88x; 320 -> 1280 and 512 -> 2048 (the GEMM's time) 0.96-0.99x.
   The same panels, so the same sums. */
typedef struct {
    const float *x;       /* image n0, first channel of the group */
    int64_t image_floats; /* C * OHW: one image of x */
    int64_t plane;        /* OHW */
} pointwise_source;

/* rows [0, kc) of `run` floats, from rows `stride` floats apart */
static inline __attribute__((always_inline)) void copy_runs(const float *restrict from,
                                                            int64_t stride, int64_t kc,
                                                            float *restrict to, int width,
                                                            int64_t run)
{
    for (int64_t k = 0; k < kc; k++)
        memcpy(to + k * width, from + k * stride, sizeof(float) * (size_t)run);
}

static void pack_pointwise_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                 int64_t cols, int width, float *panel)
{
    const pointwise_source *src = source;
    const int64_t plane = src->plane;
    for (int64_t j = 0; j < cols;) {
        const int64_t col = j0 + j, image = col / plane, rem = col % plane;
        const int64_t run = plane - rem < cols - j ? plane - rem : cols - j;
        const float *from = src->x + image * src->image_floats + k0 * plane + rem;
        /* constant widths become vector moves (a memcpy call per run cost
           more than the copy) */
        if (run == 16)
            copy_runs(from, plane, kc, panel + j, width, 16);
        else if (run == 8)
            copy_runs(from, plane, kc, panel + j, width, 8);
        else if (run == 4)
            copy_runs(from, plane, kc, panel + j, width, 4);
        else
            copy_runs(from, plane, kc, panel + j, width, run);
        j += run;
    }
    zero_panel_columns(panel, kc, cols, width);
}

/* B of a weight gradient, op(B)(k, t): what tap t reads for output k of a
   tile of padded images (see implicit_weight_grad). */
typedef struct {
    const conv_geometry *g;
    int64_t Wp;             /* a padded row (a stride phase's row when strided) */
    const float *padded;    /* padded image i of one group at padded + i * image_floats */
    const int64_t *offsets; /* tap -> offset in a padded image */
    int64_t image_floats;
} taps_source;
static void pack_taps_panel(const void *source, int64_t k0, int64_t kc, int64_t j0, int64_t cols,
                            int width, float *panel);
static void pack_pointwise_taps_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                      int64_t cols, int width, float *panel);
static void pack_rows_transposed(const float *const *rows, int64_t count, int64_t kc, int width,
                                 float *panel);

#ifdef AN_HAVE_STRIDE2_AVX512
/* The stride-2 gather's view of output rows [oh0, oh0+rows) of the tile's
   images, x at image n0's first channel of the group. */
static an_stride2_panel_source stride2_source(const conv_geometry *g, const float *x, int64_t oh0,
                                              int64_t rows)
{
    const an_stride2_panel_source s2 = {x,     g->C * g->H * g->W, g->H,  g->W, g->kh, g->kw,
                                        g->ph, g->pw,              g->OW, oh0,  rows};
    return s2;
}

static void pack_stride2_panel(const void *source, int64_t k0, int64_t kc, int64_t j0, int64_t cols,
                               int width, float *panel)
{
    an_im2col_stride2_panel_avx512(source, k0, kc, j0, cols, width, panel);
}

/* Outputs gathered per panel of the weight gradient's B, then transposed. */
#define STRIDE2_TAPS_CHUNK 64

/* B of a stride-2 weight gradient, op(B)(k, t) = what tap t reads for
   output k: the forward's gather, taps as rows and a chunk of outputs as
   columns, into a block in L1, then transposed into the panel.  The
   weight gradient copied the images into their stride phases first
   (pad_tile) and gathered the taps from there, or wrote the im2col matrix
   out for large planes.  Forward and backward, 2 threads, batch 32, in
   one process alternating with those (Zen 5): ResNet-20's 32 -> 64 0.91x
   the time (0.91x at batch 128, 0.94x on one thread), 16 -> 32 0.97x,
   ResNet-18's 1x1/2 shortcut 0.92x, 64 -> 128 0.99x, 256 -> 512 0.98x,
   128 -> 256 1.00x; at batch 1 0.84-0.92x.  The same values, so the same
   sums. */
static inline __attribute__((always_inline)) void
gathered_taps_panel(an_gemm_pack_b_fn gather, const void *source, int64_t k0, int64_t kc,
                    int64_t j0, int64_t cols, int width, float *panel)
{
    _Alignas(64) float block[AN_GEMM_MAX_NR * STRIDE2_TAPS_CHUNK];
    const float *rows[AN_GEMM_MAX_NR];
    for (int64_t t = 0; t < cols; t++)
        rows[t] = block + t * STRIDE2_TAPS_CHUNK;
    for (int64_t o = 0; o < kc; o += STRIDE2_TAPS_CHUNK) {
        const int64_t n = kc - o < STRIDE2_TAPS_CHUNK ? kc - o : STRIDE2_TAPS_CHUNK;
        gather(source, j0, cols, k0 + o, n, STRIDE2_TAPS_CHUNK, block);
        pack_rows_transposed(rows, cols, n, width, panel + o * width);
    }
}

static void pack_stride2_taps_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                    int64_t cols, int width, float *panel)
{
    gathered_taps_panel(pack_stride2_panel, source, k0, kc, j0, cols, width, panel);
}

/* The small-plane gather's view of the tile's images (x at image n0's
   first channel of the group). */
static void small_plane_source(const conv_geometry *g, const float *x, an_small_plane_source *sp)
{
    an_small_plane_source_init(sp, x, g->C * g->H * g->W, g->H, g->W, g->OH, g->OW, g->kh, g->kw,
                               g->ph, g->pw, g->dh, g->dw);
}

static void pack_small_plane_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                   int64_t cols, int width, float *panel)
{
    an_im2col_small_plane_panel_avx512(source, k0, kc, j0, cols, width, panel);
}

/* A small-plane weight gradient's B, as the stride-2 one: the forward's
   gather, then transposed. */
static void pack_small_plane_taps_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                        int64_t cols, int width, float *panel)
{
    gathered_taps_panel(pack_small_plane_panel, source, k0, kc, j0, cols, width, panel);
}
#endif

/* y of images [n0, n0+nb) (one tile of images, or one image band by band). */
static an_status forward_unit(const conv_geometry *g, const conv_tiling *t, const float *x,
                              const float *w, const float *bias, float *y, int64_t n0, int64_t nb,
                              float *col)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW;
    float *out = col + ckk * t->images * t->rows * g->OW;
    an_status st = AN_OK;
    for (int64_t oh0 = 0; oh0 < g->OH && !st; oh0 += t->rows) {
        int64_t rows = g->OH - oh0 < t->rows ? g->OH - oh0 : t->rows, cols = nb * rows * g->OW;
        for (int64_t grp = 0; grp < g->groups && !st; grp++) {
            const float *wg = w + grp * og * ckk;
            if (t->images == 1 && pointwise_accepts(g)) { /* x band read in place */
                float *yb = y + (n0 * g->Cout + grp * og) * OHW + oh0 * g->OW;
                /* bias and activation applied to each tile as the GEMM
                   finishes it (at batch 1 the pass over y cost a third of a
                   1x1 layer with K = 16-32) */
                const float *res = g->residual
                                       ? g->residual + (n0 * g->Cout + grp * og) * OHW + oh0 * g->OW
                                       : NULL;
                if (an_gemm_f32_epilogue_prepacked(og, cols, ckk, wg, ckk, g->packed_weight,
                                                   x + (n0 * g->C + grp * cg) * OHW + oh0 * g->OW,
                                                   OHW, yb, OHW, bias ? bias + grp * og : NULL, res,
                                                   OHW, gemm_act(g->act)) != 0)
                    st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace");
                continue;
            }
            if (t->images > 1 && pointwise_accepts(g)) {
                pointwise_source psrc = {x + (n0 * g->C + grp * cg) * OHW, g->C * OHW, OHW};
                if (an_gemm_f32_pack_b(0, og, cols, ckk, 1.0f, wg, ckk, pack_pointwise_panel, &psrc,
                                       0.0f, out, cols) != 0)
                    st = an_set_error(AN_ERR_MEMORY,
                                      "conv2d: out of memory for the GEMM packing workspace");
                if (!st)
                    exchange_chunk(g, n0, nb, grp, out, y, bias, 1);
                continue;
            }
            /* the column matrix packed straight from x: by the stride-2
               gather where it applies, else by the bounds-checked gather
               unless the tile's images are padded first (pad_tile) */
            im2col_source src = {g, x + (n0 * g->C + grp * cg) * g->H * g->W, oh0, rows};
            an_gemm_pack_b_fn pack = pack_im2col_panel;
            const void *source = &src;
#ifdef AN_HAVE_STRIDE2_AVX512
            const an_stride2_panel_source s2 = stride2_source(g, src.x, oh0, rows);
            an_small_plane_source sp;
            if (stride2_gather_applies(g)) {
                pack = pack_stride2_panel;
                source = &s2;
            } else if (small_plane_gather_applies(g)) {
                small_plane_source(g, src.x, &sp);
                pack = pack_small_plane_panel;
                source = &sp;
            }
#endif
            implicit_plan pl;
            const int64_t *offsets =
                pack == pack_im2col_panel ? pad_tile(g, t, x, n0, nb, grp, col, &pl) : NULL;
            if (offsets) {
                padded_tile_source psrc = {g, col, pl.pad_floats, pl.Wq, offsets};
                if (an_gemm_f32_pack_b(0, og, cols, ckk, 1.0f, wg, ckk, pack_padded_panel, &psrc, 0.0f,
                                       out, cols) != 0)
                    st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
                if (!st)
                    exchange_chunk(g, n0, nb, grp, out, y, bias, 1);
                continue;
            }
            if (t->images == 1) { /* in place; bias and activation after */
                float *yb = y + (n0 * g->Cout + grp * og) * OHW + oh0 * g->OW;
                st = gemm_packed_or_fail(og, cols, ckk, wg, pack, source, 0.0f, yb, OHW);
                if (!st)
                    finish_planes(yb, og, OHW, cols, bias ? bias + grp * og : NULL, g->act);
            } else {
                st = gemm_packed_or_fail(og, cols, ckk, wg, pack, source, 0.0f, out, cols);
                if (!st)
                    exchange_chunk(g, n0, nb, grp, out, y, bias, 1);
            }
        }
    }
    if (!st)
        images_moments(g, y, n0, nb);
    return st;
}

static an_status im2col_gemm_forward(const conv_geometry *g, const float *x, const float *w,
                                     const float *bias, float *y)
{
    conv_tiling t = plan_tiles(g);
    int64_t units = (g->N + t.images - 1) / t.images;
    int threads = unit_threads(units);
    int64_t per_thread = tile_workspace_floats(g, &t);
    float *work = an_alloc(sizeof(float) * (size_t)(per_thread * threads));
    if (!work)
        return an_last_status();
    an_status st = AN_OK;
    if (threads == 1) {
        for (int64_t n0 = 0; n0 < g->N && !st; n0 += t.images)
            st = forward_unit(g, &t, x, w, bias, y, n0, g->N - n0 < t.images ? g->N - n0 : t.images,
                              work);
    } else {
        int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
        for (int64_t u = 0; u < units; u++) {
            int64_t n0 = u * t.images, nb = g->N - n0 < t.images ? g->N - n0 : t.images;
            failed |= forward_unit(g, &t, x, w, bias, y, n0, nb,
                                   work + thread_index() * per_thread) != AN_OK;
        }
        if (failed)
            st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
    }
    an_free(work);
    if (!st)
        moments_filled(g);
    return st;
}

/* dW_g += dyc @ (taps of the tile) with the taps gathered into the GEMM's
   panels, never written out as an im2col matrix: on AVX-512 a stride-2
   layer's straight from x (pack_stride2_taps_panel); else, for stride-1
   tiles of whole images whose padded copies fit the workspace, from the
   images zero-padded into the column workspace (register transposes), as
   implicit_weight_grad does for large planes.  Returns 0 (nothing done)
   when neither applies. */
static int gathered_tile_weight_grad(const conv_geometry *g, const conv_tiling *t, const float *x,
                                     int64_t n0, int64_t nb, int64_t oh0, int64_t rows, int64_t grp,
                                     const float *dyc, int64_t ld_dy, float *dw_g, float *col,
                                     an_status *st)
{
    int64_t og = g->Cout / g->groups, cg = g->C / g->groups, ckk = cg * g->kh * g->kw;
    an_gemm_pack_b_fn pack = pack_taps_panel;
    const void *source;
    taps_source src;
#ifdef AN_HAVE_STRIDE2_AVX512
    const float *tile_x = x + (n0 * g->C + grp * cg) * g->H * g->W;
    const an_stride2_panel_source s2 = stride2_source(g, tile_x, oh0, rows);
    an_small_plane_source sp;
    if (stride2_gather_applies(g)) {
        pack = pack_stride2_taps_panel;
        source = &s2;
    } else if (small_plane_gather_applies(g)) {
        small_plane_source(g, tile_x, &sp);
        pack = pack_small_plane_taps_panel;
        source = &sp;
    }
#endif
    if (pack == pack_taps_panel) {
        implicit_plan pl;
        const int64_t *offsets = pad_tile(g, t, x, n0, nb, grp, col, &pl);
        if (!offsets)
            return 0;
        src = (taps_source){g, pl.Wq, col, offsets, pl.pad_floats};
        source = &src;
    }
    if (an_gemm_f32_pack_b(0, og, ckk, nb * rows * g->OW, 1.0f, dyc, ld_dy, pack, source, 1.0f, dw_g,
                           ckk) != 0)
        *st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
    return 1;
}

/* Gradients of images [n0, n0+nb), with dyc = dy of a tile as [og, cols]:
     dw_g += dyc @ col^T          (tiles in order: a fixed sum order)
     col   = W_g^T @ dyc, folded back onto dx by col2im. */
static an_status backward_unit(const conv_geometry *g, const conv_tiling *t, const conv_grads *gr,
                               float *dw, int64_t n0, int64_t nb, float *col)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW;
    float *dy_chunk = col + ckk * t->images * t->rows * g->OW;
    an_status st = AN_OK;
    for (int64_t oh0 = 0; oh0 < g->OH && !st; oh0 += t->rows) {
        int64_t rows = g->OH - oh0 < t->rows ? g->OH - oh0 : t->rows, cols = nb * rows * g->OW;
        for (int64_t grp = 0; grp < g->groups && !st; grp++) {
            /* one image: dy of the band is a submatrix of row stride OHW */
            const float *dyc = gr->dy + (n0 * g->Cout + grp * og) * OHW + oh0 * g->OW;
            int64_t ld_dy = OHW;
            if (t->images > 1) {
                exchange_chunk(g, n0, nb, grp, dy_chunk, (float *)gr->dy, NULL, 0);
                dyc = dy_chunk;
                ld_dy = cols;
            }
            const float *wg = gr->w + grp * og * ckk;
            if (t->images == 1 && pointwise_accepts(g)) {
                /* x and dx bands in place (1x1: the planes are the same);
                   1x1 bands do not overlap, so each writes its part of dx
                   whole (beta 0) and dx is not zeroed first */
                int64_t offset = (n0 * g->C + grp * cg) * OHW + oh0 * g->OW;
                if (dw)
                    st = gemm_or_fail(0, 1, og, ckk, cols, dyc, ld_dy, gr->x + offset, OHW, 1.0f,
                                      dw + grp * og * ckk, ckk);
                if (!st && gr->dx)
                    st = gemm_or_fail(1, 0, ckk, cols, og, wg, ckk, dyc, ld_dy, 0.0f,
                                      gr->dx + offset, OHW);
                continue;
            }
            if (pointwise_accepts(g)) { /* several images per tile: x read in place */
                if (dw) {
                    pointwise_source src = {gr->x + (n0 * g->C + grp * cg) * OHW, g->C * OHW, OHW};
                    if (an_gemm_f32_pack_b(0, og, ckk, cols, 1.0f, dyc, ld_dy,
                                           pack_pointwise_taps_panel, &src, 1.0f,
                                           dw + grp * og * ckk, ckk) != 0)
                        st = an_set_error(AN_ERR_MEMORY,
                                          "conv2d: out of memory for the GEMM packing workspace");
                }
                if (!st && gr->dx) {
                    st = gemm_or_fail(1, 0, ckk, cols, og, wg, ckk, dyc, ld_dy, 0.0f, col, cols);
                    if (!st)
                        col2im_tile(g, col, n0, nb, oh0, rows, grp, gr->dx);
                }
                continue;
            }
            if (dw && !gathered_tile_weight_grad(g, t, gr->x, n0, nb, oh0, rows, grp, dyc, ld_dy,
                                                dw + grp * og * ckk, col, &st)) {
                im2col_tile(g, gr->x, n0, nb, oh0, rows, grp, col);
                st = gemm_or_fail(0, 1, og, ckk, cols, dyc, ld_dy, col, cols, 1.0f,
                                  dw + grp * og * ckk, ckk);
            }
            if (!st && gr->dx) {
                st = gemm_or_fail(1, 0, ckk, cols, og, wg, ckk, dyc, ld_dy, 0.0f, col, cols);
                if (!st)
                    col2im_tile(g, col, n0, nb, oh0, rows, grp, gr->dx);
            }
        }
    }
    return st;
}

/* The weight gradient is summed over image units in CONV_DW_PARTS fixed
   parts (each part's units in order, then the parts in order), a split
   that depends on the shape only, so the parts can run on different threads
   and results still do not depend on the thread count.  Only when the
   partial sums are small; large layers run one part with the GEMM itself
   threaded.  16 parts keep 16 threads busy; with 4 parts, 8 or more
   threads ran the parts one after another with every GEMM and im2col
   inside forking the whole team for a sliver of work: a ResNet-20 step at
   8 threads took 4x longer than at 4 (measured on a 16-core machine). */
#define CONV_DW_PARTS 16
#define CONV_DW_PARTIAL_FLOATS (1 << 20)     /* 4 MB per partial */
#define CONV_DW_ALL_PARTIALS_FLOATS (1 << 22) /* 16 MB for all of them */

/* dw[i] += the parts' partial sums, in part order (a fixed order). */
static void add_partials(float *dw, const float *partials, int64_t parts, int64_t partial_floats,
                         int64_t wsize)
{
#pragma omp parallel for schedule(static) if (wsize * parts > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < wsize; i++) {
        float total = dw[i];
        for (int64_t p = 0; p < parts; p++)
            total += partials[p * partial_floats + i];
        dw[i] = total;
    }
}

static an_status tiled_backward(const conv_geometry *g, const conv_grads *gr);
static int flipped_data_grad_applies(const conv_geometry *g);
static an_status flipped_data_grad(const conv_geometry *g, const float *dy, const float *w,
                                   float *dx);

static int implicit_accepts(const conv_geometry *g);
static an_status implicit_weight_grad(const conv_geometry *g, const float *dy, const float *x,
                                      float *dw);

/* dx by the flipped-kernel convolution where it applies, dW from the padded
   image where implicit_gemm applies, whatever remains by im2col tiles. */
static an_status im2col_gemm_backward(const conv_geometry *g, const conv_grads *gr)
{
    int flip = gr->dx && flipped_data_grad_applies(g);
    int padded_dw = gr->dw && implicit_accepts(g);
    if (!flip && !padded_dw)
        return tiled_backward(g, gr);
    an_status st = AN_OK;
    conv_grads rest = *gr;
    if (flip) {
        st = flipped_data_grad(g, gr->dy, gr->w, gr->dx);
        rest.dx = NULL;
    }
    if (!st && padded_dw) {
        st = implicit_weight_grad(g, gr->dy, gr->x, gr->dw);
        rest.dw = NULL;
    }
    if (!st && (rest.dx || rest.dw))
        st = tiled_backward(g, &rest);
    return st;
}

static an_status tiled_backward(const conv_geometry *g, const conv_grads *gr)
{
    conv_tiling t = plan_tiles(g);
    int64_t units = (g->N + t.images - 1) / t.images;
    int64_t wsize = g->Cout * (g->C / g->groups) * g->kh * g->kw;
    int64_t parts = units < CONV_DW_PARTS ? units : CONV_DW_PARTS;
    if (parts * wsize > CONV_DW_ALL_PARTIALS_FLOATS)
        parts = wsize > 0 ? CONV_DW_ALL_PARTIALS_FLOATS / wsize : 1;
    if (wsize > CONV_DW_PARTIAL_FLOATS || parts < 1)
        parts = 1;
    if (!gr->dw) /* no sums across units at all */
        parts = units;
    /* each part holds several units: one thread per part at most */
    int threads = parts >= 2 ? team_size() : 1;
    if (threads > parts)
        threads = (int)parts;
    int64_t per_thread = tile_workspace_floats(g, &t);
    int64_t partial_floats = gr->dw && parts > 1 ? (wsize + 15) / 16 * 16 : 0;
    float *work = an_alloc(sizeof(float) *
                           (size_t)(per_thread * threads + partial_floats * (parts > 1 ? parts : 0) + 1));
    if (!work)
        return an_last_status();
    float *partials = work + per_thread * threads;
    an_status st = AN_OK;
    if (parts <= 1) {
        for (int64_t n0 = 0; n0 < g->N && !st; n0 += t.images)
            st = backward_unit(g, &t, gr, gr->dw, n0, g->N - n0 < t.images ? g->N - n0 : t.images,
                               work);
    } else {
        if (partial_floats)
            memset(partials, 0, sizeof(float) * (size_t)(partial_floats * parts));
        int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed) if (threads > 1)
        for (int64_t p = 0; p < parts; p++) {
            float *col = work + thread_index() * per_thread;
            float *dw = partial_floats ? partials + p * partial_floats : NULL;
            for (int64_t u = units * p / parts; u < units * (p + 1) / parts && !failed; u++) {
                int64_t n0 = u * t.images, nb = g->N - n0 < t.images ? g->N - n0 : t.images;
                failed |= backward_unit(g, &t, gr, dw, n0, nb, col) != AN_OK;
            }
        }
        if (failed)
            st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
        if (!st && partial_floats)
            add_partials(gr->dw, partials, parts, partial_floats, wsize);
    }
    an_free(work);
    return st;
}

/* ------------------------------------------------------- implicit_gemm */

/* A stride-1 convolution read in place.  With the image zero-padded to
   [cg, Hp, Wp], the tap (c, ki, kj) of output (oh, ow) is element
   c*Hp*Wp + ki*dh*Wp + kj*dw + (oh*Wp + ow) of the padded image: over a band
   of output rows, each row of the column matrix is ONE contiguous run of the
   padded image, shifted by the tap's offset.  So the GEMM's micro-kernel
   reads B straight from the padded image (an_gemm_f32_rows_b): no im2col,
   no packing of B.  It computes Wp - OW junk columns per output row (the
   positions straddling the padding; 6% at 32x32, 12% at 16x16), which are
   dropped when the band is copied into y.  Small planes keep im2col_gemm,
   which batches whole images into one GEMM instead. */
#define IMPLICIT_MIN_PLANE 256
#define IMPLICIT_STRIDED_MIN_PLANE 256
#define IMPLICIT_BAND_COLUMNS 2048
#define IMPLICIT_MIN_BANDS 4

static int implicit_accepts(const conv_geometry *g)
{
    return g->sh == 1 && g->sw == 1 && !pointwise_accepts(g) && g->OH * g->OW >= IMPLICIT_MIN_PLANE;
}

/* Strided layers on large planes read their stride phases in place
   (pad_phases), unless their panels are gathered from x (see
   stride2_gather_applies); their backward stays with the im2col tiles. */
static int implicit_strided_accepts(const conv_geometry *g)
{
    return (g->sh > 1 || g->sw > 1) && g->OH * g->OW >= IMPLICIT_STRIDED_MIN_PLANE &&
           !stride2_gather_applies(g);
}

static implicit_plan plan_implicit(const conv_geometry *g)
{
    implicit_plan pl;
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups;
    pl.Hp = g->H + 2 * g->ph;
    pl.Wp = g->W + 2 * g->pw;
    pl.Hq = (pl.Hp + g->sh - 1) / g->sh;
    pl.Wq = (pl.Wp + g->sw - 1) / g->sw;
    pl.rows = IMPLICIT_BAND_COLUMNS / pl.Wq;
    /* a batch too small to share out by images is shared out by bands:
       at least IMPLICIT_MIN_BANDS of them (a band's sums do not depend on
       how many columns its GEMM has, so neither do the results) */
    if (g->N < IMPLICIT_MIN_BANDS && pl.rows > (g->OH + IMPLICIT_MIN_BANDS - 1) / IMPLICIT_MIN_BANDS)
        pl.rows = (g->OH + IMPLICIT_MIN_BANDS - 1) / IMPLICIT_MIN_BANDS;
    if (pl.rows < 1)
        pl.rows = 1;
    pl.rows = balanced_piece(g->OH, pl.rows);
    /* the micro-kernel reads up to AN_GEMM_MAX_NR - 1 floats past a run */
    pl.pad_floats = (cg * g->sh * g->sw * pl.Hq * pl.Wq + AN_GEMM_MAX_NR + 15) / 16 * 16;
    pl.band_floats = (og * pl.rows * pl.Wq + 15) / 16 * 16;
    return pl;
}

/* padded[c] = x[c] with ph rows and pw columns of zeros around it. */
/* Rows are written whole by inline loops: memcpy and two memset calls per
   row of 8 to 32 floats were 5 million library calls per ResNet-20 step. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void pad_image(const conv_geometry *g, const implicit_plan *pl, const float *x, int64_t cg,
                      float *padded)
{
    const int64_t H = g->H, W = g->W, ph = g->ph, pw = g->pw, Hp = pl->Hp, Wp = pl->Wp;
    const int64_t HW = H * W, plane = Hp * Wp;
    for (int64_t c = 0; c < cg; c++) {
        float *restrict to = padded + c * plane;
        const float *restrict from = x + c * HW;
        for (int64_t i = 0; i < ph * Wp; i++)
            to[i] = 0.0f;
        for (int64_t h = 0; h < H; h++) {
            float *restrict row = to + (ph + h) * Wp;
            const float *restrict src = from + h * W;
            for (int64_t i = 0; i < pw; i++)
                row[i] = 0.0f;
            for (int64_t i = 0; i < W; i++)
                row[pw + i] = src[i];
            for (int64_t i = pw + W; i < Wp; i++)
                row[i] = 0.0f;
        }
        for (int64_t i = (ph + H) * Wp; i < plane; i++)
            to[i] = 0.0f;
    }
    memset(padded + cg * plane, 0, sizeof(float) * (size_t)(pl->pad_floats - cg * plane));
}

/* Strided convolutions: the zero-padded image is split into its sh x sw
   stride phases, phase (a, b) of channel c holding padded rows a, a + sh, ...
   and columns b, b + sw, ... as a [Hq, Wq] plane (zeros past the padded
   image).  Tap (c, ki, kj) of output (oh, ow) reads padded row
   oh*sh + ki*dh = (oh + qi)*sh + a, i.e. element (oh + qi, ow + qj) of phase
   (a, b) = ((ki*dh) % sh, (kj*dw) % sw), qi = ki*dh / sh, qj = kj*dw / sw: a
   stride-1 read again, so the micro-kernel reads B in place from the phases
   exactly as it does from a stride-1 padded image.  Packing the strided
   im2col (a gather with bounds checks per run) took 2.3x the GEMM's time. */
static inline __attribute__((always_inline)) void
pad_phases_body(const conv_geometry *g, const implicit_plan *pl, const float *x, int64_t cg,
                const int64_t sh, const int64_t sw, float *phases)
{
    /* zeros everywhere, then each source row once: padded row h + ph goes
       to row (h + ph) / sh of phase row (h + ph) % sh, and its column w + pw
       to column (w + pw) / sw of phase column (w + pw) % sw.  (Zeros written
       only around the data, phase by phase, took 1.4x as long on the 8-16
       wide rows of ResNet-20's stride-2 layers.)  Since h + ph < Hp <= sh *
       Hq, and likewise for columns, every target lies inside its phase. */
    const int64_t Hq = pl->Hq, Wq = pl->Wq, HW = g->H * g->W;
    memset(phases, 0, sizeof(float) * (size_t)pl->pad_floats);
    for (int64_t c = 0; c < cg; c++)
        for (int64_t h = 0; h < g->H; h++) {
            const int64_t a = (h + g->ph) % sh, qi = (h + g->ph) / sh;
            const float *restrict src = x + c * HW + h * g->W;
            for (int64_t b = 0; b < sw; b++) {
                float *restrict row = phases + ((c * sh + a) * sw + b) * Hq * Wq + qi * Wq;
                const int64_t w0 = ((b - g->pw) % sw + sw) % sw; /* first w with (w + pw) % sw == b */
                for (int64_t w = w0, qj = (w0 + g->pw) / sw; w < g->W; w += sw, qj++)
                    row[qj] = src[w];
            }
        }
}

static void pad_phases(const conv_geometry *g, const implicit_plan *pl, const float *x, int64_t cg,
                       float *phases)
{
    /* stride 2 as constants: the copies become fixed-stride vector gathers
       (the runtime-stride loop made ResNet-20's stride-2 layers 20% slower) */
    if (g->sh == 2 && g->sw == 2)
        pad_phases_body(g, pl, x, cg, 2, 2, phases);
    else
        pad_phases_body(g, pl, x, cg, g->sh, g->sw, phases);
}

/* offsets[k] = where tap k = (c, ki, kj) starts in the phases of an image
   (at stride 1 the padded image itself: the same table as tap_offsets). */
static void phase_offsets(const conv_geometry *g, const implicit_plan *pl, int64_t *offsets)
{
    int64_t ckk = g->C / g->groups * g->kh * g->kw;
    for (int64_t k = 0; k < ckk; k++) {
        int64_t c = k / (g->kh * g->kw), ki = k / g->kw % g->kh, kj = k % g->kw;
        int64_t a = ki * g->dh % g->sh, b = kj * g->dw % g->sw;
        offsets[k] = ((c * g->sh + a) * g->sw + b) * pl->Hq * pl->Wq +
                     ki * g->dh / g->sh * pl->Wq + kj * g->dw / g->sw;
    }
}

/* (the per-row copies stay inline vector moves, not memcpy calls) */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static an_status implicit_band(const conv_geometry *g, const implicit_plan *pl,
                               const int64_t *offsets, const float *w, const float *bias, float *y,
                               int64_t n, int64_t grp, int64_t oh0, const float *padded, float *band)
{
    int64_t og = g->Cout / g->groups, ckk = g->C / g->groups * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW;
    int64_t rows = g->OH - oh0 < pl->rows ? g->OH - oh0 : pl->rows;
    int64_t ld = rows * pl->Wq, cols = (rows - 1) * pl->Wq + g->OW;
    if (an_gemm_f32_rows_b(0, og, cols, ckk, 1.0f, w + grp * og * ckk, ckk, padded + oh0 * pl->Wq,
                           offsets, 0.0f, band, ld) != 0)
        return an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace");
    /* sizes in locals: under -fno-strict-aliasing every float store could
       change g->OW, which kept this copy scalar with a reload per element */
    const int64_t OW = g->OW, Wq = pl->Wq;
    for (int64_t o = 0; o < og; o++) {
        int64_t co = grp * og + o;
        float *to = y + (n * g->Cout + co) * OHW + oh0 * OW;
        for (int64_t r = 0; r < rows; r++)
            store_run(to + r * OW, band + o * ld + r * Wq, OW, bias ? bias + co : NULL, g->act);
    }
    return AN_OK;
}

static void implicit_pad(const conv_geometry *g, const implicit_plan *pl, const float *x, int64_t n,
                         int64_t grp, float *padded)
{
    int64_t cg = g->C / g->groups;
    if (g->sh == 1 && g->sw == 1)
        pad_image(g, pl, x + (n * g->C + grp * cg) * g->H * g->W, cg, padded);
    else
        pad_phases(g, pl, x + (n * g->C + grp * cg) * g->H * g->W, cg, padded);
}

static an_status implicit_image(const conv_geometry *g, const implicit_plan *pl,
                                const int64_t *offsets, const float *x, const float *w,
                                const float *bias, float *y, int64_t n, float *work)
{
    float *padded = work, *band = work + pl->pad_floats;
    for (int64_t grp = 0; grp < g->groups; grp++) {
        implicit_pad(g, pl, x, n, grp, padded);
        for (int64_t oh0 = 0; oh0 < g->OH; oh0 += pl->rows) {
            an_status st = implicit_band(g, pl, offsets, w, bias, y, n, grp, oh0, padded, band);
            if (st)
                return st;
        }
    }
    images_moments(g, y, n, 1);
    return AN_OK;
}

static an_status implicit_forward(const conv_geometry *g, const float *x, const float *w,
                                  const float *bias, float *y)
{
    implicit_plan pl = plan_implicit(g);
    int64_t cg = g->C / g->groups, ckk = cg * g->kh * g->kw;
    int threads = unit_threads(g->N);
    const int64_t bands = (g->OH + pl.rows - 1) / pl.rows;
    /* too few images for the team: the bands of each image are shared out
       instead (the GEMM alone split 3 -> 32 channels on a 32x32 image
       worse than one thread) */
    const int by_bands = threads == 1 && team_size() > 1 && bands > 1;
    const int band_threads = by_bands ? team_size() : 1;
    int64_t per_thread = pl.pad_floats + pl.band_floats;
    size_t floats = by_bands ? (size_t)(pl.pad_floats + pl.band_floats * band_threads)
                             : (size_t)(per_thread * threads);
    float *work = an_alloc(sizeof(float) * (floats + (size_t)ckk * 2));
    if (!work)
        return an_last_status();
    /* B row k = tap (c, ki, kj) starts at this offset of the padded image */
    int64_t *offsets = (int64_t *)(work + floats);
    phase_offsets(g, &pl, offsets);
    an_status st = AN_OK;
    if (by_bands) {
        float *padded = work, *band_work = work + pl.pad_floats;
        for (int64_t n = 0; n < g->N && !st; n++)
            for (int64_t grp = 0; grp < g->groups && !st; grp++) {
                implicit_pad(g, &pl, x, n, grp, padded);
                int failed = 0;
#pragma omp parallel for schedule(static) num_threads(band_threads) reduction(| : failed)
                for (int64_t b = 0; b < bands; b++)
                    failed |= implicit_band(g, &pl, offsets, w, bias, y, n, grp, b * pl.rows, padded,
                                            band_work + thread_index() * pl.band_floats) != AN_OK;
                if (failed)
                    st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace");
                else if (grp == g->groups - 1)
                    images_moments(g, y, n, 1);
            }
    } else if (threads == 1) {
        for (int64_t n = 0; n < g->N && !st; n++)
            st = implicit_image(g, &pl, offsets, x, w, bias, y, n, work);
    } else {
        int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
        for (int64_t n = 0; n < g->N; n++)
            failed |= implicit_image(g, &pl, offsets, x, w, bias, y, n,
                                     work + thread_index() * per_thread) != AN_OK;
        if (failed)
            st = an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace");
    }
    an_free(work);
    if (!st)
        moments_filled(g);
    return st;
}

/* The weight gradient from the padded image: dW_g[o, tap] += sum over the
   outputs k of dy[o, k] * (what tap reads for output k), a GEMM with
   M = og, N = taps, K = outputs whose B is gathered tap by tap from the
   padded image straight into the packed panels (16 taps x 16 outputs per
   register transpose).  dy is A as it lies (rows of OH*OW).  This replaces
   im2col and the transposing pack of the column matrix it fed (9-10% of a
   ResNet-20 step).  Only valid outputs are read: no junk columns, so a NaN
   in the input reaches exactly the taps that read it. */

static void pack_rows_transposed(const float *const *rows, int64_t count, int64_t kc, int width,
                                 float *panel)
{
    if (an_pack_transpose_rows_simd(rows, count, kc, width, panel))
        return;
    for (int64_t k = 0; k < kc; k++) {
        float *to = panel + k * width;
        int64_t r = 0;
        for (; r < count; r++)
            to[r] = rows[r][k];
        for (; r < width; r++)
            to[r] = 0.0f;
    }
}

static void pack_taps_panel(const void *source, int64_t k0, int64_t kc, int64_t j0, int64_t cols,
                            int width, float *panel)
{
    const taps_source *src = source;
    const int64_t OW = src->g->OW, OHW = src->g->OH * OW;
    const float *rows[AN_GEMM_MAX_NR];
    for (int64_t k = 0; k < kc;) {
        /* a run of outputs along one output row of one image */
        const int64_t out = k0 + k, image = out / OHW, rem = out % OHW, oh = rem / OW, ow = rem % OW;
        const int64_t run = OW - ow < kc - k ? OW - ow : kc - k;
        const float *base = src->padded + image * src->image_floats + oh * src->Wp + ow;
        for (int64_t t = 0; t < cols; t++)
            rows[t] = base + src->offsets[j0 + t];
        pack_rows_transposed(rows, cols, run, width, panel + k * width);
        k += run;
    }
}

/* B of a 1x1 tile's weight gradient, op(B)(k, t) = x[image k / OHW, channel
   t, pixel k % OHW], straight from x (see pack_pointwise_panel): a run of
   outputs is a run of each channel's plane, where pad_tile copied the
   images first and pack_taps_panel took runs of one output row. */
static void pack_pointwise_taps_panel(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                      int64_t cols, int width, float *panel)
{
    const pointwise_source *src = source;
    const int64_t plane = src->plane;
    const float *rows[AN_GEMM_MAX_NR];
    for (int64_t k = 0; k < kc;) {
        const int64_t out = k0 + k, image = out / plane, rem = out % plane;
        const int64_t run = plane - rem < kc - k ? plane - rem : kc - k;
        const float *base = src->x + image * src->image_floats + rem;
        for (int64_t t = 0; t < cols; t++)
            rows[t] = base + (j0 + t) * plane;
        pack_rows_transposed(rows, cols, run, width, panel + k * width);
        k += run;
    }
}

static an_status implicit_weight_grad(const conv_geometry *g, const float *dy, const float *x,
                                      float *dw)
{
    implicit_plan pl = plan_implicit(g);
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW, HW = g->H * g->W, wsize = g->Cout * ckk;
    /* fixed parts, as in tiled_backward: the sum order is the shape's */
    int64_t parts = g->N < CONV_DW_PARTS ? g->N : CONV_DW_PARTS;
    if (parts * wsize > CONV_DW_ALL_PARTIALS_FLOATS)
        parts = wsize > 0 ? CONV_DW_ALL_PARTIALS_FLOATS / wsize : 1;
    if (wsize > CONV_DW_PARTIAL_FLOATS || parts < 1)
        parts = 1;
    int threads = parts >= 2 ? team_size() : 1;
    if (threads > parts)
        threads = (int)parts;
    int64_t per_thread = pl.pad_floats, partial_floats = parts > 1 ? (wsize + 15) / 16 * 16 : 0;
    float *work = an_alloc(sizeof(float) * (size_t)(per_thread * threads + partial_floats * parts + ckk * 2));
    if (!work)
        return an_last_status();
    float *partials = work + per_thread * threads;
    int64_t *offsets = (int64_t *)(partials + partial_floats * parts);
    tap_offsets(g, pl.Hp * pl.Wp, pl.Wp, offsets);
    if (partial_floats)
        memset(partials, 0, sizeof(float) * (size_t)(partial_floats * parts));
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed) if (threads > 1)
    for (int64_t p = 0; p < parts; p++) {
        float *padded = work + thread_index() * per_thread;
        float *acc = partial_floats ? partials + p * partial_floats : dw;
        for (int64_t n = g->N * p / parts; n < g->N * (p + 1) / parts && !failed; n++)
            for (int64_t grp = 0; grp < g->groups && !failed; grp++) {
                pad_image(g, &pl, x + (n * g->C + grp * cg) * HW, cg, padded);
                taps_source src = {g, pl.Wp, padded, offsets, 0};
                failed |= an_gemm_f32_pack_b(0, og, ckk, OHW, 1.0f, dy + (n * g->Cout + grp * og) * OHW,
                                             OHW, pack_taps_panel, &src, 1.0f, acc + grp * og * ckk,
                                             ckk) != 0;
            }
    }
    an_status st = failed ? an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace")
                          : AN_OK;
    if (!st && partial_floats)
        add_partials(dw, partials, parts, partial_floats, wsize);
    an_free(work);
    return st;
}

static int choose_impl(const conv_geometry *g);
static an_status conv_forward_any(const conv_geometry *g, const float *x, const float *w,
                                  const float *bias, float *y);

/* The data gradient of a stride-1 convolution is itself a stride-1
   convolution: dx = conv(dy, w'), with w'[c, o, ki, kj] =
   w[o, c, kh-1-ki, kw-1-kj] per group and padding (k-1)*d - p, which the
   zoo's kernels always allow (3x3 pad 1, 5x5 pad 2).  Run through the
   forward path, it needs no col2im: the transposed GEMM and col2im it
   replaces were 8-15% of a ResNet-20 step. */
static int flipped_data_grad_applies(const conv_geometry *g)
{
    return g->sh == 1 && g->sw == 1 && !pointwise_accepts(g) && (g->kh - 1) * g->dh >= g->ph &&
           (g->kw - 1) * g->dw >= g->pw;
}

#define FLIP_CHANNELS 16

static an_status flipped_data_grad(const conv_geometry *g, const float *dy, const float *w,
                                   float *dx)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, kk = g->kh * g->kw;
    conv_geometry t = *g;
    t.C = g->Cout, t.H = g->OH, t.W = g->OW, t.Cout = g->C;
    t.ph = (g->kh - 1) * g->dh - g->ph, t.pw = (g->kw - 1) * g->dw - g->pw;
    t.OH = g->H, t.OW = g->W;
    float *flipped = an_alloc(sizeof(float) * (size_t)(g->Cout * cg * kk + 1));
    if (!flipped)
        return an_last_status();
    /* By blocks of FLIP_CHANNELS input channels, shared out over threads:
       each output channel o reads one run of the block's taps and writes a
       run into each of the block's rows.  Channel by channel on one thread,
       the flip read w with a stride of C*kk floats and took 0.9 ms of the
       6.7 ms data gradient of a 512 -> 512 layer on 4x4 at batch 32. */
    const int64_t blocks = (cg + FLIP_CHANNELS - 1) / FLIP_CHANNELS;
#pragma omp parallel for schedule(static) if (g->Cout * cg * kk > AN_PARALLEL_GRAIN)
    for (int64_t unit = 0; unit < g->groups * blocks; unit++) {
        const int64_t grp = unit / blocks, c0 = unit % blocks * FLIP_CHANNELS;
        const int64_t c1 = cg - c0 < FLIP_CHANNELS ? cg : c0 + FLIP_CHANNELS;
        for (int64_t o = 0; o < og; o++) {
            const float *from = w + ((grp * og + o) * cg + c0) * kk;
            for (int64_t c = c0; c < c1; c++) {
                float *to = flipped + ((grp * cg + c) * og + o) * kk;
                for (int64_t k = 0; k < kk; k++)
                    to[k] = from[(c - c0) * kk + (kk - 1 - k)];
            }
        }
    }
    an_status st = conv_forward_any(&t, dy, flipped, NULL, dx);
    an_free(flipped);
    return st;
}

/* ------------------------------------------------------------- winograd */

/* 3x3, stride 1, padding 1, no groups: y = A^T [sum_c U * V] A per 4x4
   output tile (kernels/winograd.h), 36 GEMMs over channels per chunk of
   images.  It pays where the GEMMs have channels to work with: ResNet-20's
   32- and 64-channel layers (16x16 and 8x8) ran at 0.7-0.9x PyTorch
   through the direct lowerings; 16 channels stay there, and so do small
   batches (below).  F(2x2, 3x3) came first: F(4x4, 3x3) made these layers
   15-18% faster forward and backward (fewer multiplies, and 36 values
   written per 16 outputs instead of 16 per 4), at about 10x its rounding
   error (1e-5 of the largest output instead of 1e-6).  The transforms turn
   a non-finite input into NaN across its whole tile, where a direct sum
   taints only the outputs whose window covers it: such inputs (seen while
   transforming) and non-finite weights go to the direct lowering. */
#define WINOGRAD_POINTS AN_WINOGRAD_POINTS
#define WINOGRAD_MIN_CHANNELS 32
#define WINOGRAD_MAX_PLANE 64
/* Small batches stay with the direct lowering: their 36 GEMMs have too
   little work to pay for the transforms around them.  Forward, 2 threads,
   F(4x4, 3x3) against the direct lowering: 32 channels on 16x16 0.94x with
   32 images, 1.15x with 48, 1.26x with 64, 1.39x with 128; 64 -> 64
   channels on 8x8 1.16x with 64 images, 1.59x with 128; 64 on 32x32 1.55x
   with 32 images.  (16 channels on 32x32 in ResNet-20's first stage, all
   three passes: 0.75-0.85x, so they stay direct.)  The rule depends on the
   shape alone, so the numbers do not depend on the thread count. */
#define WINOGRAD_MIN_IMAGES 32
/* At least 2048 outputs per channel over the batch: 512 blocks of 2x2, so
   8x8 planes from 32 images and 4x4 planes from 128.  With chunks of 32+
   tiles (below), on a Zen 5 (AVX-512), 2 threads, in one process
   alternating with the direct lowering: 64 -> 64 channels on 8x8 with 32
   images 0.56x the time forward and 0.68x forward+backward; 256 -> 256 on
   8x8 0.55x / 0.62x; 512 -> 512 on 4x4 with 128 images 0.66x / 0.76x,
   256 -> 256 0.47x / 0.91x (1 thread: 0.41-0.50x for the 8x8 layers).  With
   32 images, 4x4 planes stayed slower (512 channels 1.26x): 32 tiles per
   chunk of the whole batch read all 36 x C x Cout transformed weights. */
#define WINOGRAD_MIN_QUADS 512
/* V and M of one chunk of images, floats (1 MB: a core's L2 share) */
#define WINOGRAD_CHUNK_FLOATS (1 << 18)
/* ... but at least this many tiles per chunk (the rows of its 36 GEMMs),
   where that fits WINOGRAD_MAX_CHUNK_FLOATS: each GEMM packs its C x Cout
   slice of U whatever its rows, and with 256+ channels the L2 rule gave
   7-12 rows.  256 -> 256 on 8x8, 32 images: 0.85x the time forward, 0.93x
   forward+backward (4 of 4 rounds faster each); 512 -> 512 on 4x4, 128
   images, 0.53x forward; the smaller layers of ResNet-20, 1.00x (their
   chunks already had 52+ rows).  Chunks depend on the shape alone. */
#define WINOGRAD_MIN_ROWS 32
/* A chunk is at least one image: layers whose single image would need more
   than this (4 MB per thread) stay direct, so the workspace stays bounded;
   nor does WINOGRAD_MIN_ROWS grow a chunk past it. */
#define WINOGRAD_MAX_CHUNK_FLOATS (1 << 20)

static _Atomic int winograd_enabled = 1;

void an_set_conv_winograd(int enabled) { winograd_enabled = enabled != 0; }
int an_get_conv_winograd(void) { return winograd_enabled; }

static int winograd_accepts(const conv_geometry *g)
{
    return winograd_enabled && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 &&
           g->ph == 1 && g->pw == 1 && g->dh == 1 && g->dw == 1 && g->groups == 1 &&
           g->C >= WINOGRAD_MIN_CHANNELS && g->Cout >= WINOGRAD_MIN_CHANNELS &&
           g->H <= WINOGRAD_MAX_PLANE && g->W <= WINOGRAD_MAX_PLANE &&
           g->N >= WINOGRAD_MIN_IMAGES &&
           g->N * ((g->H + 1) / 2) * ((g->W + 1) / 2) >= WINOGRAD_MIN_QUADS &&
           WINOGRAD_POINTS * (g->C + g->Cout) * an_winograd_tiles(g->H) * an_winograd_tiles(g->W) <=
               WINOGRAD_MAX_CHUNK_FLOATS;
}

static an_status winograd_fallback(const conv_geometry *g, const float *x, const float *w,
                                   const float *bias, float *y);

/* How the images are cut into chunks for the transforms and GEMMs: whole
   images per chunk, as many as fit WINOGRAD_CHUNK_FLOATS, balanced; rows =
   the tiles of one chunk.  Forward, data and weight gradient alike. */
typedef struct {
    int64_t tiles, images, chunks, rows;
} winograd_chunking;

static winograd_chunking winograd_chunks(const conv_geometry *g)
{
    winograd_chunking ch;
    ch.tiles = an_winograd_tiles(g->H) * an_winograd_tiles(g->W);
    const int64_t image_floats = WINOGRAD_POINTS * (g->C + g->Cout) * ch.tiles;
    int64_t most = WINOGRAD_CHUNK_FLOATS / image_floats;
    if (most * ch.tiles < WINOGRAD_MIN_ROWS) {
        most = (WINOGRAD_MIN_ROWS + ch.tiles - 1) / ch.tiles;
        if (most * image_floats > WINOGRAD_MAX_CHUNK_FLOATS)
            most = WINOGRAD_MAX_CHUNK_FLOATS / image_floats;
    }
    ch.images = balanced_piece(g->N, most < 1 ? 1 : most);
    ch.chunks = (g->N + ch.images - 1) / ch.images;
    ch.rows = ch.images * ch.tiles;
    return ch;
}

/* The weight transforms (U from w, dw from the summed gradient) over the
   team, in runs of 16 output channels: each thread writes its own rows, so
   the bits are those of one thread.  Run serially before the chunks, the
   forward transform of 512 -> 512 weights was a quarter of the CPU time of
   that layer's forward on 4x4 planes at batch 128, the other thread
   waiting. */
#define WINOGRAD_WEIGHT_BLOCK 16

static int winograd_weight_team(int64_t K, int64_t C)
{
    return WINOGRAD_POINTS * K * C >= AN_PARALLEL_GRAIN ? team_size() : 1;
}

static int winograd_weights_by_team(const float *w, int64_t K, int64_t C, float *U)
{
    const int64_t blocks = (K + WINOGRAD_WEIGHT_BLOCK - 1) / WINOGRAD_WEIGHT_BLOCK;
    const int team = winograd_weight_team(K, C);
    int non_finite = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1) reduction(| : non_finite)
#endif
    {
        int64_t b0, b1;
        split_rows(blocks, team_size_in_region(), thread_index(), &b0, &b1);
        const int64_t k0 = b0 * WINOGRAD_WEIGHT_BLOCK;
        const int64_t k1 = b1 * WINOGRAD_WEIGHT_BLOCK < K ? b1 * WINOGRAD_WEIGHT_BLOCK : K;
        if (k0 < k1)
            non_finite |= an_winograd_f4x3_weights(w, K, C, k0, k1, U);
    }
    return non_finite;
}

static void winograd_weight_grad_by_team(const float *Wt, int64_t K, int64_t C, float *dw)
{
    const int team = winograd_weight_team(K, C);
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
        int64_t k0, k1;
        split_rows(K, team_size_in_region(), thread_index(), &k0, &k1);
        if (k0 < k1)
            an_winograd_f4x3_weight_grad(Wt, K, C, k0, k1, dw);
    }
}

static an_status winograd_forward(const conv_geometry *g, const float *x, const float *w,
                                  const float *bias, float *y)
{
    const int64_t C = g->C, K = g->Cout, HW = g->H * g->W;
    if (g->N == 0 || HW == 0)
        return AN_OK;
    const winograd_chunking ch = winograd_chunks(g);
    const int64_t tiles = ch.tiles, nb = ch.images, chunks = ch.chunks, rows = ch.rows;
    const int threads = unit_threads(chunks), team = team_size();
    const int64_t scratch = (an_winograd_scratch_floats(g->H, g->W) + 15) / 16 * 16;
    /* 16 floats of slack after M: the output transform reads whole vectors;
       a scratch block per thread of the team after the last buffers */
    const int64_t per_thread = WINOGRAD_POINTS * (C + K) * rows + 16 + scratch;
    float *work = an_alloc(sizeof(float) * (size_t)(WINOGRAD_POINTS * K * C + per_thread * threads +
                                                    scratch * (team > 1 ? team : 0)));
    if (!work)
        return an_last_status();
    float *U = work;
    int non_finite = winograd_weights_by_team(w, K, C, U), failed = 0;
    if (non_finite) {
        /* nothing to do: the direct lowering below */
    } else if (threads > 1 || team == 1) {
        /* enough chunks: each thread runs whole chunks, its GEMMs on itself.
           The images are spread evenly over a multiple of the thread count
           of chunks (at most nb images each): 128 images in chunks of 7
           left 70 to one thread and 58 to the other.  Each output depends
           on its own image only, so any split gives the same bits. */
        int64_t even_chunks = (chunks + threads - 1) / threads * threads;
        if (even_chunks > g->N) /* a chunk holds at least one image */
            even_chunks = chunks;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : non_finite, failed) if (threads > 1)
        for (int64_t chunk = 0; chunk < even_chunks; chunk++) {
            if (non_finite || failed)
                continue;
            float *V = work + WINOGRAD_POINTS * K * C + thread_index() * per_thread;
            float *M = V + WINOGRAD_POINTS * C * rows, *sc = M + WINOGRAD_POINTS * K * rows + 16;
            const int64_t n0 = chunk * g->N / even_chunks,
                          count = (chunk + 1) * g->N / even_chunks - n0, T = count * tiles;
            if (an_winograd_f4x3_input(x + n0 * C * HW, count, C, g->H, g->W, T, sc, V)) {
                non_finite = 1;
                continue;
            }
            /* M_xi [T, K] = V_xi [T, C] @ U_xi [C, K] */
            for (int xi = 0; xi < WINOGRAD_POINTS && !failed; xi++)
                failed |= an_gemm_f32(0, 0, T, K, C, 1.0f, V + xi * T * C, C, U + xi * C * K, K, 0.0f,
                                      M + xi * T * K, K) != 0;
            if (!failed) {
                an_winograd_f4x3_output(M, count, K, g->H, g->W, T, bias, gemm_act(g->act), sc,
                                        y + n0 * K * HW);
                images_moments(g, y, n0, count);
            }
        }
    } else {
        /* fewer chunks than the team can share: the team works through each
           chunk together, images of the transforms and the 36 GEMMs split
           across threads (a GEMM threaded on its own forks a team per call,
           whose idle threads had gone to sleep during the transforms) */
        float *V = work + WINOGRAD_POINTS * K * C, *M = V + WINOGRAD_POINTS * C * rows;
        for (int64_t n0 = 0; n0 < g->N && !non_finite && !failed; n0 += nb) {
            const int64_t count = g->N - n0 < nb ? g->N - n0 : nb, T = count * tiles;
#pragma omp parallel num_threads(team) reduction(| : non_finite, failed)
            {
                float *sc = M + WINOGRAD_POINTS * K * rows + 16 + thread_index() * scratch;
#pragma omp for schedule(static)
                for (int64_t n = 0; n < count; n++)
                    non_finite |= an_winograd_f4x3_input(x + (n0 + n) * C * HW, 1, C, g->H, g->W, T,
                                                         sc, V + n * tiles * C);
#pragma omp for schedule(static)
                for (int xi = 0; xi < WINOGRAD_POINTS; xi++)
                    failed |= an_gemm_f32(0, 0, T, K, C, 1.0f, V + xi * T * C, C, U + xi * C * K, K,
                                          0.0f, M + xi * T * K, K) != 0;
#pragma omp for schedule(static)
                for (int64_t n = 0; n < count; n++) {
                    an_winograd_f4x3_output(M + n * tiles * K, 1, K, g->H, g->W, T, bias,
                                            gemm_act(g->act), sc, y + (n0 + n) * K * HW);
                    images_moments(g, y, n0 + n, 1);
                }
            }
        }
    }
    an_free(work);
    if (failed)
        return an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace");
    if (non_finite)
        return winograd_fallback(g, x, w, bias, y);
    moments_filled(g);
    return AN_OK;
}

/* dW through the same transforms: dL/dU = sum over tiles of
   (A dy_t A^T) * (B^T d_t B), 36 GEMMs over tiles (K-dimension T) per
   chunk of images, then dW = G^T (dL/dU) G.  Chunks are summed in fixed
   parts, in order, as tiled_backward does: the same bits for any thread
   count.  Returns 1 (nothing written to dw) when x or dy holds a
   non-finite value, for the direct lowering to take over. */
static an_status winograd_weight_grad(const conv_geometry *g, const float *dy, const float *x,
                                      float *dw, int *non_finite_out)
{
    const int64_t C = g->C, K = g->Cout, HW = g->H * g->W;
    *non_finite_out = 0;
    if (g->N == 0 || HW == 0)
        return AN_OK;
    const winograd_chunking ch = winograd_chunks(g);
    const int64_t tiles = ch.tiles, nb = ch.images, chunks = ch.chunks, rows = ch.rows;
    const int64_t transformed = WINOGRAD_POINTS * K * C;
    int64_t parts = chunks < CONV_DW_PARTS ? chunks : CONV_DW_PARTS;
    if (parts * transformed > CONV_DW_ALL_PARTIALS_FLOATS)
        parts = CONV_DW_ALL_PARTIALS_FLOATS / transformed;
    if (parts < 1)
        parts = 1;
    const int team = team_size();
    int threads = parts >= 2 ? team : 1;
    if (threads > parts)
        threads = (int)parts;
    const int64_t scratch = (an_winograd_scratch_floats(g->H, g->W) + 15) / 16 * 16;
    const int64_t per_thread = WINOGRAD_POINTS * (C + K) * rows + scratch;
    float *work = an_alloc(sizeof(float) * (size_t)(transformed * parts + per_thread * threads +
                                                    scratch * (team > 1 ? team : 0)));
    if (!work)
        return an_last_status();
    float *partials = work;
    int non_finite = 0, failed = 0;
    if (threads > 1 || team == 1) {
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : non_finite, failed) if (threads > 1)
        for (int64_t part = 0; part < parts; part++) {
            float *V = work + transformed * parts + thread_index() * per_thread;
            float *DY = V + WINOGRAD_POINTS * C * rows, *sc = DY + WINOGRAD_POINTS * K * rows;
            float *Wt = partials + part * transformed;
            for (int64_t chunk = chunks * part / parts; chunk < chunks * (part + 1) / parts; chunk++) {
                if (non_finite || failed)
                    break;
                const int64_t n0 = chunk * nb, count = g->N - n0 < nb ? g->N - n0 : nb, T = count * tiles;
                if (an_winograd_f4x3_input(x + n0 * C * HW, count, C, g->H, g->W, T, sc, V) ||
                    an_winograd_f4x3_output_grad(dy + n0 * K * HW, count, K, g->H, g->W, T, sc, DY)) {
                    non_finite = 1;
                    break;
                }
                const float beta = chunk == chunks * part / parts ? 0.0f : 1.0f;
                /* Wt_xi [K, C] (+)= DY_xi [T, K]^T @ V_xi [T, C] */
                for (int xi = 0; xi < WINOGRAD_POINTS && !failed; xi++)
                    failed |= an_gemm_f32(1, 0, K, C, T, 1.0f, DY + xi * T * K, K, V + xi * T * C, C,
                                          beta, Wt + xi * K * C, C) != 0;
            }
        }
    } else {
        /* one part: the team shares each chunk (see winograd_forward); the
           same sums in the same order as one thread */
        float *V = work + transformed * parts, *DY = V + WINOGRAD_POINTS * C * rows;
        for (int64_t chunk = 0; chunk < chunks && !non_finite && !failed; chunk++) {
            const int64_t n0 = chunk * nb, count = g->N - n0 < nb ? g->N - n0 : nb, T = count * tiles;
            const float beta = chunk == 0 ? 0.0f : 1.0f;
#pragma omp parallel num_threads(team) reduction(| : non_finite, failed)
            {
                float *sc = DY + WINOGRAD_POINTS * K * rows + thread_index() * scratch;
#pragma omp for schedule(static)
                for (int64_t n = 0; n < count; n++)
                    non_finite |=
                        an_winograd_f4x3_input(x + (n0 + n) * C * HW, 1, C, g->H, g->W, T, sc,
                                               V + n * tiles * C) |
                        an_winograd_f4x3_output_grad(dy + (n0 + n) * K * HW, 1, K, g->H, g->W, T, sc,
                                                     DY + n * tiles * K);
#pragma omp for schedule(static)
                for (int xi = 0; xi < WINOGRAD_POINTS; xi++)
                    if (!non_finite)
                        failed |= an_gemm_f32(1, 0, K, C, T, 1.0f, DY + xi * T * K, K, V + xi * T * C,
                                              C, beta, partials + xi * K * C, C) != 0;
            }
        }
    }
    if (!non_finite && !failed) {
        if (parts > 1) /* part 0 + part 1 + ..., in that order */
            add_partials(partials, partials + transformed, parts - 1, transformed, transformed);
        winograd_weight_grad_by_team(partials, K, C, dw);
    }
    an_free(work);
    *non_finite_out = non_finite;
    if (failed)
        return an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM workspace");
    return AN_OK;
}

/* dx through the flipped kernel (Winograd again), dW through
   winograd_weight_grad, either through the direct lowering when its
   inputs hold inf or NaN. */
static an_status winograd_backward(const conv_geometry *g, const conv_grads *gr)
{
    conv_grads rest = *gr;
    an_status st = AN_OK;
    if (gr->dx) {
        st = flipped_data_grad(g, gr->dy, gr->w, gr->dx);
        rest.dx = NULL;
    }
    if (!st && gr->dw) {
        int non_finite = 0;
        st = winograd_weight_grad(g, gr->dy, gr->x, gr->dw, &non_finite);
        if (!non_finite)
            rest.dw = NULL;
    }
    if (!st && rest.dw)
        st = im2col_gemm_backward(g, &rest);
    return st;
}

/* Specialists first; the last entry accepts every shape. */
/* ---------------------------------------------- direct, few input channels */

/* A first layer: 3x3, stride 1, padding 1, few input channels (see
   kernels/conv3x3_direct.h).  Its backward is the GEMM lowering's. */
static int direct3x3_accepts(const conv_geometry *g)
{
    return g->groups == 1 && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->ph == 1 &&
           g->pw == 1 && g->dh == 1 && g->dw == 1 &&
           an_conv3x3_few_channels_applies(g->C, g->Cout, g->H, g->W);
}

static an_status direct3x3_forward(const conv_geometry *g, const float *x, const float *w,
                                   const float *bias, float *y)
{
    /* the images' rows in one contiguous run per thread (at batch 1 a band
       of each plane, as the next layers split it) */
    const int64_t rows = g->N * g->OH;
    const int64_t work = rows * g->Cout * g->OW * g->C * 9;
    const int team = work >= 4 * AN_PARALLEL_GRAIN ? team_size() : 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
        int64_t r0, r1;
        split_rows(rows, team_size_in_region(), thread_index(), &r0, &r1);
        for (int64_t r = r0; r < r1;) {
            const int64_t n = r / g->OH, oh0 = r % g->OH;
            const int64_t oh1 = r1 - n * g->OH < g->OH ? r1 - n * g->OH : g->OH;
            an_conv3x3_few_channels_rows_f32(x + n * g->C * g->H * g->W, w, bias, g->C, g->Cout,
                                             g->H, g->W, oh0, oh1, gemm_act(g->act),
                                             y + n * g->Cout * g->OH * g->OW);
            r += oh1 - oh0;
        }
    }
    return AN_OK;
}

static const conv_impl conv_impls[] = {
    {"depthwise", depthwise_accepts, depthwise_forward, depthwise_backward},
    {"direct3x3_few_channels", direct3x3_accepts, direct3x3_forward, im2col_gemm_backward},
    {"pointwise", pointwise_accepts, im2col_gemm_forward, im2col_gemm_backward},
    {"winograd", winograd_accepts, winograd_forward, winograd_backward},
    {"implicit_gemm", implicit_accepts, implicit_forward, im2col_gemm_backward},
    {"implicit_gemm_strided", implicit_strided_accepts, implicit_forward, im2col_gemm_backward},
    {"im2col_gemm", im2col_gemm_accepts, im2col_gemm_forward, im2col_gemm_backward},
};

static an_status conv_forward_any(const conv_geometry *g, const float *x, const float *w,
                                  const float *bias, float *y)
{
    return conv_impls[choose_impl(g)].forward(g, x, w, bias, y);
}

typedef an_status (*conv_forward_fn)(const conv_geometry *g, const float *x, const float *w,
                                     const float *bias, float *y);

/* The first implementation that accepts the shape, the one whose forward
   is `skip` aside (NULL: none) */
static int choose_impl_except(const conv_geometry *g, conv_forward_fn skip)
{
    int n = (int)(sizeof conv_impls / sizeof conv_impls[0]);
    for (int i = 0; i < n; i++)
        if (conv_impls[i].forward != skip && conv_impls[i].accepts(g))
            return i;
    return n - 1;
}

static int choose_impl(const conv_geometry *g) { return choose_impl_except(g, NULL); }

/* The lowering the shape gets without Winograd */
static an_status winograd_fallback(const conv_geometry *g, const float *x, const float *w,
                                   const float *bias, float *y)
{
    return conv_impls[choose_impl_except(g, winograd_forward)].forward(g, x, w, bias, y);
}

/* ----------------------------------------------------------- the op */

/* bias grad: db[co] = sum over images, then over the plane, in that order. */
static void bias_grad(const conv_geometry *g, const float *dy, float *db)
{
    int64_t plane = g->OH * g->OW;
#pragma omp parallel for schedule(static) if (g->N * g->Cout * plane > AN_PARALLEL_GRAIN)
    for (int64_t co = 0; co < g->Cout; co++) {
        double acc = 0.0;
        for (int64_t n = 0; n < g->N; n++) {
            const float *p = dy + (n * g->Cout + co) * plane;
            for (int64_t i = 0; i < plane; i++)
                acc += p[i];
        }
        db[co] = (float)acc;
    }
}

static void geometry_from_node(const an_node *node, const an_tensor *x, const an_tensor *w,
                               conv_geometry *g)
{
    g->N = x->shape[0], g->C = x->shape[1], g->H = x->shape[2], g->W = x->shape[3];
    g->Cout = w->shape[0], g->kh = w->shape[2], g->kw = w->shape[3];
    g->act = AN_ACTIVATION_NONE;
    g->residual = NULL;
    g->packed_weight = NULL;
    g->moments = NULL;
    g->moments_filled = NULL;
    g->sh = node->ints[0], g->sw = node->ints[1];
    g->ph = node->ints[2], g->pw = node->ints[3];
    g->dh = node->ints[4], g->dw = node->ints[5];
    g->groups = node->ints[6];
    g->OH = node->ints[7], g->OW = node->ints[8];
}

/* saved[0] = x, saved[1] = weight (contiguous, detached); inputs x, weight, bias. */
static an_status conv2d_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    an_tensor *x = node->saved[0], *w = node->saved[1];
    conv_geometry g;
    geometry_from_node(node, x, w, &g);
    const conv_impl *impl = &conv_impls[node->ints[9]];
    an_tensor *gc = an_contiguous(grad), *dx = NULL, *dw = NULL, *db = NULL;
    an_status st = gc ? AN_OK : an_last_status();
    int work = g.N * g.Cout * g.OH * g.OW > 0;
    /* the flipped-kernel data gradient and the 1x1 paths of
       im2col_gemm_backward write every element of dx: no zeroing pass over
       it first.  MobileNetV2's 144 -> 24 on 32x32, batch 32, forward and
       backward on two threads: 0.88x the time of zeroing dx and adding
       into it; its 960 -> 160 on 4x4 0.95x. */
    int dx_overwritten = work && impl->backward == im2col_gemm_backward &&
                         (flipped_data_grad_applies(&g) || pointwise_accepts(&g));
    if (!st && an_node_input_needs_grad(node, 0) &&
        !(dx = dx_overwritten ? an_empty(x->ndim, x->shape) : an_zeros(x->ndim, x->shape)))
        st = an_last_status();
    if (!st && an_node_input_needs_grad(node, 1) && !(dw = an_zeros(w->ndim, w->shape)))
        st = an_last_status();
    if (!st && an_node_input_needs_grad(node, 2)) {
        int64_t shape[1] = {g.Cout};
        if (!(db = an_empty(1, shape)))
            st = an_last_status();
        else
            bias_grad(&g, an_data_ptr(gc), an_data_ptr(db));
    }
    if (!st && work && (dx || dw)) {
        conv_grads gr = {an_data_ptr(gc), an_data_ptr(x), an_data_ptr(w),
                         dx ? an_data_ptr(dx) : NULL, dw ? an_data_ptr(dw) : NULL};
        st = impl->backward(&g, &gr);
    }
    an_release(gc);
    return an_finish_backward3(st, grad_inputs, dx, dw, db);
}

static an_status conv2d_check(const an_tensor *x, const an_tensor *w, const an_tensor *bias,
                              const int64_t stride[2], const int64_t padding[2],
                              const int64_t dilation[2], int64_t groups, conv_geometry *g)
{
    char sx[AN_SHAPE_BUF], sw[AN_SHAPE_BUF], sb[AN_SHAPE_BUF];
    if (an_check_not_null(x, "conv2d", "input") || an_check_not_null(w, "conv2d", "weight"))
        return AN_ERR_TYPE;
    if (!stride || !padding || !dilation)
        return an_set_error(AN_ERR_TYPE, "conv2d: stride, padding and dilation must be given");
    if (x->ndim != 4)
        return an_set_error(AN_ERR_VALUE, "conv2d: expected input of shape [N, C, H, W], got %s",
                            an_shape_str(x->ndim, x->shape, sx, sizeof sx));
    if (w->ndim != 4)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: expected weight of shape [C_out, C_in/groups, kh, kw], got %s",
                            an_shape_str(w->ndim, w->shape, sw, sizeof sw));
    /* shapes are formatted only for a message: snprintf on every call was a
       quarter of a small convolution's time */
#define X_SHAPE an_shape_str(x->ndim, x->shape, sx, sizeof sx)
#define W_SHAPE an_shape_str(w->ndim, w->shape, sw, sizeof sw)
    if (stride[0] < 1 || stride[1] < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: stride must be >= 1, got (%lld, %lld)",
                            (long long)stride[0], (long long)stride[1]);
    if (dilation[0] < 1 || dilation[1] < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: dilation must be >= 1, got (%lld, %lld)",
                            (long long)dilation[0], (long long)dilation[1]);
    if (padding[0] < 0 || padding[1] < 0)
        return an_set_error(AN_ERR_VALUE, "conv2d: padding must be >= 0, got (%lld, %lld)",
                            (long long)padding[0], (long long)padding[1]);
    if (groups < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: groups must be >= 1, got %lld", (long long)groups);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: weight %s has an empty kernel", W_SHAPE);
    if (x->shape[1] % groups)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: input channels %lld (input %s) are not divisible by groups=%lld",
                            (long long)x->shape[1], X_SHAPE, (long long)groups);
    if (w->shape[0] % groups)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: output channels %lld (weight %s) are not divisible by groups=%lld",
                            (long long)w->shape[0], W_SHAPE, (long long)groups);
    if (w->shape[1] * groups != x->shape[1])
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: input %s has %lld channels, but weight %s with groups=%lld expects %lld",
                            X_SHAPE, (long long)x->shape[1], W_SHAPE, (long long)groups,
                            (long long)(w->shape[1] * groups));
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))
        return an_set_error(AN_ERR_VALUE, "conv2d: expected bias of shape [%lld] for weight %s, got %s",
                            (long long)w->shape[0], W_SHAPE, an_shape_str(bias->ndim, bias->shape, sb, sizeof sb));
#undef X_SHAPE
#undef W_SHAPE
    g->N = x->shape[0], g->C = x->shape[1], g->H = x->shape[2], g->W = x->shape[3];
    g->Cout = w->shape[0], g->kh = w->shape[2], g->kw = w->shape[3];
    g->sh = stride[0], g->sw = stride[1], g->ph = padding[0], g->pw = padding[1];
    g->dh = dilation[0], g->dw = dilation[1], g->groups = groups;
    g->act = AN_ACTIVATION_NONE;
    g->residual = NULL;
    g->packed_weight = NULL;
    g->moments = NULL;
    g->moments_filled = NULL;
    int64_t ekh = g->dh * (g->kh - 1) + 1, ekw = g->dw * (g->kw - 1) + 1;
    int64_t padded_h = g->H + 2 * g->ph, padded_w = g->W + 2 * g->pw;
    if (ekh > padded_h || ekw > padded_w)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: kernel size (%lld, %lld) (dilated) is larger than the padded input "
                            "(%lld, %lld)",
                            (long long)ekh, (long long)ekw, (long long)padded_h, (long long)padded_w);
    g->OH = (padded_h - ekh) / g->sh + 1;
    g->OW = (padded_w - ekw) / g->sw + 1;
    return AN_OK;
}

an_tensor *an_conv2d(an_tensor *x, an_tensor *weight, an_tensor *bias, const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2], int64_t groups)
{
    return an_conv2d_act(x, weight, bias, stride, padding, dilation, groups, AN_ACTIVATION_NONE);
}

an_tensor *an_conv2d_act(an_tensor *x, an_tensor *weight, an_tensor *bias, const int64_t stride[2],
                         const int64_t padding[2], const int64_t dilation[2], int64_t groups,
                         an_activation act)
{
    return an_conv2d_fused(x, weight, bias, stride, padding, dilation, groups, NULL, act);
}

/* The in-place 1x1 path (one image per GEMM) adds a residual in the GEMM's
   epilogue; every other path gets it in a pass after the convolution. */
static int residual_in_gemm(const conv_geometry *g, int which)
{
    return conv_impls[which].forward == im2col_gemm_forward && pointwise_accepts(g) &&
           plan_tiles(g).images == 1;
}

an_tensor *an_conv2d_fused(an_tensor *x, an_tensor *weight, an_tensor *bias,
                           const int64_t stride[2], const int64_t padding[2],
                           const int64_t dilation[2], int64_t groups, an_tensor *residual,
                           an_activation act)
{
    return an_conv2d_fused_prepacked(x, weight, NULL, bias, stride, padding, dilation, groups,
                                     residual, act);
}


/* Whether weight is that of a 1x1 convolution with groups 1 (what
   an_conv2d_pack_weight packs). */
static int packable_weight(const an_tensor *w, int64_t groups)
{
    return w->ndim == 4 && w->shape[2] == 1 && w->shape[3] == 1 && groups == 1 && w->shape[0] > 0 &&
           w->shape[1] > 0;
}

an_tensor *an_conv2d_pack_weight(an_tensor *weight)
{
    char sw[AN_SHAPE_BUF];
    if (an_check_not_null(weight, "conv2d_pack_weight", "weight"))
        return NULL;
    if (!packable_weight(weight, 1)) {
        an_set_error(AN_ERR_VALUE,
                     "conv2d_pack_weight: expected the weight [C_out, C_in, 1, 1] of a 1x1 "
                     "convolution with C_out, C_in >= 1, got %s",
                     an_shape_str(weight->ndim, weight->shape, sw, sizeof sw));
        return NULL;
    }
    const int64_t M = weight->shape[0], K = weight->shape[1];
    const int64_t rows = an_gemm_packed_a_rows(M, K);
    int64_t shape[3] = {(M + rows - 1) / rows, K, rows};
    an_tensor *wc = an_contiguous(weight);
    an_tensor *packed = wc ? an_empty(3, shape) : NULL;
    if (packed)
        an_gemm_pack_a(M, K, an_data_ptr(wc), K, an_data_ptr(packed));
    an_release(wc);
    return packed;
}

/* an_conv2d_fused_prepacked, and with `moments` (training, a batch norm
   after it: [N * Cout][2] doubles) the output planes' moments as well,
   from the path while the planes are in cache where it can. */
static an_tensor *conv2d_core(an_tensor *x, an_tensor *weight, an_tensor *packed, an_tensor *bias,
                              const int64_t stride[2], const int64_t padding[2],
                              const int64_t dilation[2], int64_t groups, an_tensor *residual,
                              an_activation act, double *moments)
{
    conv_geometry g;
    char sr[AN_SHAPE_BUF], sw[AN_SHAPE_BUF];
    if (conv2d_check(x, weight, bias, stride, padding, dilation, groups, &g))
        return NULL;
    if (packed) {
        if (!packable_weight(weight, groups)) {
            an_set_error(AN_ERR_VALUE, "conv2d: a packed weight is only for a 1x1 convolution with "
                                       "groups=1, got weight %s with groups=%lld",
                         an_shape_str(weight->ndim, weight->shape, sw, sizeof sw), (long long)groups);
            return NULL;
        }
        if (!packed_shape_fits(packed, g.Cout, g.C)) {
            an_set_error(AN_ERR_VALUE, "conv2d: the packed weight %s does not belong to weight %s "
                                       "(pack it with conv2d_pack_weight)",
                         an_shape_str(packed->ndim, packed->shape, sr, sizeof sr),
                         an_shape_str(weight->ndim, weight->shape, sw, sizeof sw));
            return NULL;
        }
        an_tensor *operands[2] = {weight, packed};
        if (an_needs_grad(2, operands)) {
            an_set_error(AN_ERR_VALUE, "conv2d: a packed weight is for inference only, but the "
                                       "weight requires grad");
            return NULL;
        }
    }
    if (act != AN_ACTIVATION_NONE && act != AN_ACTIVATION_RELU && act != AN_ACTIVATION_RELU6) {
        an_set_error(AN_ERR_VALUE, "conv2d: unknown activation code %d", (int)act);
        return NULL;
    }
    if (residual && (residual->ndim != 4 || residual->shape[0] != g.N || residual->shape[1] != g.Cout ||
                     residual->shape[2] != g.OH || residual->shape[3] != g.OW)) {
        an_set_error(AN_ERR_VALUE, "conv2d: the residual must have the output's shape [%lld, %lld, %lld, %lld], got %s",
                     (long long)g.N, (long long)g.Cout, (long long)g.OH, (long long)g.OW,
                     an_shape_str(residual->ndim, residual->shape, sr, sizeof sr));
        return NULL;
    }
    an_tensor *grad_check[4] = {x, weight, bias, residual};
    if ((act != AN_ACTIVATION_NONE || residual) && an_needs_grad(4, grad_check)) {
        an_set_error(AN_ERR_VALUE, "conv2d: a fused activation or residual is for inference only, but "
                                   "an input requires grad (apply relu / add after conv2d to train)");
        return NULL;
    }
    int which = choose_impl(&g);
    int64_t shape[4] = {g.N, g.Cout, g.OH, g.OW};
    an_tensor *xc = an_contiguous(x);
    an_tensor *wc = xc ? an_contiguous(weight) : NULL;
    an_tensor *bc = wc && bias ? an_contiguous(bias) : NULL;
    an_tensor *rc = wc && (bc || !bias) && residual ? an_contiguous(residual) : NULL;
    an_tensor *pk = wc && (bc || !bias) && (rc || !residual) && packed ? an_contiguous(packed) : NULL;
    an_tensor *out = wc && (bc || !bias) && (rc || !residual) && (pk || !packed) ? an_empty(4, shape)
                                                                                  : NULL;
    an_status st = out ? AN_OK : an_last_status();
    int filled = 0;
    if (!st && an_numel(out) > 0) {
        const float *pb = bc ? an_data_ptr(bc) : NULL;
        const float *pr = rc ? an_data_ptr(rc) : NULL;
        /* where the path cannot add the residual as it writes y, the
           activation waits for the pass that adds it */
        int in_gemm = pr && g.C > 0 && residual_in_gemm(&g, which);
        an_activation path_act = pr && !in_gemm ? AN_ACTIVATION_NONE : act;
        if (g.C == 0) { /* an empty sum: just the bias */
            if (pb)
                fill_bias(&g, pb, an_data_ptr(out));
            else
                an_fill_(out, 0.0f);
            epilogue_all(an_data_ptr(out), NULL, an_numel(out), path_act);
        } else {
            g.act = path_act; /* each forward applies it as it writes y */
            g.residual = in_gemm ? pr : NULL;
            /* used only if packed for the kernel the GEMM picks now */
            if (pk && packed->shape[2] == an_gemm_packed_a_rows(g.Cout, g.C))
                g.packed_weight = an_data_ptr(pk);
            g.moments = moments;
            g.moments_filled = &filled;
            st = conv_impls[which].forward(&g, an_data_ptr(xc), an_data_ptr(wc), pb, an_data_ptr(out));
        }
        if (!st && pr && !in_gemm)
            epilogue_all(an_data_ptr(out), pr, an_numel(out), act);
    }
    if (!st && moments && !filled) /* a path without the moments, or an empty output */
        an_batchnorm_plane_moments_f32(an_data_ptr(out), g.N * g.Cout, g.OH * g.OW, moments);
    an_release(bc);
    an_release(rc);
    an_release(pk);
    an_tensor *inputs[3] = {x, weight, bias};
    if (!st && an_needs_grad(3, inputs)) {
        an_node *node = an_record(out, "ConvolutionBackward", conv2d_backward, 3, inputs);
        an_tensor *sx = node ? an_detach(xc) : NULL, *sw = node ? an_detach(wc) : NULL;
        if (sx && sw) {
            an_node_save(node, 0, sx);
            an_node_save(node, 1, sw);
            int64_t params[10] = {g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, g.OH, g.OW, which};
            memcpy(node->ints, params, sizeof params);
        } else {
            st = an_last_status();
        }
        an_release(sx);
        an_release(sw);
    }
    an_release(xc);
    an_release(wc);
    if (st) {
        an_release(out);
        return NULL;
    }
    return out;
}

an_tensor *an_conv2d_fused_prepacked(an_tensor *x, an_tensor *weight, an_tensor *packed,
                                     an_tensor *bias, const int64_t stride[2],
                                     const int64_t padding[2], const int64_t dilation[2],
                                     int64_t groups, an_tensor *residual, an_activation act)
{
    return conv2d_core(x, weight, packed, bias, stride, padding, dilation, groups, residual, act,
                       NULL);
}

an_tensor *an_conv2d_batch_norm_act(an_tensor *x, an_tensor *weight, an_tensor *bias,
                                    const int64_t stride[2], const int64_t padding[2],
                                    const int64_t dilation[2], int64_t groups,
                                    an_tensor *running_mean, an_tensor *running_var,
                                    an_tensor *gamma, an_tensor *beta, int training,
                                    double momentum, double eps, an_activation act)
{
    if (!training) {
        an_tensor *y = an_conv2d(x, weight, bias, stride, padding, dilation, groups);
        an_tensor *out = y ? an_batch_norm_act(y, running_mean, running_var, gamma, beta, 0,
                                               momentum, eps, act)
                           : NULL;
        an_release(y);
        return out;
    }
    /* the output's planes, known once the arguments are: the same checks
       conv2d_core makes first (and its messages) */
    conv_geometry g;
    if (conv2d_check(x, weight, bias, stride, padding, dilation, groups, &g))
        return NULL;
    double *moments = an_alloc(sizeof(double) * 2 * (size_t)(g.N * g.Cout > 0 ? g.N * g.Cout : 1));
    if (!moments)
        return NULL;
    an_tensor *y = conv2d_core(x, weight, NULL, bias, stride, padding, dilation, groups, NULL,
                               AN_ACTIVATION_NONE, moments);
    an_tensor *out = y ? an_batch_norm_act_with_moments(y, running_mean, running_var, gamma, beta,
                                                        momentum, eps, act, moments)
                       : NULL;
    an_release(y);
    an_free(moments);
    return out;
}

const char *an_conv2d_algorithm(const int64_t input_shape[4], const int64_t weight_shape[4],
                                const int64_t stride[2], const int64_t padding[2],
                                const int64_t dilation[2], int64_t groups)
{
    if (!input_shape || !weight_shape) {
        an_set_error(AN_ERR_TYPE, "conv2d_algorithm: the input and weight shapes must be given");
        return NULL;
    }
    /* conv2d_check reads the shapes only */
    an_tensor x, w;
    memset(&x, 0, sizeof x);
    memset(&w, 0, sizeof w);
    x.ndim = w.ndim = 4;
    memcpy(x.shape, input_shape, sizeof(int64_t) * 4);
    memcpy(w.shape, weight_shape, sizeof(int64_t) * 4);
    for (int d = 0; d < 4; d++)
        if (x.shape[d] < 0 || w.shape[d] < 0) {
            an_set_error(AN_ERR_VALUE, "conv2d_algorithm: shapes must not be negative");
            return NULL;
        }
    conv_geometry g;
    if (conv2d_check(&x, &w, NULL, stride, padding, dilation, groups, &g))
        return NULL;
    return conv_impls[choose_impl(&g)].name;
}
