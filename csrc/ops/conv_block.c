/* conv_block.c — an inverted-residual block (1x1 expansion, depthwise 3x3,
   1x1 projection, and the shortcut) in one call for inference: see
   an_conv_pw_dw_pw in appealnet.h. */
#include "conv_internal.h"
#include "../kernels/depthwise.h"
#include <stdlib.h>
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
   kernel path keeps (pdp_band): 512 KB, half the Zen 5's L2 and all of the
   Zen 3's, and the same on every machine (the chunks, and so the tests, do
   not depend on the cache; the bits do not depend on the chunks).  On the
   Zen 3, MobileNetV2 at batch 1 in one process, alternating with whole
   bands: 0.929-0.973x the plan's time on one thread and 0.972x on two with
   384 KB; 0.968 / 0.990x with 256 KB, 0.982 / 0.991x with 512 KB; with 192
   KB (chunks of 4 rows, their GEMMs 128 columns wide) no gain, and the
   blocks alone took up to 1.27x their time.  On the Zen 5 (1 MB of L2) 384
   KB cut the one-thread band of a 16x16 block (192 expanded channels) into
   two chunks whose GEMMs end in half tiles (144 and 96 columns): 40.9 us
   against 35.0 for the three calls.  512 KB keeps that band whole (36.5
   us); the plan, old and new builds alternating, 0.984x the time on one
   thread (8 of 10 rounds faster), 0.997x on two (12 of 16); 768 KB gave the
   same. */
#define PDP_CHUNK_FLOATS (128 * 1024)

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
                       packed->shape[2] == an_gemm_packed_a_rows(w->shape[0], w->shape[1]) &&
                       an_is_contiguous(packed));
}

static int vector_of(const an_tensor *t, int64_t n)
{
    return !t || (t->ndim == 1 && t->shape[0] == n);
}

/* The block as calls: what the one-pass path must equal, and the path
   (with its checks and messages) for every layer it does not take. */
static an_tensor *pdp_by_calls(an_tensor *x, const an_pw_dw_pw_block *k, an_tensor *residual)
{
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0}, strides[2] = {k->stride, k->stride};
    an_tensor *shortcut = NULL;
    if (k->ws) { /* the residual, computed first as the model computes it */
        shortcut = an_conv2d_fused_prepacked(x, k->ws, k->ps, k->bs, strides, zero, one, 1, NULL,
                                             AN_ACTIVATION_NONE);
        if (!shortcut)
            return NULL;
        residual = shortcut;
    }
    an_tensor *e = x;
    if (k->w1)
        e = an_conv2d_fused_prepacked(x, k->w1, k->p1, k->b1, one, zero, one, 1, NULL, k->act1);
    else
        an_retain(x);
    if (!e) {
        an_release(shortcut);
        return NULL;
    }
    an_tensor *d = e->ndim == 4 ? an_conv2d_fused_prepacked(e, k->wd, NULL, k->bd, strides, one,
                                                            one, e->shape[1], NULL, k->actd)
                                : NULL;
    if (e->ndim != 4)
        an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: expected input of 4 dimensions [N, C, H, W]");
    an_release(e);
    if (!d) {
        an_release(shortcut);
        return NULL;
    }
    an_tensor *y = an_conv2d_fused_prepacked(d, k->w2, k->p2, k->b2, one, zero, one, 1, residual,
                                             k->act2);
    an_release(d);
    an_release(shortcut);
    return y;
}

/* How a block runs (pdp_layout_for). */
typedef enum {
    PDP_BY_CALLS, /* pdp_by_calls */
    PDP_BANDS,    /* bands of output rows, or whole images, per thread (pdp_band) */
    PDP_NARROW    /* one image of small planes, the threads meeting inside (pdp_small_planes) */
} pdp_path;

/* A block's path on an input of one shape and thread count, and the sizes
   its run needs; b's pointers are set by pdp_bind. */
typedef struct {
    pdp_block b;
    pdp_path path;
    int64_t N;
    int team; /* threads that take part */
    /* PDP_BANDS: each thread's buffers (pdp_band's e, d and s) */
    int64_t per_thread, e_floats, d_floats;
    /* PDP_NARROW: the GEMMs' row blocks (expansion, projection, shortcut),
       the projection's K block and each thread's partial sum */
    int64_t row_block1, row_block2, row_block_s, kc2, part_floats;
    int64_t workspace_floats; /* all the buffers */
} pdp_layout;

