/* conv_block.c — an inverted-residual block (1x1 expansion, depthwise 3x3,
   1x1 projection, and the shortcut) in one call for inference: see
   an_conv_pw_dw_pw in appealnet.h. */
#include "conv_internal.h"
#include "../kernels/depthwise.h"
#include <string.h>

/* One inverted-residual block (see an_conv_pw_dw_pw in appealnet.h). */
typedef struct {
    int64_t C, H, W, Ce, Co, OH, OW, stride;
    const float *w1, *p1, *b1, *wd, *bd, *w2, *p2, *b2;
    const float *ws, *ps, *bs; /* the shortcut convolution (ws NULL: none) */
    int act1, actd, act2;      /* the GEMM's activation codes */
    /* the band's depthwise rows through the channels-last small-plane
       kernel (stride 2 onto planes too narrow for the row kernel), not the
       row kernel */
    int small_planes;
    /* output rows a band computes at a time through the row kernel (see
       pdp_band); the band's rows when it takes them at once */
    int64_t chunk_rows;
} pdp_block;

/* Input rows a band of `rows` output rows reads, with its neighbours: from
   r0 - 1 (stride 1) or 2 r0 - 2 (stride 2, whose first row is never read
   but keeps the band's rows at even offsets, as the row kernel counts
   them; the small-plane kernel starts at 2 r0 - 1). */
static int64_t pdp_band_rows(int64_t stride, int64_t rows, int small_planes)
{
    return stride == 1 ? rows + 2 : 2 * rows + 2 - (small_planes != 0);
}

/* The first input row of that band (negative: above the image). */
static int64_t pdp_band_first_row(int64_t stride, int64_t r0, int small_planes)
{
    return stride == 1 ? r0 - 1 : 2 * r0 - 2 + (small_planes != 0);
}

/* Floats of a band's expanded and depthwise rows that a chunk of the row
   kernel path keeps (pdp_band): 384 KB, three quarters of the smallest L2
   seen (512 KB, Zen 3), and the same on every machine (the chunks, and so
   the tests, do not depend on the cache).  MobileNetV2 at batch 1 on the Zen
   3, in one process, alternating with whole bands: 0.929-0.973x the plan's
   time on one thread and 0.972x on two with this size; 0.968 / 0.990x with
   256 KB, 0.982 / 0.991x with 512 KB; with 192 KB (chunks of 4 rows, their
   GEMMs 128 columns wide) no gain, and the blocks alone took up to 1.27x
   their time. */
#define PDP_CHUNK_FLOATS (96 * 1024)

/* Output rows a chunk of pdp_band takes: the most (up to `rows`) whose
   expanded rows (Ce planes of pdp_band_rows, W wide) and depthwise rows (Ce
   planes of OW) fit PDP_CHUNK_FLOATS, at least 2. */
static int64_t pdp_chunk_rows(int64_t Ce, int64_t W, int64_t OW, int64_t stride, int64_t rows)
{
    int64_t chunk = rows;
    while (chunk > 2 && Ce * (pdp_band_rows(stride, chunk, 0) * W + chunk * OW) > PDP_CHUNK_FLOATS)
        --chunk;
    return chunk;
}

/* Output rows [r0, r1) of image x [C, H, W] into y [Co, OH, OW] (residual r
   in y's layout, or NULL), through this thread's buffers: e, the expanded
   band (Ce planes of pdp_band_rows rows, those outside the image zero), d,
   the depthwise band (Ce planes of r1 - r0 rows) and s, the shortcut
   convolution's rows (Co planes of r1 - r0 rows, stride 1), which then are
   the residual.  Every buffer a thread writes is its own, so no core reads
   another's lines but for the input rows at the band's edges.

   Through the row kernel the band goes b->chunk_rows output rows at a time
   (e and d hold one chunk: Ce planes of pdp_band_rows(chunk_rows) and of
   chunk_rows rows), and each chunk moves the last two expanded rows of the
   one before to the top of its planes (they are its first two: a stride-1
   chunk's rows start chunk_rows on, a stride-2 one's 2 chunk_rows on)
   instead of expanding them again.  A whole band of 32x32 planes
   expanded to 144 channels took 1.2 MB of e and d on one thread, past the
   L2, and a block in the chain found them in L3 or memory; a chunk's rows
   fit in L2, and the next chunk writes over them there.  Every output is the
   same sum in either case (the GEMMs' K blocks are checked to match, see
   pdp_run).  Returns nonzero if a GEMM could not get its workspace. */
