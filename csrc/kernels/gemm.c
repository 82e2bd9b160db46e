/* GEMM driver: kernel selection, cache blocking, packing, threading.
 *
 * Loop nest (BLIS style), for C += op(A) op(B):
 *   jc: N in blocks of NC      packed B block (KC x NC) is shared by all threads
 *    pc: K in blocks of KC     (never split across threads: fixed sum order)
 *     [threads split the M tiles and N panels of this block into rectangles]
 *     ic: M in blocks of MC    each thread packs its own A block (MC x KC)
 *      jr: NR panels           B micro-panel (KC x NR) stays in L1
 *       ir: MR panels          A micro-panel streams from L2
 *        micro-kernel MR x NR
 *
 * Determinism: an element of C is always produced by the same micro-kernel
 * lane, from the same packed values, one KC block after another in
 * increasing order; the partition only decides WHICH thread does a tile.
 * Whether a tile is a full or a fringe tile depends on its position in C
 * alone (partitions are in whole MR/NR tiles).  So 1 and N threads agree
 * bit for bit. */
#include "kernels/gemm.h"

#include "cpu/cpu.h"
#include "kernels/gemm_pack.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#define AN_GEMM_HAVE_PTHREAD 1
#include <pthread.h>
#endif

/* Below this many multiply-adds the fork/join of a parallel region (a few
 * microseconds) costs more than the second thread saves. */
#define AN_GEMM_MIN_PARALLEL_MACS (1 << 18)
/* gemv streams its matrix once; threads only help when it is large. */
#define AN_GEMV_MIN_PARALLEL_MACS (1 << 17)

#define AN_WORKSPACE_ALIGN 64

/* ------------------------------------------------------------------------ */
/* Per-thread workspace cache                                               */
/* ------------------------------------------------------------------------ */

/* The buffer is kept between calls: freshly mapped pages cost ~12 us each to
 * fault in, far more than a small GEMM. */
static _Thread_local float *tl_workspace;
static _Thread_local size_t tl_workspace_bytes;
static atomic_size_t g_workspace_bytes_total;

#ifdef AN_GEMM_HAVE_PTHREAD
/* C has no destructor for _Thread_local data: a pthread key frees the buffer
 * of a thread that exits (e.g. a Python worker thread) instead of leaking. */
static pthread_key_t g_workspace_key;
static pthread_once_t g_workspace_key_once = PTHREAD_ONCE_INIT;
static int g_workspace_key_ok;

static void workspace_thread_exit(void *buffer)
{
    /* Called with the value stored for the exiting thread; its _Thread_local
     * copy is about to disappear, so only the accounting needs updating. */
    free(buffer);
    atomic_fetch_sub(&g_workspace_bytes_total, tl_workspace_bytes);
    tl_workspace = NULL;
    tl_workspace_bytes = 0;
}

static void workspace_key_create(void)
{
    g_workspace_key_ok = pthread_key_create(&g_workspace_key, workspace_thread_exit) == 0;
}
#endif

static void workspace_set(float *buffer, size_t bytes)
{
    tl_workspace = buffer;
    tl_workspace_bytes = bytes;
#ifdef AN_GEMM_HAVE_PTHREAD
    pthread_once(&g_workspace_key_once, workspace_key_create);
    if (g_workspace_key_ok) pthread_setspecific(g_workspace_key, buffer);
#endif
}

void an_gemm_release_workspace(void)
{
    if (!tl_workspace) return;
    free(tl_workspace);
    atomic_fetch_sub(&g_workspace_bytes_total, tl_workspace_bytes);
    workspace_set(NULL, 0);
}

size_t an_gemm_workspace_bytes(void)
{
    return atomic_load(&g_workspace_bytes_total);
}

/* Returns the calling thread's workspace with at least `bytes`, or NULL. */
static float *workspace_reserve(size_t bytes)
{
    if (bytes <= tl_workspace_bytes) return tl_workspace;
    size_t rounded = (bytes + AN_WORKSPACE_ALIGN - 1) / AN_WORKSPACE_ALIGN * AN_WORKSPACE_ALIGN;
    float *grown = aligned_alloc(AN_WORKSPACE_ALIGN, rounded);
    if (!grown) return NULL;
    an_gemm_release_workspace();
    atomic_fetch_add(&g_workspace_bytes_total, rounded);
    workspace_set(grown, rounded);
    return grown;
}

/* ------------------------------------------------------------------------ */
/* Kernel choice and blocking                                               */
/* ------------------------------------------------------------------------ */

/* 0: choose by M; 8 or 14: force that AVX-512 row count (tests, benchmarks). */
static atomic_int g_avx512_mr_override;

void an_gemm_force_avx512_mr(int mr)
{
    atomic_store(&g_avx512_mr_override, mr == 8 || mr == 14 ? mr : 0);
}

/* Cost of a row computed by the 8 x 32 kernel relative to one computed by
 * the 14 x 32 kernel: the 8-row kernel issues fewer FMAs per B load and per
 * C write-back, so per row it is slightly slower when neither wastes rows (measured ~0.92 on
 * Sapphire Rapids: 64 and 128 rows come out about even). */
#define AN_AVX512_8_ROW_COST_NUM 12
#define AN_AVX512_8_ROW_COST_DEN 11

/* Up to this K the 8-row kernel costs no more per row than the 14-row one:
 * a tile's few sums then share it with its write-back and epilogue, which
 * the 8-row tile keeps in fewer registers.  1x1 layers with bias and relu6
 * on one thread of the Zen 5, the 8-row kernel against the 14-row one
 * (each forced): K = 16 -> 96 and 144 channels on a 32x32 plane 0.92x and
 * 0.92x the time, 24 -> 96, 144, 192: 0.95x, 0.96x, 0.94x; 32 -> 192 on
 * 16x16 0.97x; 64 -> 384 on 8x8 0.95x; from K = 96 on about even (96 ->
 * 576 on 8x8 1.00x, 576 -> 96 1.00x) or slower (144 -> 32 on 32x32 1.04x,
 * 160 -> 960 on 4x4 1.08x). */
#define AN_AVX512_SHORT_K 64

#if defined(__x86_64__) || defined(_M_X64) /* the AVX-512 kernels exist only there */
/* The AVX-512 kernel with the least estimated time for an M x K product:
 * rows computed (M rounded up to the tile) over relative speed.  Depends on
 * M, K and the ISA only, never on the thread count, so results stay
 * bit-identical across thread counts (and the tile height never changes a
 * sum: each element takes its K blocks' FMAs in the same order). */
static const an_gemm_ukernel *select_avx512_ukernel(int64_t M, int64_t K)
{
    switch (atomic_load(&g_avx512_mr_override)) {
    case 8: return &an_gemm_ukernel_avx512_8x32;
    case 14: return &an_gemm_ukernel_avx512;
    default: break;
    }
    const int64_t rows14 = (M + 13) / 14 * 14;
    const int64_t rows8 = (M + 7) / 8 * 8;
    if (K <= AN_AVX512_SHORT_K ? rows8 <= rows14
                               : rows8 * AN_AVX512_8_ROW_COST_NUM < rows14 * AN_AVX512_8_ROW_COST_DEN)
        return &an_gemm_ukernel_avx512_8x32;
    return &an_gemm_ukernel_avx512;
}
#endif

/* M < 0: the default kernel of the ISA (what an_gemm_kernel_name reports). */
static const an_gemm_ukernel *select_ukernel(int64_t M, int64_t K)
{
#if defined(__x86_64__) || defined(_M_X64)
    switch (an_cpu_info_get()->isa) {
    case AN_ISA_AVX512: return M < 0 ? &an_gemm_ukernel_avx512 : select_avx512_ukernel(M, K);
    case AN_ISA_AVX2: return &an_gemm_ukernel_avx2;
    default: break; /* GENERIC (NEON is never chosen on x86) */
    }
#else
    (void)M;
    (void)K;
#endif
#if defined(__aarch64__)
    if (an_cpu_info_get()->isa == AN_ISA_NEON) return &an_gemm_ukernel_neon;
#endif
    return &an_gemm_ukernel_generic;
}

const char *an_gemm_kernel_name(void)
{
    return select_ukernel(-1, 0)->name;
}

const char *an_gemm_kernel_name_for(int64_t M, int64_t K)
{
    return select_ukernel(M, K)->name;
}

typedef struct gemm_blocking {
    int64_t mc, kc, nc;
} gemm_blocking;

static int64_t clamp_i64(int64_t value, int64_t lo, int64_t hi)
{
    return value < lo ? lo : (value > hi ? hi : value);
}

static int64_t round_up(int64_t value, int64_t step)
{
    return (value + step - 1) / step * step;
}

/* Products of up to this many columns (batch-1 1x1 layers on 8x8 and 4x4
 * planes) take a long K in two halves: see choose_blocking. */
#define AN_GEMM_SMALL_PLANE_MAX_N 64