/* The path of block k on input x [N, C, H, W] (xs) with `threads` threads,
   its residual's shape rs (NULL: none). */
static void pdp_layout_for(pdp_layout *L, const int64_t xs[4], const an_pw_dw_pw_block *k,
                           const int64_t *rs, int threads)
{
    memset(L, 0, sizeof *L);
    L->path = PDP_BY_CALLS;
    const an_tensor *w1 = k->w1, *wd = k->wd, *w2 = k->w2, *ws = k->ws;
    const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], Ce = wd->shape[0];
    const int64_t stride = k->stride;
    const int fits =
        N >= 1 && C >= 1 && H >= 1 && W >= 1 && (stride == 1 || stride == 2) &&
        (w1 ? w1->ndim == 4 && w1->shape[0] == Ce && w1->shape[1] == C && w1->shape[2] == 1 &&
                  w1->shape[3] == 1 && packed_for_now(k->p1, w1) && vector_of(k->b1, Ce)
            : !k->p1 && !k->b1 && C == Ce) &&
        wd->ndim == 4 && Ce >= 1 && wd->shape[1] == 1 && wd->shape[2] == 3 && wd->shape[3] == 3 &&
        vector_of(k->bd, Ce) && w2->ndim == 4 && w2->shape[0] >= 1 && w2->shape[1] == Ce &&
        w2->shape[2] == 1 && w2->shape[3] == 1 && packed_for_now(k->p2, w2) &&
        vector_of(k->b2, w2->shape[0]) &&
        (!ws || (stride == 1 && ws->ndim == 4 && ws->shape[0] == w2->shape[0] &&
                 ws->shape[1] == C && ws->shape[2] == 1 && ws->shape[3] == 1 &&
                 packed_for_now(k->ps, ws) && vector_of(k->bs, w2->shape[0])));
    if (!fits)
        return;
    const int64_t OH = (H - 1) / stride + 1, OW = (W - 1) / stride + 1, Co = w2->shape[0];
    const int64_t HW = H * W, OHW = OH * OW;
    /* one image: its output rows in one band per thread (each expands the
       input rows its band reads, the edge rows twice over the team); several:
       whole images per thread */
    const int team = N == 1 ? (OH < threads ? (int)OH : threads) : (N < threads ? (int)N : threads);
    const int64_t max_rows = N == 1 ? (OH + team - 1) / team : OH;
    const int row_kernel = an_depthwise3x3_rows_applies(H, W, stride);
    /* Stride 2 onto 8-wide planes too (192x16x16 -> 64x8x8, 2 threads: 38 ->
       28 us; the same on 1).  Not 8x8 onto 4x4 in bands (two bands of 4 rows
       expand 5 of the 8 input rows each: 42 -> 58 us), nor stride 1 on 8x8
       (no faster than the three calls on 2 threads, slower on 1): those take
       pdp_small_planes below. */
    const int small_planes = !row_kernel && w1 && stride == 2 && W >= 16 &&
                             an_depthwise3x3_band_applies(pdp_band_rows(stride, max_rows, 1), W,
                                                          stride);
    /* A band's products have fewer columns than the three calls' (whole
       planes: a band of `rows` output rows, its input rows clipped by up to
       two at the image's edges); their sums must still run in the same K
       blocks (an_gemm_kc). */
    int band_blocks_match = 1;
    const int64_t chunk_rows = row_kernel && w1 ? pdp_chunk_rows(Ce, W, OW, stride, max_rows)
                                                : max_rows;
    if (row_kernel || small_planes) {
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
    const int residual_fits =
        !rs || (rs[0] == N && rs[1] == Co && rs[2] == OH && rs[3] == OW);
    /* one image of small planes whose three products all take the narrow
       GEMM: one parallel region (pdp_small_planes) */
    int64_t row_block1 = 1, row_block2 = 0, row_block_s = 0;
    const int narrow =
        !row_kernel && !small_planes && N == 1 &&
        (!w1 || an_gemm_narrow_blocks(Ce, HW, C, k->p1 != NULL, &row_block1) > 0) &&
        an_gemm_narrow_blocks(Co, OHW, Ce, k->p2 != NULL, &row_block2) > 0 &&
        (!ws || an_gemm_narrow_blocks(Co, HW, C, k->ps != NULL, &row_block_s) > 0);
    const int bands = (row_kernel || small_planes) && band_blocks_match;
    if (!residual_fits || !(bands || narrow))
        return;

    const pdp_block b = {C, H, W, Ce, Co, OH, OW, stride,
                         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                         gemm_act(k->act1), gemm_act(k->actd), gemm_act(k->act2),
                         bands && small_planes, chunk_rows};
    L->b = b;
    L->N = N;
    if (bands) {
        /* each thread's buffers on pages of their own */
        const int64_t page = 1024;
        L->e_floats = w1 ? (Ce * pdp_band_rows(stride, chunk_rows, small_planes) * W + page - 1) /
                               page * page
                         : 0;
        L->d_floats = (Ce * (w1 ? chunk_rows : max_rows) * OW + page - 1) / page * page;
        const int64_t s_floats = ws ? (Co * max_rows * OW + page - 1) / page * page : 0;
        L->per_thread = L->e_floats + L->d_floats + s_floats;
        L->path = PDP_BANDS;
        L->team = team;
        L->workspace_floats = team * L->per_thread;
    } else { /* whole-image buffers the team shares, and a partial sum per thread */
        L->row_block1 = row_block1; /* 1 without an expansion */
        L->row_block2 = row_block2;
        L->row_block_s = row_block_s;
        L->kc2 = an_gemm_kc(Co, OHW, Ce);
        L->part_floats = (Co * OHW + 15) / 16 * 16;
        L->path = PDP_NARROW;
        L->team = threads < Ce ? threads : (int)Ce;
        L->workspace_floats = (w1 ? Ce * HW : 0) + (Ce * OHW + 15) / 16 * 16 +
                              (ws ? Co * HW : 0) + threads * L->part_floats;
    }
}