static int pdp_band(const pdp_block *b, const float *x, const float *r, float *y, float *e,
                    float *d, float *s, int64_t r0, int64_t r1)
{
    const int64_t rows = r1 - r0, HW = b->H * b->W, OHW = b->OH * b->OW;
    int failed = 0;
    const float *residual = r ? r + r0 * b->OW : NULL;
    int64_t ldr = OHW;
    if (b->ws) {
        failed |= an_gemm_f32_epilogue_prepacked(b->Co, rows * b->W, b->C, b->ws, b->C, b->ps,
                                                 x + r0 * b->W, HW, s, rows * b->W, b->bs, NULL,
                                                 0, AN_GEMM_ACT_NONE);
        residual = s;
        ldr = rows * b->OW;
    }
    if (!b->w1) {
        an_depthwise3x3_rows_f32(x, HW, b->wd, b->bd, b->Ce, b->H, b->W, b->stride, r0, r1,
                                 b->actd, d, rows * b->OW);
        return failed | an_gemm_f32_epilogue_prepacked(b->Co, rows * b->OW, b->Ce, b->w2, b->Ce,
                                                       b->p2, d, rows * b->OW, y + r0 * b->OW,
                                                       OHW, b->b2, residual, ldr, b->act2);
    }
    /* chunks of equal size (up to one row apart), none over chunk_rows */
    const int64_t chunks = b->small_planes ? 1 : (rows + b->chunk_rows - 1) / b->chunk_rows;
    const int64_t chunk = (rows + chunks - 1) / chunks;
    const int64_t plane = pdp_band_rows(b->stride, chunk, b->small_planes) * b->W;
    for (int64_t c0 = r0; c0 < r1 && !failed; c0 += chunk) {
        const int64_t n = c0 + chunk < r1 ? chunk : r1 - c0;
        const int64_t band = pdp_band_rows(b->stride, n, b->small_planes);
        const int64_t lo = pdp_band_first_row(b->stride, c0, b->small_planes);
        const int64_t carried = c0 > r0 ? 2 : 0; /* rows already in e, at its top */
        if (carried) {
            const int64_t from = pdp_band_rows(b->stride, chunk, 0) - 2;
            for (int64_t c = 0; c < b->Ce; c++)
                memmove(e + c * plane, e + c * plane + from * b->W, sizeof(float) * (size_t)(2 * b->W));
        }
        const int64_t first = lo + carried;
        /* A stride-2 band's first row through the row kernel only keeps its
           rows at even offsets: nothing reads it, so it is left zero like the
           frame, not expanded.  The team's last band otherwise expanded one
           row more than the first (18 against 16 on a 32x32 plane), and the
           first waited for it. */
        const int64_t unread = b->stride == 2 && !b->small_planes && !carried;
        const int64_t v0 = first + unread < 0 ? 0 : first + unread;
        const int64_t v1 = lo + band < b->H ? lo + band : b->H;
        const int64_t below = v1 > first ? v1 : first;
        for (int64_t c = 0; c < b->Ce; c++) { /* the frame the depthwise layer reads as zero */
            float *p = e + c * plane;
            if (v0 > first)
                memset(p + carried * b->W, 0, sizeof(float) * (size_t)((v0 - first) * b->W));
            if (lo + band > below)
                memset(p + (below - lo) * b->W, 0, sizeof(float) * (size_t)((lo + band - below) * b->W));
        }
        if (v1 > v0)
            failed |= an_gemm_f32_epilogue_prepacked(b->Ce, (v1 - v0) * b->W, b->C, b->w1, b->C,
                                                     b->p1, x + v0 * b->W, HW,
                                                     e + (v0 - lo) * b->W, plane, b->b1, NULL, 0,
                                                     b->act1);
        if (b->small_planes) /* the band as planes of its own, its frame rows read as padding */
            an_depthwise_conv2d_forward_act_f32(e, b->wd, b->bd, 1, b->Ce, band, b->W, 1, 3, 3,
                                                b->stride, b->stride, 0, 1, 1, 1, n, b->OW,
                                                b->actd, d);
        else /* output rows 1 .. n of the chunk's own planes */
            an_depthwise3x3_rows_f32(e, plane, b->wd, b->bd, b->Ce, band, b->W, b->stride, 1,
                                     n + 1, b->actd, d, n * b->OW);
        failed |= an_gemm_f32_epilogue_prepacked(
            b->Co, n * b->OW, b->Ce, b->w2, b->Ce, b->p2, d, n * b->OW, y + c0 * b->OW, OHW,
            b->b2, residual ? residual + (c0 - r0) * b->OW : NULL, ldr, b->act2);
    }
    return failed;
}