/* KC: the B micro-panel (KC x NR) as large as L1 (384 with 48 KiB and
 * NR = 32); the A micro-panel streams past it from L2.  Longer K runs per C
 * write-back beat keeping the panel clear of the stream: a 2048^2 GEMM ran
 * at 170 GFLOP/s with 3/4 of L1 and 177 with all of it, mean of 8
 * alternating runs on one thread.  MC: the A block (MC x KC) takes ~1/8 of L2 (but
 * at least ~160 KB when L2 is small), which measured better than half of L2:
 * the shared B block and C tiles also live there.  All of M, when it fits
 * half of L2, is one block (see below).  NC: the B block
 * (KC x NC) stays well inside the L3 share and within 3x L2 (below). */
static gemm_blocking choose_blocking(const an_gemm_ukernel *uk, int64_t M, int64_t N, int64_t K)
{
    const an_cpu_info *cpu = an_cpu_info_get();
    gemm_blocking blk;
    int64_t kc = (int64_t)cpu->l1d_bytes / (uk->nr * (int64_t)sizeof(float));
    kc = clamp_i64(kc / 16 * 16, 128, 384);
    /* Split K evenly rather than leaving a thin last block that runs the
     * micro-kernel with little work per C write-back. */
    int64_t k_blocks = (K + kc - 1) / kc;
    blk.kc = round_up((K + k_blocks - 1) / k_blocks, 8);
    if (blk.kc > kc) blk.kc = kc;
    /* Narrow products (batch-1 1x1 layers on 8x8 and 4x4 planes) take a
     * long K in two halves: the B rows a block reads (KC x N, N <= 32 per
     * chunk) fit L1 up to twice the usual KC when N is 16, and two blocks
     * let two threads each sum one half from the channels they computed
     * (conv_pw_dw_pw), the halves then added in the order one thread adds
     * them.  Depends on M, N and K only, like every choice here, so each
     * product's bits are the same on any number of threads. */
    if (N <= AN_GEMM_SMALL_PLANE_MAX_N && K > 256) {
        const int64_t width = N < uk->nr ? round_up(N, 16) : uk->nr;
        const int64_t wide_kc =
            clamp_i64((int64_t)cpu->l1d_bytes / (width * (int64_t)sizeof(float)) / 16 * 16, 128, 768);
        if (K <= 2 * wide_kc) blk.kc = round_up((K + 1) / 2, 8);
    }

    int64_t a_block_bytes = (int64_t)cpu->l2_bytes / 8;
    int64_t floor_bytes = (int64_t)cpu->l2_bytes / 2 < 160 * 1024 ? (int64_t)cpu->l2_bytes / 2 : 160 * 1024;
    if (a_block_bytes < floor_bytes) a_block_bytes = floor_bytes;
    int64_t mc = a_block_bytes / (blk.kc * (int64_t)sizeof(float));
    mc = clamp_i64(mc, 2 * uk->mr, 1024);
    blk.mc = mc / uk->mr * uk->mr;
    /* All of M in one A block when that takes at most half of L2: no thin
     * second block, and one block lets gemm_thread pack B panel by panel
     * (128 x 512 x 1152: faster in 43 of 60 paired rounds on a Zen 3, on
     * one thread and on two). */
    if (blk.mc > round_up(M, uk->mr) ||
        round_up(M, uk->mr) * blk.kc * (int64_t)sizeof(float) <= (int64_t)cpu->l2_bytes / 2)
        blk.mc = round_up(M, uk->mr);

    int64_t l3_share = (int64_t)(cpu->l3_bytes / (size_t)(cpu->l3_shared_by > 0 ? cpu->l3_shared_by : 1));
    int64_t nc = l3_share / 2 / (blk.kc * (int64_t)sizeof(float));
    nc = clamp_i64(nc, 4 * uk->nr, 4096);
    blk.nc = nc / uk->nr * uk->nr;
    if (blk.nc > round_up(N, uk->nr)) blk.nc = round_up(N, uk->nr);
    /* ... and at most 3x L2 (in even column blocks): the L3 share that
     * CPUID reports under a hypervisor counts the guest's cores, not the
     * CCX's (here 32 MB "shared by 2"), so it said 4096 columns, and a B
     * block of 2.8-4 MB came back from L3 slower than one of 1-1.4 MB for
     * each A block.  On a Zen 3 (512 KiB L2), one thread, in one process
     * alternating with the old NC: 2048^3 0.955x the time (11 of 12 rounds
     * faster), 512 x 4096 x 512 0.955x, 512 x 4096 x 2048 0.864x (12 of
     * 12), 2048 x 2048 x 256 0.954x; two threads 0.95-0.98x, 2048^2 x 256
     * 1.01x (noise).  A cap of 2x L2 also split 1024 columns in two, and
     * 1024^3 ran 1.05x slower.  No product in the training steps or the
     * batch-128 inference of ResNet-20, MobileNetV2 and ShuffleNetV2 takes
     * the cap.  NC only groups the same tiles, so the sums are the same
     * bits. */
    const int64_t nc_cap = (int64_t)cpu->l2_bytes * 3 / (blk.kc * (int64_t)sizeof(float));
    if (blk.nc > nc_cap && nc_cap >= 4 * uk->nr) {
        const int64_t n_blocks = (N + nc_cap - 1) / nc_cap;
        blk.nc = round_up((N + n_blocks - 1) / n_blocks, uk->nr);
    }
    return blk;
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                  */
/* ------------------------------------------------------------------------ */

/* Packing writes a panel laid out as panel[k * width + r] for r < width,
 * zero-filling rows >= `rows` so the micro-kernel always runs a full tile.
 * Element (r, k) of the source slice is src[r * row_stride + k * k_stride];
 * one of the two strides is 1. */

/* Source contiguous along r: each k step is one short copy.  Fixed-width
 * instantiations below turn it into a few vector moves (a memcpy call per
 * 128 bytes cost more than the copy). */
static inline void pack_panel_copy_fixed(const float *src, int64_t k_stride, int64_t rows,
                                         int64_t kc, const int width, float *panel)
{
    if (rows == width) {
        for (int64_t k = 0; k < kc; ++k)
            for (int r = 0; r < width; ++r) panel[k * width + r] = src[k * k_stride + r];
        return;
    }
    for (int64_t k = 0; k < kc; ++k) {
        int64_t r = 0;
        for (; r < rows; ++r) panel[k * width + r] = src[k * k_stride + r];
        for (; r < width; ++r) panel[k * width + r] = 0.0f;
    }
}

/* Source contiguous along k: a transpose.  Walks 8 k at a time so every
 * source row is read sequentially while the writes stay within a few
 * cache lines; `width` is a compile-time constant in each instantiation so
 * the store offsets fold into the addressing. */
static inline void pack_panel_transpose_fixed(const float *src, int64_t row_stride, int64_t rows,
                                              int64_t kc, const int width, float *panel)
{
    int64_t k0 = 0;
    for (; k0 + 8 <= kc; k0 += 8) {
        float *to = panel + k0 * width;
        int64_t r = 0;
        for (; r < rows; ++r) {
            const float *from = src + r * row_stride + k0;
            for (int kk = 0; kk < 8; ++kk) to[kk * width + r] = from[kk];
        }
        for (; r < width; ++r)
            for (int kk = 0; kk < 8; ++kk) to[kk * width + r] = 0.0f;
    }
    for (; k0 < kc; ++k0) {
        float *to = panel + k0 * width;
        int64_t r = 0;
        for (; r < rows; ++r) to[r] = src[r * row_stride + k0];
        for (; r < width; ++r) to[r] = 0.0f;
    }
}

#define AN_PACK_WIDTH(W)                                                                        \
    static void pack_panel_transpose_##W(const float *src, int64_t row_stride, int64_t rows,     \
                                         int64_t kc, float *panel)                              \
    {                                                                                           \
        pack_panel_transpose_fixed(src, row_stride, rows, kc, W, panel);                        \
    }                                                                                           \
    static void pack_panel_copy_##W(const float *src, int64_t k_stride, int64_t rows, int64_t kc, \
                                    float *panel)                                               \
    {                                                                                           \
        pack_panel_copy_fixed(src, k_stride, rows, kc, W, panel);                               \
    }
AN_PACK_WIDTH(6)
AN_PACK_WIDTH(8)
AN_PACK_WIDTH(12)
AN_PACK_WIDTH(14)
AN_PACK_WIDTH(16)
AN_PACK_WIDTH(32)

int an_pack_transpose_simd(const float *src, int64_t row_stride, int64_t rows, int64_t kc,
                           int width, float *panel)
{
#if defined(__x86_64__) || defined(_M_X64)
    const an_isa isa = an_cpu_info_get()->isa;
    if (isa == AN_ISA_AVX512 && width >= 16 && rows >= 16) {
        an_pack_transpose_avx512(src, row_stride, rows, kc, width, panel);
        return 1;
    }
    if (isa == AN_ISA_AVX512 && width > 8 && width < 16 && rows > 8 && rows <= width) {
        an_pack_transpose_narrow_avx512(src, row_stride, rows, kc, width, panel);
        return 1;
    }
    if (isa >= AN_ISA_AVX2 && ((width >= 8 && rows >= 8) || (width == 6 && rows <= 6))) {
        an_pack_transpose_avx2(src, row_stride, rows, kc, width, panel);
        return 1;
    }
#else
    (void)src, (void)row_stride, (void)rows, (void)kc, (void)width, (void)panel;
#endif
    return 0;
}