/* The block on one image of small planes (8x8, 4x4: the GEMMs' narrow
   path), in one parallel region instead of three calls' worth: each thread
   computes a run of the shortcut convolution's row blocks (read as the
   residual after a barrier, so its rows need not be those the thread
   projects: the two products may take tiles of different heights), expands
   a run of the expansion's row blocks and runs the depthwise layer on those
   channels (its own rows: nothing crosses cores there); after a barrier it
   projects its run of the output's row blocks.  When the projection's sum
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
   H*W] are buffers for the whole image, partials a part_floats sum per
   thread.  Thread t of `size`, every one of which makes this call (it
   holds barriers). */
static void pdp_small_planes(const pdp_layout *L, const float *x, const float *r, float *y,
                             float *buffers, int t, int size)
{
    const pdp_block *b = &L->b;
    const int64_t HW = b->H * b->W, OHW = b->OH * b->OW;
    float *e = buffers, *d = e + (b->w1 ? b->Ce * HW : 0);
    float *s = d + (b->Ce * OHW + 15) / 16 * 16, *partials = s + (b->ws ? b->Co * HW : 0);
    const int64_t row_block1 = L->row_block1, row_block2 = L->row_block2, kc2 = L->kc2;
    const int64_t part_floats = L->part_floats;
    const int64_t blocks1 = (b->Ce + row_block1 - 1) / row_block1;
    const int64_t blocks2 = (b->Co + row_block2 - 1) / row_block2;
    const int64_t k_blocks = (b->Ce + kc2 - 1) / kc2;
    const int k_split = size > 1 && k_blocks == size;
    int64_t b0, b1, c0, c1, o0, o1;
    if (b->ws) {
        const int64_t row_block_s = L->row_block_s;
        split_rows((b->Co + row_block_s - 1) / row_block_s, size, t, &b0, &b1);
        o0 = b0 * row_block_s, o1 = b1 * row_block_s < b->Co ? b1 * row_block_s : b->Co;
        an_gemm_f32_epilogue_prepacked_rows(b->Co, HW, b->C, b->ws, b->C, b->ps, x, HW, s, HW,
                                            b->bs, NULL, 0, AN_GEMM_ACT_NONE, o0, o1);
    }
    split_rows(blocks2, size, t, &b0, &b1);
    o0 = b0 * row_block2, o1 = b1 * row_block2 < b->Co ? b1 * row_block2 : b->Co;
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
                                            b->bd ? b->bd + c0 : NULL, 1, c1 - c0, b->H, b->W, 1,
                                            3, 3, b->stride, b->stride, 1, 1, 1, 1, b->OH, b->OW,
                                            b->actd, d + c0 * OHW);
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
        /* (a team of one skips it: libgomp's barrier makes a futex call
           even then, 0.2-0.4 us) */
        if (size > 1) {
#pragma omp barrier
        }