/* Whether packed is an_conv2d_pack_weight(w) for the kernel in use now (the
   fast path reads it; anything else goes to the three calls, which check it
   and report or ignore it). */
static int packed_for_now(const an_tensor *packed, const an_tensor *w)
{
    return !packed || (packed_shape_fits(packed, w->shape[0], w->shape[1]) &&
                       packed->shape[2] == an_gemm_packed_a_rows(w->shape[0]) &&
                       an_is_contiguous(packed));
}

static int vector_of(const an_tensor *t, int64_t n)
{
    return !t || (t->ndim == 1 && t->shape[0] == n);
}

/* The block as calls: what the one-pass path must equal, and the path
   (with its checks and messages) for every layer it does not take. */
static an_tensor *pdp_by_calls(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                               an_activation act1, an_tensor *wd, an_tensor *bd, int64_t stride,
                               an_activation actd, an_tensor *w2, an_tensor *p2, an_tensor *b2,
                               an_tensor *residual, an_tensor *ws, an_tensor *ps, an_tensor *bs,
                               an_activation act2)
{
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0}, strides[2] = {stride, stride};
    an_tensor *shortcut = NULL;
    if (ws) { /* the residual, computed first as the model computes it */
        shortcut = an_conv2d_fused_prepacked(x, ws, ps, bs, strides, zero, one, 1, NULL,
                                             AN_ACTIVATION_NONE);
        if (!shortcut)
            return NULL;
        residual = shortcut;
    }
    an_tensor *e = x;
    if (w1)
        e = an_conv2d_fused_prepacked(x, w1, p1, b1, one, zero, one, 1, NULL, act1);
    else
        an_retain(x);
    if (!e) {
        an_release(shortcut);
        return NULL;
    }
    an_tensor *d = e->ndim == 4 ? an_conv2d_fused_prepacked(e, wd, NULL, bd, strides, one, one,
                                                            e->shape[1], NULL, actd)
                                : NULL;
    if (e->ndim != 4)
        an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: expected input of 4 dimensions [N, C, H, W]");
    an_release(e);
    if (!d) {
        an_release(shortcut);
        return NULL;
    }
    an_tensor *y = an_conv2d_fused_prepacked(d, w2, p2, b2, one, zero, one, 1, residual, act2);
    an_release(d);
    an_release(shortcut);
    return y;
}

/* The block on N images in bands of output rows (pdp_band): one image's
   rows split across the team, or whole images per thread; each thread's
   buffers (per_thread floats: e, then d at e_floats, then s at e_floats +
   d_floats) its own.  Returns nonzero if a GEMM could not get its
   workspace. */
static int pdp_bands(const pdp_block *b, int64_t N, const float *x, const float *r, float *y,
                     float *buffers, int64_t per_thread, int64_t e_floats, int64_t d_floats,
                     int team)
{
    const int64_t in_image = b->C * b->H * b->W, out_image = b->Co * b->OH * b->OW;
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1) reduction(| : failed)
#endif
    {
        const int t = thread_index(), size = team_size_in_region();
        float *e = buffers + t * per_thread, *d = e + e_floats, *s = d + d_floats;
        if (N == 1) {
            int64_t r0, r1;
            split_rows(b->OH, size, t, &r0, &r1);
            if (r1 > r0)
                failed |= pdp_band(b, x, r, y, e, d, s, r0, r1);
        } else {
            for (int64_t n = t; n < N && !failed; n += size)
                failed |= pdp_band(b, x + n * in_image, r ? r + n * out_image : NULL,
                                   y + n * out_image, e, d, s, 0, b->OH);
        }
    }
    return failed;
}