int an_pack_transpose_rows_simd(const float *const *rows, int64_t count, int64_t kc, int width,
                                float *panel)
{
#if defined(__x86_64__) || defined(_M_X64)
    const an_isa isa = an_cpu_info_get()->isa;
    if (isa == AN_ISA_AVX512) {
        an_pack_transpose_rows_avx512(rows, count, kc, width, panel);
        return 1;
    }
    if (isa == AN_ISA_AVX2) {
        an_pack_transpose_rows_avx2(rows, count, kc, width, panel);
        return 1;
    }
#else
    (void)rows, (void)count, (void)kc, (void)width, (void)panel;
#endif
    return 0;
}

/* Panels [panel0, panel1) of a row-major B block (row k at b + k * ldb),
 * all `width` (a constant at each call) columns wide, each KC x width floats
 * apart in `packed`: row by row across the panels, so B is read front to
 * back. */
static inline __attribute__((always_inline)) void
copy_panels_by_rows(const float *b, int64_t ldb, int64_t kc, int64_t panel0, int64_t panel1,
                    int64_t KC, const int width, float *packed)
{
    for (int64_t k = 0; k < kc && panel0 < panel1; ++k)
        for (int64_t jp = panel0; jp < panel1; ++jp)
            memcpy(packed + jp * KC * width + k * width, b + k * ldb + jp * width,
                   (size_t)width * sizeof(float));
}

/* Packed panel by panel, each panel reads a 64- or 128-byte piece of every
 * one of kc rows, each row on another page when B is 512 or more floats
 * wide: the hardware prefetchers do not follow, and with rows 2-8 KB apart
 * the pieces of one panel share a few sets of L1 and L2.  Read row by row
 * instead: 3.6% of a 2048^2 GEMM on AVX-512 (32-wide panels) became 2.5%.
 * The packed block is then read by every A block, so this is taken where
 * the packing thread's rows span several A blocks (or always with 32-wide
 * panels); for a block read by one A block, packing each panel just before
 * its tiles keeps it in L1 and measured faster (gemm_thread), and the
 * row-by-row copy of a shared block for few-row products measured 10-15%
 * slower (the twelfth round).  Either way the panels hold the same bytes.
 * On a Zen 3 (16-wide panels), one thread, in one process alternating with
 * panel by panel: 512 x 512 x 4608 0.93-0.94x the time (20 of 20 rounds
 * faster, twice), 1024^3 0.97x, 1280 x 512 x 320 0.98x; two threads
 * 0.98-1.00x.  The AVX2 kernel's panel pairs (gemm_thread) are this copy
 * over two panels. */
static void pack_b_full_panels_by_rows(const float *b, int64_t ldb, int64_t kc, int64_t panel0,
                                       int64_t panel1, int64_t KC, int nr, float *packed)
{
    switch (nr) {
    case 8: copy_panels_by_rows(b, ldb, kc, panel0, panel1, KC, 8, packed); return;
    case 16: copy_panels_by_rows(b, ldb, kc, panel0, panel1, KC, 16, packed); return;
    case 32: copy_panels_by_rows(b, ldb, kc, panel0, panel1, KC, 32, packed); return;
    default: copy_panels_by_rows(b, ldb, kc, panel0, panel1, KC, nr, packed); return;
    }
}

static void pack_panel(const float *src, int64_t row_stride, int64_t k_stride, int64_t rows,
                       int64_t kc, int width, float *panel)
{
    if (row_stride == 1) {
        switch (width) {
        case 6: pack_panel_copy_6(src, k_stride, rows, kc, panel); return;
        case 8: pack_panel_copy_8(src, k_stride, rows, kc, panel); return;
        case 12: pack_panel_copy_12(src, k_stride, rows, kc, panel); return;
        case 14: pack_panel_copy_14(src, k_stride, rows, kc, panel); return;
        case 16: pack_panel_copy_16(src, k_stride, rows, kc, panel); return;
        case 32: pack_panel_copy_32(src, k_stride, rows, kc, panel); return;
        default: pack_panel_copy_fixed(src, k_stride, rows, kc, width, panel); return;
        }
    }
    /* Here k_stride == 1 (the caller passes a unit stride on one side): a
     * transpose, through SIMD registers where the CPU allows. */
    if (an_pack_transpose_simd(src, row_stride, rows, kc, width, panel))
        return;
    switch (width) {
    case 6: pack_panel_transpose_6(src, row_stride, rows, kc, panel); return;
    case 8: pack_panel_transpose_8(src, row_stride, rows, kc, panel); return;
    case 12: pack_panel_transpose_12(src, row_stride, rows, kc, panel); return;
    case 14: pack_panel_transpose_14(src, row_stride, rows, kc, panel); return;
    case 16: pack_panel_transpose_16(src, row_stride, rows, kc, panel); return;
    case 32: pack_panel_transpose_32(src, row_stride, rows, kc, panel); return;
    default: pack_panel_transpose_fixed(src, row_stride, rows, kc, width, panel); return;
    }
}

/* ------------------------------------------------------------------------ */
/* Blocked GEMM                                                             */
/* ------------------------------------------------------------------------ */

typedef struct gemm_problem {
    int64_t M, N, K;
    float alpha, beta;
    /* op(A)(i, k) = A[i * a_row + k * a_col]; op(B)(k, j) = B[k * b_row + j * b_col] */
    const float *A;
    int64_t a_row, a_col;
    const float *B;
    int64_t b_row, b_col;
    an_gemm_pack_b_fn pack_b; /* when set, packs B instead of reading it */
    const void *pack_b_source;
    const int64_t *b_offsets; /* when set, B(k, j) = B[b_offsets[k] + j], never packed */
    const int64_t *b_rows;    /* when set, full panels of a row-major B are read in place
                               * through b_rows[k] = k * b_row; the fringe panel is packed */
    float *C;
    int64_t ldc;
    const an_gemm_ukernel *uk;
    gemm_blocking blk;
    int threads_m, threads_n; /* thread grid; product = team size planned */
    float *packed_b;          /* 1 or 2 (team > 1) buffers of KC x round_up(NC, NR) */
    int64_t packed_b_stride;  /* floats between the two B buffers */
    int packed_b_buffers;     /* 2 when threads may share B, else 1 */
    float *packed_a;          /* one MC x KC block per thread */
    const float *a_prepacked; /* when set, all of A packed once (an_gemm_pack_a): never repacked */
    int64_t packed_a_stride;  /* floats between two threads' A blocks */
    const float *row_bias;    /* epilogue: C[i, :] += row_bias[i] (NULL: none) */
    const float *residual;    /* then C[i, j] += residual[i * ldr + j] (NULL: none) */
    int64_t ldr;
    int act;                  /* then AN_GEMM_ACT_RELU / _RELU6 (0: none) */
    int rows_outer;           /* tiles visited row panel by row panel (see gemm_blocked) */
} gemm_problem;

#define EPILOGUE_NAME epilogue_rows_generic
#include "kernels/bias_act_impl.h"
#undef EPILOGUE_NAME

void an_epilogue_rows(float *c, int64_t rows, int64_t cols, int64_t ldc, const float *row_bias,
                      const float *residual, int64_t ldr, int act)
{
    if (!row_bias && !residual && act == AN_GEMM_ACT_NONE) return;
#if defined(__x86_64__) || defined(_M_X64)
    switch (an_cpu_info_get()->isa) {
    case AN_ISA_AVX512: an_epilogue_rows_avx512(c, rows, cols, ldc, row_bias, residual, ldr, act); return;
    case AN_ISA_AVX2: an_epilogue_rows_avx2(c, rows, cols, ldc, row_bias, residual, ldr, act); return;
    default: break;
    }
#endif
    epilogue_rows_generic(c, rows, cols, ldc, row_bias, residual, ldr, act);
}

void an_bias_act_rows(float *c, int64_t rows, int64_t cols, int64_t ldc, const float *row_bias,
                      int act)
{
    an_epilogue_rows(c, rows, cols, ldc, row_bias, NULL, 0, act);
}

/* The epilogue on a tile just written by its last K block, while it is in
 * cache. */
static void tile_epilogue(const gemm_problem *p, float *c, int64_t row0, int64_t col0,
                          int64_t rows, int64_t cols)
{
    an_epilogue_rows(c, rows, cols, p->ldc, p->row_bias ? p->row_bias + row0 : NULL,
                     p->residual ? p->residual + row0 * p->ldr + col0 : NULL, p->ldr, p->act);
}

/* Splits `count` items into `parts` near-equal contiguous ranges. */
static void split_range(int64_t count, int parts, int index, int64_t *begin, int64_t *end)
{
    *begin = count * index / parts;
    *end = count * (index + 1) / parts;
}