#endif
        an_gemm_f32_epilogue_prepacked_rows(b->Co, OHW, b->Ce, b->w2, b->Ce, b->p2, d, OHW, y,
                                            OHW, b->b2, residual, OHW, b->act2, o0, o1);
    }
}

/* Block k's share for thread t of a team of `size` in a parallel region
   (as many as L->team, or more on PDP_BANDS, the rest idle), the block on
   x [N, C, H, W] into y [N, Co, OH, OW] (residual r in y's layout, or NULL)
   through L->workspace_floats of buffers.  Returns nonzero if a GEMM could
   not get its workspace. */
static int pdp_share(const pdp_layout *L, const float *x, const float *r, float *y,
                     float *buffers, int t, int size)
{
    const pdp_block *b = &L->b;
    if (L->path == PDP_NARROW) {
        pdp_small_planes(L, x, r, y, buffers, t, size);
        return 0;
    }
    const int team = L->team < size ? L->team : size;
    if (t >= team)
        return 0;
    float *e = buffers + t * L->per_thread, *d = e + L->e_floats, *s = d + L->d_floats;
    int failed = 0;
    if (L->N == 1) { /* the image's rows in one band per thread */
        int64_t r0, r1;
        split_rows(b->OH, team, t, &r0, &r1);
        if (r1 > r0)
            failed |= pdp_band(b, x, r, y, e, d, s, r0, r1);
    } else { /* whole images per thread */
        const int64_t in_image = b->C * b->H * b->W, out_image = b->Co * b->OH * b->OW;
        for (int64_t n = t; n < L->N && !failed; n += team)
            failed |= pdp_band(b, x + n * in_image, r ? r + n * out_image : NULL,
                               y + n * out_image, e, d, s, 0, b->OH);
    }
    return failed;
}

/* Block k's checks that do not depend on its input (for a chain: once,
   when it is made).  Nonzero, with the error set, if one fails. */
static int pdp_check_block(const an_pw_dw_pw_block *k)
{
    if (an_check_not_null(k->wd, "conv_pw_dw_pw", "depthwise weight") ||
        an_check_not_null(k->w2, "conv_pw_dw_pw", "projection weight"))
        return 1;
    if (!k->ws && (k->ps || k->bs)) {
        an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: a packed shortcut weight or a shortcut bias "
                                   "without the shortcut weight");
        return 1;
    }
    const an_activation acts[3] = {k->act1, k->actd, k->act2};
    for (int i = 0; i < 3; i++)
        if (acts[i] != AN_ACTIVATION_NONE && acts[i] != AN_ACTIVATION_RELU &&
            acts[i] != AN_ACTIVATION_RELU6) {
            an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: unknown activation code %d", (int)acts[i]);
            return 1;
        }
    return 0;
}

/* Nonzero, with the error set, if an input of block k (x, its residual r
   or a weight) requires grad. */
static int pdp_check_no_grad(an_tensor *x, const an_pw_dw_pw_block *k, an_tensor *r)
{
    an_tensor *all[13] = {x, k->w1, k->p1, k->b1, k->wd, k->bd, k->w2, k->p2, k->b2, r,
                          k->ws, k->ps, k->bs};
    if (an_needs_grad(13, all)) {
        an_set_error(AN_ERR_VALUE, "conv_pw_dw_pw: the fused block is for inference only, but an "
                                   "input requires grad");
        return 1;
    }
    return 0;
}

/* Block k's tensors as its kernels read them (contiguous: the same tensor
   retained, or a copy) into held[0 .. PDP_HELD) and L->b's pointers.  Zero,
   with the error set, if a copy could not be made (held is then released). */