/* The block on one image of small planes (8x8, 4x4: the GEMMs' narrow
   path), in one parallel region instead of three calls' worth: each thread
   expands a run of the expansion's row blocks and runs the depthwise layer
   on those channels (its own rows: nothing crosses cores there); after a
   barrier it projects its run of the output's row blocks (with its rows of
   the shortcut convolution, computed first).  When the projection's sum
   runs in as many K blocks as there are threads (2 threads: an_gemm_kc
   takes a narrow product's K over 256 in two halves),
   each thread instead runs the depthwise layer on its K block's channels
   and sums that block for every output row into its own partial; after a
   barrier each thread adds the partials of its rows in block order and
   finishes them (bias, residual, activation): the other core's partials
   (Co rows) cross instead of its half of the depthwise output (Ce rows).
   Every product is split where the narrow GEMM splits it (rows or K
   blocks) and every depthwise plane is independent, so the bits are those
   of the three calls for any team.  e [Ce, H*W], d [Ce, OH*OW] and s [Co,
   H*W] are buffers for the whole image, partials team x part_floats
   floats; row_block1 / row_block2 the GEMMs' row blocks (expansion;
   projection and shortcut), kc2 the projection's K block. */
static void pdp_small_planes(const pdp_block *b, const float *x, const float *r, float *y,
                             float *e, float *d, float *s, float *partials, int64_t part_floats,
                             int64_t row_block1, int64_t row_block2, int64_t kc2, int team)
{
    const int64_t HW = b->H * b->W, OHW = b->OH * b->OW;
    const int64_t blocks1 = (b->Ce + row_block1 - 1) / row_block1;
    const int64_t blocks2 = (b->Co + row_block2 - 1) / row_block2;
    const int64_t k_blocks = (b->Ce + kc2 - 1) / kc2;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
        const int t = thread_index(), size = team_size_in_region();
        const int k_split = size > 1 && k_blocks == size;
        int64_t b0, b1, c0, c1, o0, o1;
        split_rows(blocks2, size, t, &b0, &b1);
        o0 = b0 * row_block2, o1 = b1 * row_block2 < b->Co ? b1 * row_block2 : b->Co;
        if (b->ws)
            an_gemm_f32_epilogue_prepacked_rows(b->Co, HW, b->C, b->ws, b->C, b->ps, x, HW, s, HW,
                                                b->bs, NULL, 0, AN_GEMM_ACT_NONE, o0, o1);
        split_rows(blocks1, size, t, &b0, &b1);
        c0 = b0 * row_block1, c1 = b1 * row_block1 < b->Ce ? b1 * row_block1 : b->Ce;
        const float *planes = x;
        if (b->w1) {
            an_gemm_f32_epilogue_prepacked_rows(b->Ce, HW, b->C, b->w1, b->C, b->p1, x, HW, e, HW,
                                                b->b1, NULL, 0, b->act1, c0, c1);
            planes = e;
        }
        if (k_split) { /* this thread's K block of channels, expanded partly by another */
            c0 = t * kc2;
            c1 = c0 + kc2 < b->Ce ? c0 + kc2 : b->Ce;
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
        if (c1 > c0)
            an_depthwise_conv2d_forward_act_f32(planes + c0 * HW, b->wd + c0 * 9,
                                                b->bd ? b->bd + c0 : NULL, 1, c1 - c0, b->H, b->W,
                                                1, 3, 3, b->stride, b->stride, 1, 1, 1, 1, b->OH,
                                                b->OW, b->actd, d + c0 * OHW);
        const float *residual = b->ws ? s : r;
        if (k_split) {
            an_gemm_f32_prepacked_k_range(b->Co, OHW, b->Ce, b->w2, b->Ce, b->p2, d, OHW,
                                          partials + t * part_floats, OHW, c0, c1);
#ifdef _OPENMP
#pragma omp barrier
#endif
            for (int64_t row = o0; row < o1; ++row) { /* ((P0 + P1) + P2) ..., as the GEMM adds */
                float *out = y + row * OHW;
                const float *first = partials + row * OHW;
                for (int64_t j = 0; j < OHW; ++j) out[j] = first[j];
                for (int u = 1; u < size; ++u) {
                    const float *part = partials + u * part_floats + row * OHW;
                    for (int64_t j = 0; j < OHW; ++j) out[j] = part[j] + out[j];
                }
            }
            if (o1 > o0)
                an_epilogue_rows(y + o0 * OHW, o1 - o0, OHW, OHW, b->b2 ? b->b2 + o0 : NULL,
                                 residual ? residual + o0 * OHW : NULL, OHW, b->act2);
        } else {
#ifdef _OPENMP
            /* (a team of one skips it: libgomp's barrier makes a futex
               call even then, 0.2-0.4 us) */
            if (size > 1) {
#pragma omp barrier
            }
#endif
            an_gemm_f32_epilogue_prepacked_rows(b->Co, OHW, b->Ce, b->w2, b->Ce, b->p2, d, OHW, y,
                                                OHW, b->b2, residual, OHW, b->act2, o0, o1);
        }
    }
}