/* Writes a fringe tile computed (alpha = 1, beta = 0) into C. */
static void store_fringe_tile(const float *tile, int nr, int64_t rows, int64_t cols, float *c,
                              int64_t ldc, float alpha, float beta)
{
    for (int64_t i = 0; i < rows; ++i) {
        const float *from = tile + i * nr;
        float *to = c + i * ldc;
        if (beta == 0.0f) {
            for (int64_t j = 0; j < cols; ++j) to[j] = alpha * from[j];
        } else {
            for (int64_t j = 0; j < cols; ++j) to[j] = alpha * from[j] + beta * to[j];
        }
    }
}

/* One MR x NR tile of C at (i, j) from the K block at pc: the micro-kernel
 * on packed (or in-place) panels, the fringe through a scratch tile, and the
 * epilogue after the last K block. */
static inline void gemm_tile(const gemm_problem *p, const float *a_panel, const float *b_panel,
                             int64_t i, int64_t j, int64_t pc, int64_t kc, float beta, float *tile)
{
    const an_gemm_ukernel *uk = p->uk;
    const int mr = uk->mr, nr = uk->nr;
    const int64_t rows = p->M - i < mr ? p->M - i : mr;
    const int64_t cols = p->N - j < nr ? p->N - j : nr;
    /* B read in place: given offsets, or the full panels of a row-major B (b_rows) */
    const float *b_in_place = p->b_offsets ? p->B + j
                              : p->b_rows && cols == nr ? p->B + pc * p->b_row + j
                                                        : NULL;
    const int64_t *offsets = p->b_offsets ? p->b_offsets + pc : p->b_rows;
    float *c = p->C + i * p->ldc + j;
    const int epilogue = (p->row_bias || p->residual || p->act) && pc + kc >= p->K;
    if (epilogue && rows == mr && cols == nr && uk->compute_epilogue && p->alpha == 1.0f) {
        uk->compute_epilogue(kc, a_panel, b_in_place ? b_in_place : b_panel,
                             b_in_place ? offsets : NULL, c, p->ldc, beta,
                             p->row_bias ? p->row_bias + i : NULL,
                             p->residual ? p->residual + i * p->ldr + j : NULL, p->ldr, p->act);
        return;
    }
    if (rows < mr && cols == nr && p->alpha == 1.0f && uk->compute_partial) {
        uk->compute_partial((int)rows, kc, a_panel, b_in_place ? b_in_place : b_panel,
                            b_in_place ? offsets : NULL, c, p->ldc, beta, epilogue,
                            p->row_bias ? p->row_bias + i : NULL,
                            p->residual ? p->residual + i * p->ldr + j : NULL, p->ldr, p->act);
        return;
    }
    if (b_in_place) {
        if (rows == mr && cols == nr) {
            uk->compute_rows(kc, a_panel, b_in_place, offsets, c, p->ldc, p->alpha, beta);
        } else {
            uk->compute_rows(kc, a_panel, b_in_place, offsets, tile, nr, 1.0f, 0.0f);
            store_fringe_tile(tile, nr, rows, cols, c, p->ldc, p->alpha, beta);
        }
    } else if (rows == mr && cols == nr) {
        uk->compute(kc, a_panel, b_panel, c, p->ldc, p->alpha, beta);
    } else {
        uk->compute(kc, a_panel, b_panel, tile, nr, 1.0f, 0.0f);
        store_fringe_tile(tile, nr, rows, cols, c, p->ldc, p->alpha, beta);
    }
    if (epilogue)
        tile_epilogue(p, c, i, j, rows, cols);
}

/* The B panel of columns [j, j + NR) and the K block at pc, zero-padded
 * past N. */
static void pack_b_panel(const gemm_problem *p, int64_t j, int64_t pc, int64_t kc, float *panel)
{
    const int nr = p->uk->nr;
    const int64_t cols = p->N - j < nr ? p->N - j : nr;
    if (p->pack_b)
        p->pack_b(p->pack_b_source, pc, kc, j, cols, nr, panel);
    else
        pack_panel(p->B + pc * p->b_row + j * p->b_col, p->b_col, p->b_row, cols, kc, nr, panel);
}

/* Packing a B panel from a row-major B reads one or two lines per row, each
 * row on another page (N of 512-1024 floats): the hardware prefetchers do
 * not follow, and the packing waits on L3 or memory before its tiles can
 * start.  While a panel's tiles run, the next panel's rows are therefore
 * fetched ahead, a share before each tile.  With at least 10 tiles per
 * panel (M >= 55 on 6-row tiles) the share is short enough to hide among
 * the FMAs: on a Zen 3, one thread, in one process alternating with no
 * prefetch, 128 x 512 x 1152 took 0.84-0.97x the time and 64 x 1024 x 576
 * 0.94-0.97x (24-30 of 30 rounds faster); two threads 0.96-1.00x and
 * 1.01-1.03x (noise).  At 3-8 tiles (M = 16-48, K = 144-432) it measured
 * 1.00-1.09x, so those pack without it, and so do B rows less than 2 KB
 * apart, which the hardware prefetcher follows: the per-image products of
 * a MobileNetV2 training step on 8x8 planes (64 x 64 x 384, 1426 calls a
 * step) took it before that rule, and the step ran 1.01-1.02x the time.
 * Measured with the AVX2 kernel only (no AVX-512 machine since): the
 * AVX-512 and portable kernels pack as before (and so for the panel pairs
 * in gemm_thread). */
#define PREFETCH_B_MIN_TILES 10
#define PREFETCH_B_MIN_ROW_BYTES 2048

static int is_avx2(const an_gemm_ukernel *uk)
{
#if defined(__x86_64__) || defined(_M_X64)
    return uk == &an_gemm_ukernel_avx2;
#else
    (void)uk;
    return 0;
#endif
}

/* Rows [k0, k1) of a B panel `width` floats wide whose rows lie row_stride
 * floats apart, into L1 (both lines where a row straddles two). */
static void prefetch_panel_rows(const float *panel, int64_t row_stride, int64_t k0, int64_t k1,
                                int width)
{
    for (int64_t k = k0; k < k1; ++k) {
        const float *first = panel + k * row_stride, *last = first + width - 1;
        __builtin_prefetch(first, 0, 3);
        if (((uintptr_t)first ^ (uintptr_t)last) >= 64) __builtin_prefetch(last, 0, 3);
    }
}