#define PDP_HELD 8
static int pdp_bind(pdp_layout *L, const an_pw_dw_pw_block *k, an_tensor *held[PDP_HELD])
{
    an_tensor *from[PDP_HELD] = {k->w1, k->b1, k->wd, k->bd, k->w2, k->b2, k->ws, k->bs};
    const float *ptr[PDP_HELD];
    int ok = 1;
    for (int i = 0; i < PDP_HELD; i++) {
        held[i] = from[i] && ok ? an_contiguous(from[i]) : NULL;
        ok = ok && (!from[i] || held[i]);
        ptr[i] = held[i] ? an_data_ptr(held[i]) : NULL;
    }
    if (!ok) {
        for (int i = 0; i < PDP_HELD; i++) an_release(held[i]);
        return 0;
    }
    pdp_block *b = &L->b;
    b->w1 = ptr[0], b->b1 = ptr[1], b->wd = ptr[2], b->bd = ptr[3], b->w2 = ptr[4], b->b2 = ptr[5];
    b->ws = ptr[6], b->bs = ptr[7];
    /* the packed copies: contiguous, or the block takes the calls (packed_for_now) */
    b->p1 = k->p1 ? an_data_ptr(k->p1) : NULL;
    b->p2 = k->p2 ? an_data_ptr(k->p2) : NULL;
    b->ps = k->ps ? an_data_ptr(k->ps) : NULL;
    return 1;
}

static void pdp_unbind(an_tensor *held[PDP_HELD])
{
    for (int i = 0; i < PDP_HELD; i++) an_release(held[i]);
}

static int64_t round16(int64_t floats)
{
    return (floats + 15) / 16 * 16;
}

/* blocks[0 .. n) (laid out in L by pdp_layout_for, each reading the one
   before's output) on x, in one parallel region of `team` threads: between
   blocks, a barrier; the outputs in between in two buffers taking turns (a
   block's input is the one before's output, its residual too, and the
   block after it writes over its input only once every thread has passed
   the barrier after it).  The first block's residual is `residual` when
   given, a block's own input where residual_from_input is set.  `op`
   names the caller in errors. */
static an_tensor *pdp_run_blocks(const an_pw_dw_pw_block *blocks, pdp_layout *L, int64_t n,
                                 an_tensor *x, an_tensor *residual, int team, const char *op)
{
    an_tensor **held = calloc((size_t)(n * PDP_HELD), sizeof *held);
    if (!held) {
        an_set_error(AN_ERR_MEMORY, "%s: out of memory", op);
        return NULL;
    }
    int64_t bound = 0, workspace = 0, between = 0;
    int ok = 1;
    for (; bound < n && ok; bound++)
        ok = pdp_bind(&L[bound], &blocks[bound], held + bound * PDP_HELD);
    if (!ok)
        bound--; /* the one that failed released its own */
    for (int64_t i = 0; i < n; i++) {
        const pdp_layout *l = &L[i];
        if (round16(l->workspace_floats) > workspace)
            workspace = round16(l->workspace_floats);
        const int64_t out = round16(l->N * l->b.Co * l->b.OH * l->b.OW);
        if (i + 1 < n && out > between)
            between = out;
    }
    const pdp_layout *last = &L[n - 1];
    const int64_t shape[4] = {last->N, last->b.Co, last->b.OH, last->b.OW};
    an_tensor *xc = ok ? an_contiguous(x) : NULL, *rc = NULL, *out = NULL;
    ok = ok && xc && (!residual || (rc = an_contiguous(residual)) != NULL) &&
         (out = an_empty(4, shape)) != NULL;
    float *buffers = ok ? an_alloc(sizeof(float) * (size_t)(workspace + 2 * between)) : NULL;
    ok = ok && buffers;
    if (ok) {
        const float *px = an_data_ptr(xc), *pr = rc ? an_data_ptr(rc) : NULL;
        float *py = an_data_ptr(out), *turns = buffers + workspace;
        int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1) reduction(| : failed)
#endif
        {
            const int t = thread_index(), size = team_size_in_region();
            const float *in = px;
            for (int64_t i = 0; i < n; i++) {
                float *o = i + 1 == n ? py : turns + (i & 1) * between;
                const float *r = i == 0 && pr ? pr : blocks[i].residual_from_input ? in : NULL;
                failed |= pdp_share(&L[i], in, r, o, buffers, t, size);
#ifdef _OPENMP
                if (i + 1 < n && size > 1) {
#pragma omp barrier
                }
#endif
                in = o;
            }
        }
        if (failed) {
            an_set_error(AN_ERR_MEMORY, "%s: out of memory for the GEMM workspace", op);
            ok = 0;
        }
    }
    an_free(buffers);
    an_release(xc);
    an_release(rc);
    for (int64_t i = 0; i < bound; i++) pdp_unbind(held + i * PDP_HELD);
    free(held);
    if (!ok) {
        an_release(out);
        return NULL;
    }
    return out;
}