static an_tensor *pdp_run(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                          an_activation act1, an_tensor *wd, an_tensor *bd, int64_t stride,
                          an_activation actd, an_tensor *w2, an_tensor *p2, an_tensor *b2,
                          an_tensor *residual, an_tensor *ws, an_tensor *ps, an_tensor *bs,
                          an_activation act2)
{
    if (an_check_not_null(x, "conv_pw_dw_pw", "input") ||
        an_check_not_null(wd, "conv_pw_dw_pw", "depthwise weight") ||
        an_check_not_null(w2, "conv_pw_dw_pw", "projection weight"))
        return NULL;
    if (!ws && (ps || bs)) {
        an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: a packed shortcut weight or a shortcut bias "
                                   "without the shortcut weight");
        return NULL;
    }
    an_tensor *all[13] = {x, w1, p1, b1, wd, bd, w2, p2, b2, residual, ws, ps, bs};
    if (an_needs_grad(13, all)) {
        an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: the fused block is for inference only, but an "
                                   "input requires grad");
        return NULL;
    }
    const an_activation acts[3] = {act1, actd, act2};
    for (int i = 0; i < 3; i++)
        if (acts[i] != AN_ACTIVATION_NONE && acts[i] != AN_ACTIVATION_RELU &&
            acts[i] != AN_ACTIVATION_RELU6) {
            an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: unknown activation code %d", (int)acts[i]);
            return NULL;
        }
    /* the one-pass path's layers; anything else (and every error) takes
       the three calls */
    const int64_t C = x->ndim == 4 ? x->shape[1] : 0, Ce = wd->shape[0];
    const int fits =
        x->ndim == 4 && x->shape[0] >= 1 && C >= 1 && (stride == 1 || stride == 2) &&
        (w1 ? w1->ndim == 4 && w1->shape[0] == Ce && w1->shape[1] == C && w1->shape[2] == 1 &&
                  w1->shape[3] == 1 && packed_for_now(p1, w1) && vector_of(b1, Ce)
            : !p1 && !b1 && C == Ce) &&
        wd->ndim == 4 && Ce >= 1 && wd->shape[1] == 1 && wd->shape[2] == 3 && wd->shape[3] == 3 &&
        vector_of(bd, Ce) && w2->ndim == 4 && w2->shape[0] >= 1 && w2->shape[1] == Ce &&
        w2->shape[2] == 1 && w2->shape[3] == 1 && packed_for_now(p2, w2) &&
        vector_of(b2, w2->shape[0]) &&
        (!ws || (stride == 1 && ws->ndim == 4 && ws->shape[0] == w2->shape[0] &&
                 ws->shape[1] == C && ws->shape[2] == 1 && ws->shape[3] == 1 &&
                 packed_for_now(ps, ws) && vector_of(bs, w2->shape[0])));
    const int64_t OH = fits ? (x->shape[2] - 1) / stride + 1 : 0;
    const int64_t OW = fits ? (x->shape[3] - 1) / stride + 1 : 0;
    const int threads = team_size();
    /* one image: its output rows in one band per thread (each expands the
       input rows its band reads, the edge rows twice over the team); several:
       whole images per thread */
    const int64_t N = fits ? x->shape[0] : 0;
    const int team = N == 1 ? (OH < threads ? (int)OH : threads) : (N < threads ? (int)N : threads);
    const int64_t max_rows = N == 1 ? (OH + team - 1) / team : OH;
    int row_kernel = fits && an_depthwise3x3_rows_applies(x->shape[2], x->shape[3], stride);
    /* Stride 2 onto 8-wide planes too (192x16x16 -> 64x8x8, 2 threads: 38 ->
       28 us; the same on 1).  Not 8x8 onto 4x4 in bands (two bands of 4 rows
       expand 5 of the 8 input rows each: 42 -> 58 us), nor stride 1 on 8x8
       (no faster than the three calls on 2 threads, slower on 1): those take
       pdp_small_planes below. */
    int small_planes = fits && !row_kernel && w1 && stride == 2 && x->shape[3] >= 16 &&
                       an_depthwise3x3_band_applies(pdp_band_rows(stride, max_rows, 1),
                                                    x->shape[3], stride);
    /* A band's products have fewer columns than the three calls' (whole
       planes: a band of `rows` output rows, its input rows clipped by up to
       two at the image's edges); their sums must still run in the same K
       blocks (an_gemm_kc). */
    int band_blocks_match = 1;
    const int64_t chunk_rows =
        row_kernel && w1 ? pdp_chunk_rows(Ce, x->shape[3], OW, stride, max_rows) : max_rows;
    if (row_kernel || small_planes) {
        const int64_t W = x->shape[3], HW = x->shape[2] * W, OHW = OH * OW, Co = w2->shape[0];
        const int64_t fewest = N == 1 && max_rows > 1 ? max_rows - 1 : max_rows;
        const int chunked = chunk_rows < max_rows;
        /* output rows: a band's (fewest to max_rows), a chunk's (any count
           up to chunk_rows), the whole plane */
        band_blocks_match = an_gemm_kc_same_over(Co, (chunked ? 1 : fewest) * OW, OHW, Ce) &&
                            (!ws || an_gemm_kc_same_over(Co, fewest * W, HW, C));
        if (w1) { /* expanded rows: a band's, up to two clipped at the image's edges; a
                     chunk's, any count up to its band's; the whole plane */
            const int64_t band_least = pdp_band_rows(stride, fewest, small_planes) - 2;
            const int64_t most = pdp_band_rows(stride, max_rows, small_planes) * W;
            band_blocks_match &= an_gemm_kc_same_over(
                Ce, (chunked || band_least < 1 ? 1 : band_least) * W, most > HW ? most : HW, C);
        }
    }
    const int residual_fits = !residual || (residual->ndim == 4 &&
                                            residual->shape[0] == x->shape[0] &&
                                            residual->shape[1] == w2->shape[0] &&
                                            residual->shape[2] == OH && residual->shape[3] == OW);
    /* one image of small planes whose three products all take the narrow
       GEMM: one parallel region (pdp_small_planes) */
    int64_t row_block1 = 0, row_block2 = 0, row_block_s = 0;
    const int narrow =
        fits && !row_kernel && !small_planes && N == 1 &&
        (!w1 || an_gemm_narrow_blocks(Ce, x->shape[2] * x->shape[3], C, p1 != NULL,
                                      &row_block1) > 0) &&
        an_gemm_narrow_blocks(w2->shape[0], OH * OW, Ce, p2 != NULL, &row_block2) > 0 &&
        (!ws || (an_gemm_narrow_blocks(w2->shape[0], x->shape[2] * x->shape[3], C, ps != NULL,
                                       &row_block_s) > 0 &&
                 row_block_s == row_block2));
    if (!w1)
        row_block1 = 1;
    if (!((row_kernel || small_planes) && band_blocks_match) && !narrow)
        row_kernel = small_planes = 0;
    if (!(row_kernel || small_planes || narrow) || !residual_fits)
        return pdp_by_calls(x, w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, residual, ws,
                            ps, bs, act2);

    const int64_t H = x->shape[2], W = x->shape[3], Co = w2->shape[0];
    /* each thread's buffers on pages of their own */
    const int64_t page = 1024;
    const int64_t e_floats =
        w1 ? (Ce * pdp_band_rows(stride, chunk_rows, small_planes) * W + page - 1) / page * page
           : 0;
    const int64_t d_floats = (Ce * (w1 ? chunk_rows : max_rows) * OW + page - 1) / page * page;
    const int64_t s_floats = ws ? (Co * max_rows * OW + page - 1) / page * page : 0;
    int64_t per_thread = e_floats + d_floats + s_floats;
    int buffer_team = team;
    const int64_t part_floats = (Co * OH * OW + 15) / 16 * 16;
    if (narrow) { /* whole-image buffers the team shares, and a partial sum per thread */
        per_thread = (w1 ? Ce * H * W : 0) + (Ce * OH * OW + 15) / 16 * 16 +
                     (ws ? Co * H * W : 0) + threads * part_floats;
        buffer_team = 1;
    }
    an_tensor *xc = an_contiguous(x), *w1c = NULL, *b1c = NULL, *wdc = NULL, *bdc = NULL;
    an_tensor *w2c = NULL, *b2c = NULL, *rc = NULL, *wsc = NULL, *bsc = NULL, *out = NULL;
    int ok = xc != NULL;
    if (ok && w1) ok = (w1c = an_contiguous(w1)) != NULL && (!b1 || (b1c = an_contiguous(b1)) != NULL);
    if (ok) ok = (wdc = an_contiguous(wd)) != NULL && (!bd || (bdc = an_contiguous(bd)) != NULL);
    if (ok) ok = (w2c = an_contiguous(w2)) != NULL && (!b2 || (b2c = an_contiguous(b2)) != NULL);
    if (ok && residual) ok = (rc = an_contiguous(residual)) != NULL;
    if (ok && ws) ok = (wsc = an_contiguous(ws)) != NULL && (!bs || (bsc = an_contiguous(bs)) != NULL);
    int64_t shape[4] = {N, Co, OH, OW};
    if (ok) ok = (out = an_empty(4, shape)) != NULL;
    float *buffers = ok ? an_alloc(sizeof(float) * (size_t)(buffer_team * per_thread)) : NULL;
    ok = ok && buffers;
    if (ok) {
        const pdp_block b = {C, H, W, Ce, Co, OH, OW, stride,
                             w1c ? an_data_ptr(w1c) : NULL, p1 ? an_data_ptr(p1) : NULL,
                             b1c ? an_data_ptr(b1c) : NULL, an_data_ptr(wdc),
                             bdc ? an_data_ptr(bdc) : NULL, an_data_ptr(w2c),
                             p2 ? an_data_ptr(p2) : NULL, b2c ? an_data_ptr(b2c) : NULL,
                             wsc ? an_data_ptr(wsc) : NULL, ps ? an_data_ptr(ps) : NULL,
                             bsc ? an_data_ptr(bsc) : NULL, gemm_act(act1), gemm_act(actd),
                             gemm_act(act2), small_planes, chunk_rows};
        const float *px = an_data_ptr(xc), *pr = rc ? an_data_ptr(rc) : NULL;
        float *py = an_data_ptr(out);
        int failed = 0;
        if (narrow) {
            float *d = buffers + (w1 ? Ce * H * W : 0), *sc = d + (Ce * OH * OW + 15) / 16 * 16;
            float *partials = sc + (ws ? Co * H * W : 0);
            pdp_small_planes(&b, px, pr, py, buffers, d, sc, partials, part_floats, row_block1,
                             row_block2, an_gemm_kc(Co, OH * OW, Ce),
                             threads < Ce ? threads : (int)Ce);
        } else {
            failed = pdp_bands(&b, N, px, pr, py, buffers, per_thread, e_floats, d_floats, team);
        }
        if (failed) {
            an_set_error(AN_ERR_MEMORY, "conv_pw_dw_pw: out of memory for the GEMM workspace");
            ok = 0;
        }
    }
    an_free(buffers);
    an_release(xc), an_release(w1c), an_release(b1c), an_release(wdc), an_release(bdc);
    an_release(w2c), an_release(b2c), an_release(rc), an_release(wsc), an_release(bsc);
    if (!ok) {
        an_release(out);
        return NULL;
    }
    return out;
}

an_tensor *an_conv_pw_dw_pw(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                            an_activation act1, an_tensor *wd, an_tensor *bd, int64_t stride,
                            an_activation actd, an_tensor *w2, an_tensor *p2, an_tensor *b2,
                            an_tensor *residual, an_activation act2)
{
    return pdp_run(x, w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, residual, NULL, NULL,
                   NULL, act2);
}

an_tensor *an_conv_pw_dw_pw_shortcut(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                                     an_activation act1, an_tensor *wd, an_tensor *bd,
                                     int64_t stride, an_activation actd, an_tensor *w2,
                                     an_tensor *p2, an_tensor *b2, an_tensor *ws, an_tensor *ps,
                                     an_tensor *bs, an_activation act2)
{
    if (an_check_not_null(ws, "conv_pw_dw_pw", "shortcut weight"))
        return NULL;
    return pdp_run(x, w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, NULL, ws, ps, bs, act2);
}