static void gemm_thread(const gemm_problem *p, int thread, int team)
{
    const an_gemm_ukernel *uk = p->uk;
    const int mr = uk->mr, nr = uk->nr;
    const int64_t MC = p->blk.mc, KC = p->blk.kc, NC = p->blk.nc;
    /* The planned grid assumed the requested team; OpenMP may give fewer
     * threads, then fall back to a 1-D split over M tiles. */
    int threads_m = p->threads_m, threads_n = p->threads_n;
    if (threads_m * threads_n != team) {
        threads_m = team;
        threads_n = 1;
    }
    const int thread_m = thread / threads_n, thread_n = thread % threads_n;
    float *packed_a = p->packed_a + (int64_t)thread * p->packed_a_stride;
    _Alignas(64) float tile[AN_GEMM_MAX_MR * AN_GEMM_MAX_NR];

    const int64_t m_tiles = (p->M + mr - 1) / mr;
    /* Split over M with a partial last row tile and the full ones dividing
     * evenly, that tile is shared out by panels instead of going whole to
     * the last thread, which then held up every K block's barrier: 36 full
     * tiles of 14 and one of 8 rows (512 x 512 x 4608) ran at 1.012x the
     * rate (10 of 12 rounds faster, two threads, Zen 5).  With an odd
     * count of full tiles (1280 = 91 x 14 + 6) the whole partial tile
     * evens the split, and sharing it measured 0.986x.  Any thread may
     * compute any tile: the same sums. */
    const int share_fringe = threads_m > 1 && threads_n == 1 && p->M % mr != 0 &&
                             m_tiles - 1 >= threads_m && (m_tiles - 1) % threads_m == 0;
    int64_t tile_m0, tile_m1;
    split_range(share_fringe ? m_tiles - 1 : m_tiles, threads_m, thread_m, &tile_m0, &tile_m1);
    const int64_t row_begin = tile_m0 * mr;
    const int64_t row_end = tile_m1 * mr < p->M ? tile_m1 * mr : p->M;

    int64_t step = 0; /* counts (jc, pc) blocks: selects the B buffer */
    for (int64_t jc = 0; jc < p->N; jc += NC) {
#ifdef _OPENMP
        /* Split over N alone, each thread packs the slots of its own panels
         * and no barrier separates the blocks.  A new column block may split
         * its panels otherwise (the last one is narrower), so slots change
         * hands: a thread that went two blocks ahead into the same buffer
         * overwrote slots a slower thread was still reading (M = 4, N =
         * 4680, K = 432, a 520-channel layer's weight gradient: wrong sums,
         * about one call in 300).  All threads finish the previous column
         * block first. */
        if (jc > 0 && team > 1 && threads_m == 1) {
#pragma omp barrier
        }
#endif
        const int64_t nc = p->N - jc < NC ? p->N - jc : NC;
        const int64_t n_panels = (nc + nr - 1) / nr;
        int64_t panel0, panel1;
        split_range(n_panels, threads_n, thread_n, &panel0, &panel1);

        for (int64_t pc = 0; pc < p->K; pc += KC) {
            const int64_t kc = p->K - pc < KC ? p->K - pc : KC;
            const float beta = pc == 0 ? p->beta : 1.0f;
            /* Two B buffers alternate, so one barrier per block suffices:
             * a thread packing block s+1 has passed barrier s, so everyone
             * has finished reading block s-1, the buffer being reused. */
            float *packed_b = p->packed_b + (step++ % p->packed_b_buffers) * p->packed_b_stride;

            /* Every thread packs a share of the B block, then all wait
             * (nothing to pack when the micro-kernel reads B in place). */
            int64_t pack0 = 0, pack1 = 0;
            if (!p->b_offsets) split_range(n_panels, team, thread, &pack0, &pack1);
            /* split over N alone, a thread reads only the panels it packed
             * and needs no barrier; panel jp then has a slot of its own
             * (KC x NR, whatever this block's kc), so a thread a block ahead
             * writing its panels of the other buffer cannot reach those a
             * slower thread still reads */
            const int shared_b = threads_m > 1;
            /* With all of this thread's rows in one A block and no other
             * thread reading its B panels, each panel is packed just
             * before its tiles, into one slot of the thread's own (its
             * first panel's) that stays in L1, and nothing is packed here.
             * Packing the whole KC x NC block first wrote it out to L3
             * whenever it passed L2, and read it back from there.  On a
             * Zen 3, 64 x 1024 x 576 ran faster in 42-52 of 60 paired
             * rounds on one thread and 46 of 60 on two; 24 x 1024 x 144 on
             * two threads at 88 instead of 82 GFLOP/s (medians); no shape
             * tried was slower.  The tiles and their sums are the same. */
            const int pack_per_panel = threads_m == 1 && !p->b_rows && !p->b_offsets &&
                                       !p->rows_outer && row_end - row_begin <= MC;
            if (!pack_per_panel) {
                if (!p->pack_b && !p->b_rows && p->b_col == 1 && (nr == 32 || row_end - row_begin > MC)) {
                    /* a row-major B: its full panels row by row (see
                     * pack_b_full_panels_by_rows), the fringe below */
                    const int64_t full_end = nc / nr < pack1 ? nc / nr : pack1;
                    pack_b_full_panels_by_rows(p->B + pc * p->b_row + jc, p->b_row, kc, pack0,
                                               full_end, KC, nr, packed_b);
                    if (full_end > pack0) pack0 = full_end;
                }
                for (int64_t jp = pack0; jp < pack1; ++jp) {
                    const int64_t j = jc + jp * nr;
                    if (p->b_rows && p->N - j >= nr)
                        continue; /* read in place */
                    pack_b_panel(p, j, pc, kc, packed_b + jp * KC * nr);
                }
            }
#ifdef _OPENMP
            if (team > 1 && shared_b && !p->b_offsets) {
#pragma omp barrier
            }
#endif
            for (int64_t ic = row_begin; ic < row_end; ic += MC) {
                const int64_t mc = row_end - ic < MC ? row_end - ic : MC;
                const int64_t m_panels = (mc + mr - 1) / mr;
                /* panel ip of this A block at a_block + ip * a_panel_stride */
                const float *a_block = packed_a;
                int64_t a_panel_stride = kc * mr;
                if (p->a_prepacked) {
                    a_block = p->a_prepacked + (ic / mr) * p->K * mr + pc * mr;
                    a_panel_stride = p->K * mr;
                } else {
                    for (int64_t ip = 0; ip < m_panels; ++ip) {
                        const int64_t i = ic + ip * mr;
                        const int64_t rows = p->M - i < mr ? p->M - i : mr;
                        pack_panel(p->A + i * p->a_row + pc * p->a_col, p->a_row, p->a_col, rows, kc,
                                   mr, packed_a + ip * kc * mr);
                    }
                }
                if (pack_per_panel) {
                    /* one slot (a second, alternating, measured no faster) */
                    float *slot = packed_b + panel0 * KC * nr;
                    /* a row-major B read by the AVX2 kernel: the rules measured above */
                    const int row_major = is_avx2(uk) && p->b_col == 1 && !p->pack_b;
                    const int prefetch = row_major && m_panels >= PREFETCH_B_MIN_TILES &&
                                         p->b_row * (int64_t)sizeof(float) >= PREFETCH_B_MIN_ROW_BYTES;
                    const int64_t rows_per_tile = (kc + m_panels - 1) / m_panels;
                    /* Panels with fewer than 10 tiles (16-48 rows) are packed two at
                     * a time instead, from one pass over B's rows (the row-by-row
                     * packer over two panels): 128 bytes of each row, both halves
                     * of an adjacent-line pair, where packing one panel read 64
                     * bytes of a row and the next panel came back for the other 64
                     * after they had left L1 (rows 4 KB apart all fall in one L1
                     * set) and often L2.  On a Zen 3, one thread, in one process
                     * alternating with one panel at a time: 16 x 1024 x 144
                     * 0.85-0.88x the time, 24 x 1024 x 144 0.84x (24 of 24 rounds
                     * faster each), 16 x 1024 x 64 0.79x, 32 x 1024 x 144 0.88x,
                     * 40 x 1024 x 144 0.98x, 48 x 1024 x 256 0.98x; two threads
                     * 0.92x, 0.96x and 1.00x for 16, 24 and 32 x 1024 x 144.
                     * Where the prefetch applies, pairs measured 1.05-1.15x slower
                     * (128 x 512 x 1152, 64 x 1024 x 576): they bypass it, and two
                     * slots of a long K block crowd L1, so pairs take K blocks
                     * whose two slots fit L1 (up to 256 with 32 KB; at 288, 32 x
                     * 1024 x 288, pairs measured 0.99x).  The same panels, so the
                     * same sums. */
                    const int pairs = row_major && !prefetch && nr == 16 &&
                                      2 * kc * nr * (int64_t)sizeof(float) <=
                                          (int64_t)an_cpu_info_get()->l1d_bytes;
                    for (int64_t jp = panel0; jp < panel1; ++jp) {
                        const int64_t j = jc + jp * nr;
                        if (pairs && jp + 1 < panel1 && p->N - (j + nr) >= nr) {
                            float *second = slot + KC * nr; /* the next panel's own slot */
                            pack_b_full_panels_by_rows(p->B + pc * p->b_row + j, p->b_row, kc, 0, 2,
                                                       KC, nr, slot);
                            for (int64_t ip = 0; ip < m_panels; ++ip)
                                gemm_tile(p, a_block + ip * a_panel_stride, slot, ic + ip * mr, j,
                                          pc, kc, beta, tile);
                            for (int64_t ip = 0; ip < m_panels; ++ip)
                                gemm_tile(p, a_block + ip * a_panel_stride, second, ic + ip * mr,
                                          j + nr, pc, kc, beta, tile);
                            ++jp;
                            continue;
                        }
                        pack_b_panel(p, j, pc, kc, slot);
                        /* the next panel's rows, a share before each tile */
                        const int64_t next_j = jc + (jp + 1) * nr;
                        const float *next =
                            prefetch && jp + 1 < panel1 ? p->B + pc * p->b_row + next_j : NULL;
                        const int next_width = p->N - next_j < nr ? (int)(p->N - next_j) : nr;
                        for (int64_t ip = 0; ip < m_panels; ++ip) {
                            if (next) {
                                const int64_t k0 = ip * rows_per_tile;
                                const int64_t k1 = k0 + rows_per_tile < kc ? k0 + rows_per_tile : kc;
                                prefetch_panel_rows(next, p->b_row, k0, k1, next_width);
                            }
                            gemm_tile(p, a_block + ip * a_panel_stride, slot, ic + ip * mr,
                                      jc + jp * nr, pc, kc, beta, tile);
                        }
                    }
                } else if (p->rows_outer) {
                    /* A row of full tiles with their epilogue in one call: at K =
                     * 16-24 (the expansions of a fused block's 32x32 chunks)
                     * each tile is about 150 cycles of FMAs, and the call and
                     * gemm_tile's set-up per tile cost a tenth of that.  In one
                     * process alternating with tile-by-tile calls: the
                     * 24 -> 144 -> 24 block on 32x32 0.963x the time on one
                     * thread and 0.945x on two (14 of 14 rounds faster each),
                     * 16 -> 96 -> 24 0.959x; the MobileNetV2 plan 0.992x on two
                     * threads (13 of 24), 1.001x on one (6 of 14).  The same
                     * tiles, so the same bits. */
                    const int row_calls = uk->compute_epilogue_row && !p->b_rows && !p->b_offsets &&
                                          p->alpha == 1.0f && pc + kc >= p->K &&
                                          (p->row_bias || p->residual || p->act);
                    const int64_t full_end = nc / nr < panel1 ? nc / nr : panel1;
                    for (int64_t ip = 0; ip < m_panels; ++ip) {
                        const int64_t i = ic + ip * mr;
                        int64_t jp = panel0;
                        if (row_calls && p->M - i >= mr && full_end > panel0) {
                            const int64_t j = jc + panel0 * nr;
                            uk->compute_epilogue_row(
                                full_end - panel0, kc, a_block + ip * a_panel_stride,
                                packed_b + panel0 * KC * nr, KC * nr, p->C + i * p->ldc + j,
                                p->ldc, beta, p->row_bias ? p->row_bias + i : NULL,
                                p->residual ? p->residual + i * p->ldr + j : NULL, p->ldr, p->act);
                            jp = full_end;
                        }
                        for (; jp < panel1; ++jp)
                            gemm_tile(p, a_block + ip * a_panel_stride, packed_b + jp * KC * nr, i,
                                      jc + jp * nr, pc, kc, beta, tile);
                    }
                } else {
                    for (int64_t jp = panel0; jp < panel1; ++jp)
                        for (int64_t ip = 0; ip < m_panels; ++ip)
                            gemm_tile(p, a_block + ip * a_panel_stride, packed_b + jp * KC * nr,
                                      ic + ip * mr, jc + jp * nr, pc, kc, beta, tile);
                }
            }
            if (share_fringe) { /* this thread's panels of the partial row tile */
                const int64_t i = (m_tiles - 1) * mr;
                const float *a_panel = packed_a;
                if (p->a_prepacked)
                    a_panel = p->a_prepacked + (m_tiles - 1) * p->K * mr + pc * mr;
                else
                    pack_panel(p->A + i * p->a_row + pc * p->a_col, p->a_row, p->a_col, p->M - i, kc,
                               mr, packed_a);
                int64_t f0, f1;
                split_range(n_panels, team, thread, &f0, &f1);
                for (int64_t jp = f0; jp < f1; ++jp)
                    gemm_tile(p, a_panel, packed_b + jp * KC * nr, i, jc + jp * nr, pc, kc, beta, tile);
            }
        }
    }
}