static an_tensor *pdp_run(an_tensor *x, const an_pw_dw_pw_block *k, an_tensor *residual)
{
    if (an_check_not_null(x, "conv_pw_dw_pw", "input") || pdp_check_block(k) ||
        pdp_check_no_grad(x, k, residual))
        return NULL;
    pdp_layout L;
    L.path = PDP_BY_CALLS;
    static const int64_t no_shape[4] = {-1, -1, -1, -1};
    if (x->ndim == 4)
        pdp_layout_for(&L, x->shape, k,
                       residual ? (residual->ndim == 4 ? residual->shape : no_shape) : NULL,
                       team_size());
    if (L.path == PDP_BY_CALLS)
        return pdp_by_calls(x, k, residual);
    return pdp_run_blocks(k, &L, 1, x, residual, L.team, "conv_pw_dw_pw");
}

an_tensor *an_conv_pw_dw_pw(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                            an_activation act1, an_tensor *wd, an_tensor *bd, int64_t stride,
                            an_activation actd, an_tensor *w2, an_tensor *p2, an_tensor *b2,
                            an_tensor *residual, an_activation act2)
{
    const an_pw_dw_pw_block k = {w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2,
                                 0, NULL, NULL, NULL, act2};
    return pdp_run(x, &k, residual);
}

an_tensor *an_conv_pw_dw_pw_shortcut(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                                     an_activation act1, an_tensor *wd, an_tensor *bd,
                                     int64_t stride, an_activation actd, an_tensor *w2,
                                     an_tensor *p2, an_tensor *b2, an_tensor *ws, an_tensor *ps,
                                     an_tensor *bs, an_activation act2)
{
    if (an_check_not_null(ws, "conv_pw_dw_pw", "shortcut weight"))
        return NULL;
    const an_pw_dw_pw_block k = {w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2,
                                 0, ws, ps, bs, act2};
    return pdp_run(x, &k, NULL);
}

/* ------------------------------------------------------------ block chains */

struct an_block_chain {
    int64_t count;
    an_pw_dw_pw_block *blocks; /* each tensor a reference of the chain's */
};

#define BLOCK_TENSORS 11
static void block_tensors(const an_pw_dw_pw_block *k, an_tensor *all[BLOCK_TENSORS])
{
    an_tensor *each[BLOCK_TENSORS] = {k->w1, k->p1, k->b1, k->wd, k->bd, k->w2,
                                      k->p2, k->b2, k->ws, k->ps, k->bs};
    memcpy(all, each, sizeof each);
}

an_block_chain *an_block_chain_create(int64_t count, const an_pw_dw_pw_block *blocks)
{
    if (count < 1 || !blocks) {
        an_set_error(AN_ERR_VALUE, "block chain: expected at least one block, got %lld",
                     (long long)(blocks ? count : 0));
        return NULL;
    }
    for (int64_t i = 0; i < count; i++) {
        if (pdp_check_block(&blocks[i])) {
            char reason[256];
            snprintf(reason, sizeof reason, "%s", an_last_error());
            an_set_error(an_last_status(), "block chain, block %lld: %s", (long long)i, reason);
            return NULL;
        }
        if (blocks[i].ws && blocks[i].residual_from_input) {
            an_set_error(AN_ERR_VALUE, "block chain, block %lld: a shortcut convolution and "
                                       "residual_from_input together (a block has one residual)",
                         (long long)i);
            return NULL;
        }
    }
    an_block_chain *chain = calloc(1, sizeof *chain);
    an_pw_dw_pw_block *copy = chain ? malloc(sizeof *copy * (size_t)count) : NULL;
    if (!copy) {
        free(chain);
        an_set_error(AN_ERR_MEMORY, "block chain: out of memory for %lld blocks", (long long)count);
        return NULL;
    }
    memcpy(copy, blocks, sizeof *copy * (size_t)count);
    for (int64_t i = 0; i < count; i++) {
        an_tensor *all[BLOCK_TENSORS];
        block_tensors(&copy[i], all);
        for (int j = 0; j < BLOCK_TENSORS; j++)
            if (all[j])
                an_retain(all[j]);
    }
    chain->count = count;
    chain->blocks = copy;
    return chain;
}