/* Picks the threads_m x threads_n grid with the least work for the busiest
 * thread.  Ties go to splitting the dimension of the larger packed operand:
 * splitting M makes every thread read the B panels the others packed (a
 * core-to-core copy of B), splitting N makes every thread repack all of A.
 * At batch 1 a 1x1 layer has M = 16-32 channels and N = 1024 pixels, and
 * sharing its B made two threads slower than one.
 *
 * The work is counted in half tiles.  When A comes from beyond L2
 * (a_from_memory), each A panel a thread packs counts too, at half a
 * tile: that packing waits on memory.  512 x 512 x 4608 on two threads
 * split over N spent 5% of its time packing A (37 panels per K block)
 * against 81% in its 296 tiles; split over M the busiest thread has 304
 * tiles but packs 19 panels, and ran 1.022x the speed (11 of 12 rounds
 * faster, Zen 5, in fresh processes alternating with the old build);
 * 2048^3, whose grid this also turns, 1.023x (6 of 6).  Where A fits L2
 * (64 x 1024 x 576, 144 x 1024 x 24) a split over M measured 0.93x and
 * 0.91x, so A's packing is not counted there.  The grid never changes a
 * sum. */
static void choose_thread_grid(int threads, int64_t m_tiles, int64_t n_panels, int prefer_n,
                               int a_from_memory, int *threads_m, int *threads_n)
{
    int64_t best_cost = -1;
    *threads_m = threads;
    *threads_n = 1;
    for (int i = 0; i < threads; ++i) {
        int tm = prefer_n ? i + 1 : threads - i;
        if (threads % tm) continue;
        int tn = threads / tm;
        const int64_t busy_m = (m_tiles + tm - 1) / tm;
        int64_t cost = busy_m * (2 * ((n_panels + tn - 1) / tn) + (a_from_memory ? 1 : 0));
        if (best_cost < 0 || cost < best_cost) {
            best_cost = cost;
            *threads_m = tm;
            *threads_n = tn;
        }
    }
}

static int max_threads(void)
{
#ifdef _OPENMP
    /* inside a caller's parallel region (a convolution's image units) the
     * GEMM runs on the calling thread */
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

/* Whether this kernel reads a few-row product's B rows in place (see
 * gemm_blocked) when they lie b_row floats apart. */
static int b_rows_in_place_pays(const an_gemm_ukernel *uk, int64_t b_row)
{
    if (is_avx2(uk)) return (b_row * (int64_t)sizeof(float)) % 4096 != 0;
    return uk->nr == 32; /* AVX-512 */
}

static int gemm_blocked(gemm_problem *p)
{
    const an_gemm_ukernel *uk = p->uk;
    p->blk = choose_blocking(uk, p->M, p->N, p->K);

    const int64_t m_tiles = (p->M + uk->mr - 1) / uk->mr;
    const int64_t n_panels = (p->blk.nc + uk->nr - 1) / uk->nr;
    int threads = max_threads();
    if ((double)p->M * (double)p->N * (double)p->K < (double)AN_GEMM_MIN_PARALLEL_MACS) threads = 1;
    if ((int64_t)threads > m_tiles * n_panels) threads = (int)(m_tiles * n_panels);
    if (threads < 1) threads = 1;
    const int a_from_memory = !p->a_prepacked && (double)p->M * (double)p->K * sizeof(float) >
                                                     (double)an_cpu_info_get()->l2_bytes;
    choose_thread_grid(threads, m_tiles, n_panels, p->N > p->M, a_from_memory, &p->threads_m,
                       &p->threads_n);

    /* One K block on one thread: C written row panel by row panel (each of
     * its MR rows a forward run) instead of column panel by column panel
     * (MR rows of NR columns at a time, each row on another page): the
     * prefetchers follow the runs into a C that is not in cache.  A 1x1
     * layer of 144 x 24 on a 32x32 plane, in MobileNetV2 at batch 1, took
     * 63 us instead of 75.  The B panels, all packed, then come from L2
     * rather than L1: kept to short sums (K up to 64), where writing C is
     * most of the work, and to a B block well inside L2.  On two threads
     * splitting N it measured 1-2 us slower per layer, so they keep the
     * column order. */
    p->rows_outer = threads == 1 && p->K <= 64 && m_tiles > 4 &&
                    p->K * round_up(p->blk.nc, uk->nr) * (int64_t)sizeof(float) <=
                        (int64_t)an_cpu_info_get()->l2_bytes / 4;
    /* All memory is reserved here, before any thread starts. */
    const int64_t align_floats = AN_WORKSPACE_ALIGN / (int64_t)sizeof(float);
    p->packed_b_stride = round_up(p->blk.kc * round_up(p->blk.nc, uk->nr), align_floats);
    p->packed_b_buffers = threads > 1 ? 2 : 1;
    if (p->b_offsets) p->packed_b_stride = 0; /* B is read in place */
    const int64_t packed_b_floats = p->packed_b_stride * p->packed_b_buffers;
    p->packed_a_stride = p->a_prepacked ? 0 : round_up(p->blk.kc * p->blk.mc, align_floats);
    /* A few rows of A (up to four micro-tiles: a 1x1 convolution with 16-56
     * output channels) use each B panel a few times: packing B, a copy of
     * all of it, then costs more than reading its rows where they are (the
     * *_rows micro-kernels, the same sums).  Each thread reads only its own
     * panels, so this needs a split over N alone.  The AVX2 tile reads one
     * 64-byte line per row of B: on rows 4 KB apart (a whole plane of 1024
     * or more pixels), which share an L1 set, packed B ran 16 x 1024 x 144 at
     * 47 instead of 32 GFLOP/s and 24 x 1024 x 144 at 60 instead of 44 (Zen
     * 3, one thread), so AVX2 packs those (and the portable kernel, not
     * measured, packs all).  Rows closer than that, a fused
     * block's chunk of 8 rows of a 32x32 plane (1 KB apart), it reads in
     * place: MobileNetV2's batch-1 plan 0.965x the time on two threads (14
     * of 20 rounds faster) and 0.975x on one (11 of 14), in one process
     * alternating with packed B; its 24 -> 144 -> 24 block on 32x32 0.970x
     * on both.  In training the rule also takes ShuffleNetV2's 24 x 256 x 58
     * input gradients (one per image): its step at batch 128 0.935x (6 of 8);
     * ResNet-20's and MobileNetV2's steps within the noise (1.03x, 3 of 6;
     * 1.01x, 1 of 4). */
    const int b_rows = !p->b_offsets && !p->pack_b && p->b_col == 1 && m_tiles <= 4 &&
                       b_rows_in_place_pays(uk, p->b_row) &&
                       p->threads_m == 1 && p->N >= uk->nr;
    const size_t rows_floats = b_rows ? (size_t)round_up(2 * p->blk.kc, align_floats) : 0;
    const size_t bytes = ((size_t)packed_b_floats + (size_t)p->packed_a_stride * (size_t)threads +
                          rows_floats) * sizeof(float);
    float *workspace = workspace_reserve(bytes);
    if (!workspace) return -1;
    p->packed_b = workspace;
    p->packed_a = workspace + packed_b_floats;
    if (b_rows) {
        int64_t *table = (int64_t *)(p->packed_a + p->packed_a_stride * threads);
        for (int64_t k = 0; k < p->blk.kc; ++k) table[k] = k * p->b_row;
        p->b_rows = table;
    }

#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        gemm_thread(p, omp_get_thread_num(), omp_get_num_threads());
        return 0;
    }
#endif
    gemm_thread(p, 0, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Matrix-vector (M == 1 or N == 1)                                         */
/* ------------------------------------------------------------------------ */

/* y[i * incy] = alpha * sum_k X[i * x_row + k * x_col] * v[k * incv] + beta * y[i * incy].
 * A packed tile would waste up to MR or NR times the work here. */
typedef struct gemv_problem {
    int64_t rows, K;
    float alpha, beta;
    const float *X;
    int64_t x_row, x_col;
    const float *v;
    int64_t incv;
    float *y;
    int64_t incy;
} gemv_problem;

#define AN_GEMV_LANES 16
#define AN_GEMV_CHUNK 256

static void gemv_store(float *y, float alpha, float beta, float sum)
{
    *y = beta == 0.0f ? alpha * sum : alpha * sum + beta * *y;
}

/* Dot products along contiguous rows.  Sixteen independent partial sums
 * (combined in a fixed order) let the compiler vectorise without
 * reassociating a single float sum. */
static void gemv_rows_dot(const gemv_problem *p, int64_t row0, int64_t row1)
{
    for (int64_t i = row0; i < row1; ++i) {
        const float *x = p->X + i * p->x_row;
        float lanes[AN_GEMV_LANES] = {0.0f};
        int64_t k = 0;
        if (p->incv == 1) {
            for (; k + AN_GEMV_LANES <= p->K; k += AN_GEMV_LANES)
                for (int l = 0; l < AN_GEMV_LANES; ++l) lanes[l] += x[k + l] * p->v[k + l];
        } else {
            for (; k + AN_GEMV_LANES <= p->K; k += AN_GEMV_LANES)
                for (int l = 0; l < AN_GEMV_LANES; ++l)
                    lanes[l] += x[k + l] * p->v[(k + l) * p->incv];
        }
        for (int width = AN_GEMV_LANES / 2; width >= 1; width /= 2)
            for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
        float sum = lanes[0];
        for (; k < p->K; ++k) sum += x[k] * p->v[k * p->incv];
        gemv_store(p->y + i * p->incy, p->alpha, p->beta, sum);
    }
}

/* Outputs contiguous in X: accumulate k by k over a chunk of outputs. */
static void gemv_columns_axpy(const gemv_problem *p, int64_t row0, int64_t row1)
{
    for (int64_t i0 = row0; i0 < row1; i0 += AN_GEMV_CHUNK) {
        const int64_t count = row1 - i0 < AN_GEMV_CHUNK ? row1 - i0 : AN_GEMV_CHUNK;
        float sums[AN_GEMV_CHUNK] = {0.0f};
        for (int64_t k = 0; k < p->K; ++k) {
            const float scale = p->v[k * p->incv];
            const float *x = p->X + i0 + k * p->x_col;
            for (int64_t i = 0; i < count; ++i) sums[i] += scale * x[i];
        }
        for (int64_t i = 0; i < count; ++i)
            gemv_store(p->y + (i0 + i) * p->incy, p->alpha, p->beta, sums[i]);
    }
}

static void gemv_strided(const gemv_problem *p, int64_t row0, int64_t row1)
{
    for (int64_t i = row0; i < row1; ++i) {
        float sum = 0.0f;
        for (int64_t k = 0; k < p->K; ++k)
            sum += p->X[i * p->x_row + k * p->x_col] * p->v[k * p->incv];
        gemv_store(p->y + i * p->incy, p->alpha, p->beta, sum);
    }
}

static void gemv_range(const gemv_problem *p, int64_t row0, int64_t row1)
{
    if (p->x_col == 1) gemv_rows_dot(p, row0, row1);
    else if (p->x_row == 1) gemv_columns_axpy(p, row0, row1);
    else gemv_strided(p, row0, row1);
}

static void gemv(const gemv_problem *p)
{
    int threads = max_threads();
    if ((double)p->rows * (double)p->K < (double)AN_GEMV_MIN_PARALLEL_MACS) threads = 1;
    /* Split in whole chunks so every output is computed the same way. */
    const int64_t chunks = (p->rows + AN_GEMV_CHUNK - 1) / AN_GEMV_CHUNK;
    if ((int64_t)threads > chunks) threads = (int)chunks;
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
            int64_t c0, c1;
            split_range(chunks, omp_get_num_threads(), omp_get_thread_num(), &c0, &c1);
            int64_t row0 = c0 * AN_GEMV_CHUNK;
            int64_t row1 = c1 * AN_GEMV_CHUNK < p->rows ? c1 * AN_GEMV_CHUNK : p->rows;
            if (row0 < row1) gemv_range(p, row0, row1);
        }
        return;
    }
#endif
    gemv_range(p, 0, p->rows);
}