void an_block_chain_free(an_block_chain *chain)
{
    if (!chain)
        return;
    for (int64_t i = 0; i < chain->count; i++) {
        an_tensor *all[BLOCK_TENSORS];
        block_tensors(&chain->blocks[i], all);
        for (int j = 0; j < BLOCK_TENSORS; j++) an_release(all[j]);
    }
    free(chain->blocks);
    free(chain);
}

/* The chain's blocks on an input of shape xs with `threads` threads: each
   one's layout in L, and in in_region whether it runs in the chain's
   region (bands, or the small-plane region with every thread); a block
   after one that takes the calls is laid out when it runs (pdp_run). */
static void chain_layouts(const an_block_chain *chain, const int64_t xs[4], int threads,
                          pdp_layout *L, unsigned char *in_region)
{
    int64_t shape[4] = {xs[0], xs[1], xs[2], xs[3]};
    int known = 1;
    for (int64_t i = 0; i < chain->count; i++) {
        const an_pw_dw_pw_block *k = &chain->blocks[i];
        L[i].path = PDP_BY_CALLS;
        if (known)
            pdp_layout_for(&L[i], shape, k, k->residual_from_input ? shape : NULL, threads);
        in_region[i] = L[i].path == PDP_BANDS || (L[i].path == PDP_NARROW && L[i].team == threads);
        known = L[i].path != PDP_BY_CALLS;
        if (known) {
            shape[1] = L[i].b.Co;
            shape[2] = L[i].b.OH;
            shape[3] = L[i].b.OW;
        }
    }
}

int an_block_chain_in_one_region(const an_block_chain *chain, int ndim, const int64_t *shape)
{
    if (!chain || ndim != 4 || !shape)
        return 0;
    /* a shape no tensor could have (the layouts' sizes would overflow) */
    int64_t numel = 1;
    for (int d = 0; d < 4; d++) {
        if (shape[d] < 1 || shape[d] > ((int64_t)1 << 40) / numel)
            return 0;
        numel *= shape[d];
    }
    pdp_layout *L = malloc(sizeof *L * (size_t)chain->count);
    unsigned char *in_region = malloc((size_t)chain->count);
    int all = L && in_region;
    if (all) {
        chain_layouts(chain, shape, team_size(), L, in_region);
        for (int64_t i = 0; i < chain->count; i++) all &= in_region[i];
    }
    free(L);
    free(in_region);
    return all;
}

an_tensor *an_block_chain_run(an_block_chain *chain, an_tensor *x)
{
    if (!chain) {
        an_set_error(AN_ERR_VALUE, "block chain: the chain is NULL");
        return NULL;
    }
    if (an_check_not_null(x, "block chain", "input"))
        return NULL;
    const int64_t count = chain->count;
    for (int64_t i = 0; i < count; i++)
        if (pdp_check_no_grad(x, &chain->blocks[i], NULL))
            return NULL;
    const int threads = team_size();
    pdp_layout *L = malloc(sizeof *L * (size_t)count);
    unsigned char *in_region = calloc((size_t)count, 1);
    if (!L || !in_region) {
        free(L);
        free(in_region);
        an_set_error(AN_ERR_MEMORY, "block chain: out of memory");
        return NULL;
    }
    if (x->ndim == 4)
        chain_layouts(chain, x->shape, threads, L, in_region);
    an_tensor *current = x;
    an_retain(x);
    for (int64_t i = 0; i < count && current;) {
        an_tensor *next;
        int64_t j = i + 1;
        if (in_region[i]) {
            while (j < count && in_region[j]) j++;
            next = pdp_run_blocks(chain->blocks + i, L + i, j - i, current, NULL, threads,
                                  "block chain");
        } else {
            const an_pw_dw_pw_block *k = &chain->blocks[i];
            next = pdp_run(current, k, k->residual_from_input ? current : NULL);
        }
        an_release(current);
        current = next;
        i = j;
    }
    free(L);
    free(in_region);
    return current;
}