/* ------------------------------------------------------------------------ */
/* Narrow products (few columns)                                            */
/* ------------------------------------------------------------------------ */

static int narrow_applies(const gemm_problem *p)
{
    return p->uk->narrow && p->alpha == 1.0f && p->a_col == 1 && p->b_col == 1 && !p->pack_b &&
           !p->b_offsets && p->N <= p->uk->narrow_max_n;
}

/* Below this many rows the AVX-512 narrow path splits them in blocks of 8,
 * not 14: a 64-row product then splits 32 / 32 between two threads, not
 * 42 / 22. */
#define AN_GEMM_NARROW_FINE_ROWS 224

/* Rows in a block: the split never cuts a pre-packed A's panel.  A kernel
 * of one tile height under 8 rows (AVX2's 6) takes blocks of that height;
 * AVX-512's narrow kernels have blocks of 14 and 8 rows. */
static int64_t narrow_rows_per_block(const gemm_problem *p)
{
    if (p->a_prepacked || p->uk->mr < 8) return p->uk->mr;
    return p->M >= AN_GEMM_NARROW_FINE_ROWS ? 14 : 8;
}

/* Rows [row0, row1) of the product's sum over k in [k0, k1) (k0 on a K
 * block's first column) on the calling thread. */
static void narrow_part(const gemm_problem *p, int64_t KC, int64_t row0, int64_t row1, int64_t k0,
                        int64_t k1)
{
    if (row0 >= row1 || k0 >= k1) return;
    const float *bias = p->row_bias ? p->row_bias + row0 : NULL;
    const float *residual = p->residual ? p->residual + row0 * p->ldr : NULL;
    const float *b = p->B + k0 * p->b_row;
    if (p->a_prepacked)
        p->uk->narrow_prepacked(row1 - row0, p->N, k1 - k0, KC,
                                p->a_prepacked + row0 * p->K + k0 * p->uk->mr, p->uk->mr,
                                p->K * p->uk->mr, b, p->b_row, p->beta, p->C + row0 * p->ldc,
                                p->ldc, bias, residual, p->ldr, p->act);
    else
        p->uk->narrow(row1 - row0, p->N, k1 - k0, KC, p->A + row0 * p->a_row + k0, p->a_row, b,
                      p->b_row, p->beta, p->C + row0 * p->ldc, p->ldc, bias, residual, p->ldr,
                      p->act);
}

/* Rows [row0, row1) of the product on the calling thread. */
static void narrow_rows(const gemm_problem *p, int64_t KC, int64_t row0, int64_t row1)
{
    narrow_part(p, KC, row0, row1, 0, p->K);
}

/* Rows split across threads in contiguous runs of blocks of 14 rows (8 for
 * fewer than AN_GEMM_NARROW_FINE_ROWS); every element is summed the same way
 * whichever block holds it, so this is bit-identical to gemm_blocked on the
 * same problem, for any thread count. */
static void gemm_narrow(const gemm_problem *p)
{
    const int64_t KC = choose_blocking(p->uk, p->M, p->N, p->K).kc;
    const int64_t rows_per_block = narrow_rows_per_block(p);
    const int64_t blocks = (p->M + rows_per_block - 1) / rows_per_block;
    int threads = max_threads();
    if ((double)p->M * (double)p->N * (double)p->K < (double)AN_GEMM_MIN_PARALLEL_MACS) threads = 1;
    if ((int64_t)threads > blocks) threads = (int)blocks;
    if (threads <= 1) {
        /* no region at all: even a team of one costs an allocation, and
           Winograd calls this 36 times per chunk from inside its own team */
        narrow_rows(p, KC, 0, p->M);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        int64_t b0 = 0, b1 = blocks;
#ifdef _OPENMP
        split_range(blocks, omp_get_num_threads(), omp_get_thread_num(), &b0, &b1);
#endif
        narrow_rows(p, KC, b0 * rows_per_block,
                    b1 * rows_per_block < p->M ? b1 * rows_per_block : p->M);
    }
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                              */
/* ------------------------------------------------------------------------ */

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; ++i) {
        float *row = C + i * ldc;
        if (beta == 0.0f) {
            for (int64_t j = 0; j < N; ++j) row[j] = 0.0f;
        } else if (beta != 1.0f) {
            for (int64_t j = 0; j < N; ++j) row[j] *= beta;
        }
    }
}

/* Empty C, or C = beta * C (K == 0 or alpha == 0): done without A or B. */
static int trivial_product(int64_t M, int64_t N, int64_t K, float alpha, float beta, float *C,
                           int64_t ldc)
{
    if (M <= 0 || N <= 0) return 1;
    if (K > 0 && alpha != 0.0f) return 0;
    scale_c(M, N, beta, C, ldc);
    return 1;
}

/* The fields every entry point sets: sizes, scalars, op(A), C, kernel. */
static void problem_init(gemm_problem *p, int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, float beta, float *C, int64_t ldc)
{
    memset(p, 0, sizeof *p);
    p->M = M;
    p->N = N;
    p->K = K;
    p->alpha = alpha;
    p->beta = beta;
    p->A = A;
    p->a_row = trans_a ? 1 : lda;
    p->a_col = trans_a ? lda : 1;
    p->C = C;
    p->ldc = ldc;
    p->uk = select_ukernel(M, K);
}

/* A problem with B in memory: the narrow path where it applies, else blocked. */
static int gemm_run(gemm_problem *p)
{
    if (narrow_applies(p)) {
        gemm_narrow(p);
        return 0;
    }
    return gemm_blocked(p);
}

int an_gemm_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc)
{
    if (trivial_product(M, N, K, alpha, beta, C, ldc)) return 0;
    /* op(A)(i, k) and op(B)(k, j) as (row, column) strides. */
    const int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
    const int64_t b_row = trans_b ? 1 : ldb, b_col = trans_b ? ldb : 1;

    if (N == 1) {
        gemv_problem g = {M, K, alpha, beta, A, a_row, a_col, B, b_row, C, ldc};
        gemv(&g);
        return 0;
    }
    if (M == 1) {
        /* C row = op(B)^T op(A)^T: outputs run along N. */
        gemv_problem g = {N, K, alpha, beta, B, b_col, b_row, A, a_col, C, 1};
        gemv(&g);
        return 0;
    }

    gemm_problem p;
    problem_init(&p, trans_a, M, N, K, alpha, A, lda, beta, C, ldc);
    p.B = B;
    p.b_row = b_row;
    p.b_col = b_col;
    return gemm_run(&p);
}

int an_gemm_f32_epilogue(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc,
                         const float *row_bias, const float *residual, int64_t ldr, int act)
{
    return an_gemm_f32_epilogue_prepacked(M, N, K, A, lda, NULL, B, ldb, C, ldc, row_bias,
                                          residual, ldr, act);
}

int an_gemm_packed_a_rows(int64_t M, int64_t K)
{
    return select_ukernel(M, K)->mr;
}

int64_t an_gemm_packed_a_floats(int64_t M, int64_t K)
{
    if (M <= 0 || K <= 0) return 0;
    const int64_t rows = an_gemm_packed_a_rows(M, K);
    return (M + rows - 1) / rows * rows * K;
}

void an_gemm_pack_a(int64_t M, int64_t K, const float *A, int64_t lda, float *packed)
{
    if (M <= 0 || K <= 0) return;
    const int64_t panel_rows = an_gemm_packed_a_rows(M, K);
    for (int64_t i = 0; i < M; i += panel_rows) {
        const int64_t rows = M - i < panel_rows ? M - i : panel_rows;
        pack_panel(A + i * lda, lda, 1, rows, K, (int)panel_rows, packed + i * K);
    }
}

/* The problem an_gemm_f32_epilogue_prepacked would solve, for the split
   entry points below. */
static void epilogue_problem(gemm_problem *p, int64_t M, int64_t N, int64_t K, const float *A,
                             int64_t lda, const float *a_packed, const float *B, int64_t ldb,
                             float *C, int64_t ldc, const float *row_bias, const float *residual,
                             int64_t ldr, int act)
{
    problem_init(p, 0, M, N, K, 1.0f, A, lda, 0.0f, C, ldc);
    p->a_prepacked = a_packed;
    p->B = B;
    p->b_row = ldb;
    p->b_col = 1;
    p->row_bias = row_bias;
    p->residual = residual;
    p->ldr = ldr;
    p->act = act;
}

int64_t an_gemm_narrow_blocks(int64_t M, int64_t N, int64_t K, int prepacked,
                              int64_t *rows_per_block)
{
    *rows_per_block = 0;
    if (M < 2 || N < 2 || K < 1) return 0;
    static const float dummy;
    gemm_problem p;
    epilogue_problem(&p, M, N, K, &dummy, K, prepacked ? &dummy : NULL, &dummy, N, NULL, N, NULL,
                     NULL, 0, AN_GEMM_ACT_NONE);
    if (!narrow_applies(&p)) return 0;
    *rows_per_block = narrow_rows_per_block(&p);
    return (M + *rows_per_block - 1) / *rows_per_block;
}

const an_gemm_ukernel *an_gemm_ukernel_for(int64_t M, int64_t K)
{
    return select_ukernel(M, K);
}

void an_gemm_block_sizes(int64_t M, int64_t N, int64_t K, int64_t *kc, int64_t *mc, int64_t *nc)
{
    const gemm_blocking blk = choose_blocking(select_ukernel(M, K), M, N, K);
    *kc = blk.kc;
    *mc = blk.mc;
    *nc = blk.nc;
}

int64_t an_gemm_kc(int64_t M, int64_t N, int64_t K)
{
    return choose_blocking(select_ukernel(M, K), M, N, K).kc;
}

/* KC depends on N only through N <= AN_GEMM_SMALL_PLANE_MAX_N (see
   choose_blocking): one step, so the two ends decide. */
int an_gemm_kc_same_over(int64_t M, int64_t n0, int64_t n1, int64_t K)
{
    const an_gemm_ukernel *uk = select_ukernel(M, K);
    return choose_blocking(uk, M, n0, K).kc == choose_blocking(uk, M, n1, K).kc;
}

void an_gemm_f32_prepacked_k_range(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                   const float *a_packed, const float *B, int64_t ldb, float *C,
                                   int64_t ldc, int64_t k0, int64_t k1)
{
    gemm_problem p;
    epilogue_problem(&p, M, N, K, A, lda, a_packed, B, ldb, C, ldc, NULL, NULL, 0,
                     AN_GEMM_ACT_NONE);
    if (narrow_applies(&p))
        narrow_part(&p, choose_blocking(p.uk, M, N, K).kc, 0, M, k0 < 0 ? 0 : k0, k1 > K ? K : k1);
}

void an_gemm_f32_epilogue_prepacked_rows(int64_t M, int64_t N, int64_t K, const float *A,
                                         int64_t lda, const float *a_packed, const float *B,
                                         int64_t ldb, float *C, int64_t ldc,
                                         const float *row_bias, const float *residual,
                                         int64_t ldr, int act, int64_t row0, int64_t row1)
{
    gemm_problem p;
    epilogue_problem(&p, M, N, K, A, lda, a_packed, B, ldb, C, ldc, row_bias, residual, ldr, act);
    if (narrow_applies(&p))
        narrow_rows(&p, choose_blocking(p.uk, M, N, K).kc, row0 < 0 ? 0 : row0, row1 > M ? M : row1);
}

int an_gemm_f32_epilogue_prepacked(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                   const float *a_packed, const float *B, int64_t ldb, float *C,
                                   int64_t ldc, const float *row_bias, const float *residual,
                                   int64_t ldr, int act)
{
    if (M <= 0 || N <= 0) return 0;
    gemm_problem p;
    epilogue_problem(&p, M, N, K, A, lda, a_packed, B, ldb, C, ldc, row_bias, residual, ldr, act);
    if (K <= 0 || M == 1 || N == 1) { /* no tiles to finish: a plain product, then a pass */
        if (an_gemm_f32(0, 0, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc) != 0) return -1;
        tile_epilogue(&p, C, 0, 0, M, N);
        return 0;
    }
    return gemm_run(&p);
}

int an_gemm_f32_pack_b(int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, an_gemm_pack_b_fn pack_b,
                       const void *source, float beta, float *C, int64_t ldc)
{
    if (trivial_product(M, N, K, alpha, beta, C, ldc)) return 0;
    gemm_problem p;
    problem_init(&p, trans_a, M, N, K, alpha, A, lda, beta, C, ldc);
    p.pack_b = pack_b;
    p.pack_b_source = source;
    return gemm_blocked(&p);
}

int an_gemm_f32_rows_b(int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *b, const int64_t *b_offsets,
                       float beta, float *C, int64_t ldc)
{
    if (trivial_product(M, N, K, alpha, beta, C, ldc)) return 0;
    gemm_problem p;
    problem_init(&p, trans_a, M, N, K, alpha, A, lda, beta, C, ldc);
    p.B = b;
    p.b_offsets = b_offsets;
    return gemm_blocked(&p);
}
