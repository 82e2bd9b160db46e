/* AVX-512 micro-kernels: MR rows x 32 columns (two zmm per row), MR = 14 or 8.
 * 14 x 32 uses 28 accumulators + 2 B vectors; the A values are broadcast
 * straight from memory as FMA operands ({1to16}), so no register is spent on
 * them and all 32 zmm registers are in use without spilling.  Per k step it
 * issues 28 FMAs for 2 vector loads + 14 broadcasts, keeping both FMA ports
 * busy while the loads fit in the two load ports.  Beside the tile: a row
 * of tiles with their epilogue in one call, a tile's fringe rows straight
 * into C, and the narrow products (N <= 64, A and B read in place). */
#include "kernels/gemm.h"
#include "kernels/simd_activate.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX512_NR 32

/* The epilogue of one vector of row i: + row_bias[i], + the residual (its
 * lanes in `mask`), then the activation (an_avx512_activate), in that order
 * (the operations of an_epilogue_rows). */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) __m512
finish_vector(__m512 v, const float *row_bias, int i, const float *residual, __mmask16 mask,
              int act)
{
    if (row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(row_bias[i]));
    if (residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, residual));
    return an_avx512_activate(v, act);
}

/* Row i of a tile leaving with its epilogue (alpha 1): its two vectors +
 * beta * C (beta 0: C not read), then with `finish` finish_vector. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
store_row_epilogue(float *row, const __m512 acc[2], float beta, const int finish,
                   const float *row_bias, int i, const float *residual_row, int act)
{
    for (int h = 0; h < 2; ++h) {
        __m512 v = acc[h];
        if (beta != 0.0f)
            v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(row + 16 * h)));
        if (finish)
            v = finish_vector(v, row_bias, i, residual_row ? residual_row + 16 * h : NULL,
                              (__mmask16)0xFFFF, act);
        _mm512_storeu_ps(row + 16 * h, v);
    }
}

/* The packed B micro-panel is read again for every micro-tile of a row
 * block, but the A panel streaming past it evicts some of its lines from
 * L1: a prefetch 64 rows (8 KB) ahead brings them back before they are
 * needed (2048^2 on one thread: +1.5%, paired medians of 16 alternating
 * runs; 8 and 32 rows ahead: +0.4% and +1%). */
#define AN_B_PREFETCH_ROWS 64

/* How many k steps before the end of a tile's sum its C rows are fetched:
 * at the start of the sum (as before the twenty-sixth round) they took L1
 * ways from the B micro-panel for the whole tile.  The sum runs as two
 * loops with the fetch between them: a test for the step inside one loop
 * measured ResNet-20's training step 1.015x the time (3 of 10 rounds
 * faster), the two loops 0.985x (7 of 8).  On the Zen 5, fresh processes
 * alternating with the old build, two loops: 1280 x 512 x 320 +2.0% on one
 * thread (6 of 6) and +2.1% on two (5 of 5), 2048^2 +3.0% and 512 x 512 x
 * 4608 +1.0% on two (5 of 5, 3 of 5).  No prefetch at all measured as the
 * old build.  The AVX2 kernel, forced on the same machine, measured
 * 0.99-1.01x with the test in its loop and keeps its fetch at the start
 * (tuned on a Zen 3). */
#define AN_C_PREFETCH_LATE_K 64

/* One body for every row count; `mr` is a compile-time constant in each
 * instantiation below, so the accumulators stay in registers. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
gemm_ukernel_avx512_body(const int mr, int64_t kc, const float *packed_a, const float *packed_b,
                         const int64_t *b_offsets, float *c, int64_t ldc, float alpha, float beta,
                         const int epilogue, const float *row_bias, const float *residual,
                         int64_t ldr, int act)
{
    __m512 acc[14][2];
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    /* The C tile is touched only at the end: it is pulled into L1 while the
     * last AN_C_PREFETCH_LATE_K steps run (all of them when kc is shorter),
     * early enough to come from L3 or memory, late enough not to sit in L1
     * beside the B micro-panel through the whole sum (or be evicted before
     * the stores: 14 rows of a C with 2048 columns share two L1 sets). */
    const int64_t prefetch_c_at = kc > AN_C_PREFETCH_LATE_K ? kc - AN_C_PREFETCH_LATE_K : 0;
    const float *a = packed_a;
    const float *b = packed_b;
    /* one k step: B's row k (packed, or in place through b_offsets) times
       the A panel's column k into the accumulators */
#define AVX512_K_STEP()                                                                          \
    do {                                                                                         \
        __m512 b0, b1;                                                                           \
        if (b_offsets) { /* B read in place: row k anywhere, unaligned */                        \
            b0 = _mm512_loadu_ps(packed_b + b_offsets[k]);                                       \
            b1 = _mm512_loadu_ps(packed_b + b_offsets[k] + 16);                                  \
        } else {                                                                                 \
            b0 = _mm512_load_ps(b);                                                              \
            b1 = _mm512_load_ps(b + 16);                                                         \
            _mm_prefetch((const char *)(b + AN_B_PREFETCH_ROWS * AVX512_NR), _MM_HINT_T0);       \
            _mm_prefetch((const char *)(b + AN_B_PREFETCH_ROWS * AVX512_NR + 16), _MM_HINT_T0);  \
        }                                                                                        \
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i)                                    \
        {                                                                                        \
            __m512 ai = _mm512_set1_ps(a[i]);                                                    \
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);                                      \
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);                                      \
        }                                                                                        \
        a += mr;                                                                                 \
        b += AVX512_NR;                                                                          \
    } while (0)
    /* the sum in two loops, the C fetch between them (no test in the steps) */
    int64_t k = 0;
#pragma GCC unroll 2
    for (; k < prefetch_c_at; ++k)
        AVX512_K_STEP();
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (; k < kc; ++k)
        AVX512_K_STEP();
#undef AVX512_K_STEP
    if (epilogue) { /* alpha is 1: C + beta * C_old rounds once, as the FMA below */
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i)
            store_row_epilogue(c + i * ldc, acc[i], beta, 1, row_bias, i,
                               residual ? residual + i * ldr : NULL, act);
        return;
    }
    __m512 valpha = _mm512_set1_ps(alpha);
    if (beta == 0.0f) {
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) {
            _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(valpha, acc[i][0]));
            _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(valpha, acc[i][1]));
        }
    } else {
        __m512 vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) {
            float *row = c + i * ldc;
            __m512 c0 = _mm512_mul_ps(vbeta, _mm512_loadu_ps(row));
            __m512 c1 = _mm512_mul_ps(vbeta, _mm512_loadu_ps(row + 16));
            _mm512_storeu_ps(row, _mm512_fmadd_ps(valpha, acc[i][0], c0));
            _mm512_storeu_ps(row + 16, _mm512_fmadd_ps(valpha, acc[i][1], c1));
        }
    }
}

AN_TARGET_AVX512
static void gemm_ukernel_avx512_14x32(int64_t kc, const float *packed_a, const float *packed_b,
                                      float *c, int64_t ldc, float alpha, float beta)
{
    gemm_ukernel_avx512_body(14, kc, packed_a, packed_b, NULL, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

/* 8 x 32: 16 accumulators.  Fewer FMAs per broadcast than 14 x 32, but no
 * wasted rows when M is a multiple of 8 and not of 14 (16, 32, 64 output
 * channels); the driver picks it per call from M alone. */
AN_TARGET_AVX512
static void gemm_ukernel_avx512_8x32(int64_t kc, const float *packed_a, const float *packed_b,
                                     float *c, int64_t ldc, float alpha, float beta)
{
    gemm_ukernel_avx512_body(8, kc, packed_a, packed_b, NULL, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

AN_TARGET_AVX512
static void gemm_ukernel_avx512_14x32_rows(int64_t kc, const float *packed_a, const float *b,
                                           const int64_t *b_offsets, float *c, int64_t ldc,
                                           float alpha, float beta)
{
    gemm_ukernel_avx512_body(14, kc, packed_a, b, b_offsets, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

AN_TARGET_AVX512
static void gemm_ukernel_avx512_8x32_rows(int64_t kc, const float *packed_a, const float *b,
                                          const int64_t *b_offsets, float *c, int64_t ldc,
                                          float alpha, float beta)
{
    gemm_ukernel_avx512_body(8, kc, packed_a, b, b_offsets, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

/* `tiles` full tiles side by side along a row of C from packed B panels
 * b_stride floats apart, each leaving through its epilogue: a body per
 * activation, residual or none and beta 0 (a product's first K block) or
 * not, so that the tile's epilogue carries no tests.  With the 16-24
 * products per tile of a fused block's expansion on 32x32 planes, the
 * epilogue costs about as much as the sums (the AVX2 kernel's
 * epilogue_row_body, the same bits as the tile-by-tile calls).  With the
 * fringe rows below, on the Zen 5: a 24 -> 144 1x1 layer with bias on a
 * 32x32 plane 39.0 -> 32.0 us on one thread, 16 -> 96 20.3 -> 15.4 us; the
 * MobileNetV2 batch-1 plan 0.982x the time on two threads (15 of 16 rounds
 * faster), 0.973x on one (6 of 10), old and new builds alternating. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
epilogue_row_body(const int mr, int64_t tiles, int64_t kc, const float *packed_a, const float *b,
                  int64_t b_stride, float *c, int64_t ldc, float beta, const float *row_bias,
                  const float *residual, int64_t ldr, int act)
{
#define AVX512_EPILOGUE_ROW(ACT)                                                                 \
    do {                                                                                         \
        if (residual)                                                                            \
            for (int64_t t = 0; t < tiles; ++t)                                                  \
                gemm_ukernel_avx512_body(mr, kc, packed_a, b + t * b_stride, NULL,               \
                                         c + t * AVX512_NR, ldc, 1.0f, beta, 1, row_bias,        \
                                         residual + t * AVX512_NR, ldr, ACT);                    \
        else if (beta == 0.0f)                                                                   \
            for (int64_t t = 0; t < tiles; ++t)                                                  \
                gemm_ukernel_avx512_body(mr, kc, packed_a, b + t * b_stride, NULL,               \
                                         c + t * AVX512_NR, ldc, 1.0f, 0.0f, 1, row_bias, NULL,  \
                                         0, ACT);                                                \
        else                                                                                     \
            for (int64_t t = 0; t < tiles; ++t)                                                  \
                gemm_ukernel_avx512_body(mr, kc, packed_a, b + t * b_stride, NULL,               \
                                         c + t * AVX512_NR, ldc, 1.0f, beta, 1, row_bias, NULL,  \
                                         0, ACT);                                                \
    } while (0)
    if (act == AN_GEMM_ACT_RELU6)
        AVX512_EPILOGUE_ROW(AN_GEMM_ACT_RELU6);
    else if (act == AN_GEMM_ACT_RELU)
        AVX512_EPILOGUE_ROW(AN_GEMM_ACT_RELU);
    else
        AVX512_EPILOGUE_ROW(AN_GEMM_ACT_NONE);
#undef AVX512_EPILOGUE_ROW
}

#define AN_AVX512_EPILOGUE(MR)                                                                   \
    AN_TARGET_AVX512 static void gemm_ukernel_avx512_##MR##x32_epilogue(                          \
        int64_t kc, const float *packed_a, const float *b, const int64_t *b_offsets, float *c,   \
        int64_t ldc, float beta, const float *row_bias, const float *residual, int64_t ldr,      \
        int act)                                                                                 \
    {                                                                                            \
        if (b_offsets)                                                                           \
            gemm_ukernel_avx512_body(MR, kc, packed_a, b, b_offsets, c, ldc, 1.0f, beta, 1,      \
                                     row_bias, residual, ldr, act);                              \
        else /* packed B (the 1x1 layers) */                                                     \
            epilogue_row_body(MR, 1, kc, packed_a, b, 0, c, ldc, beta, row_bias, residual, ldr,  \
                              act);                                                              \
    }                                                                                            \
    AN_TARGET_AVX512 static void gemm_ukernel_avx512_##MR##x32_epilogue_row(                      \
        int64_t tiles, int64_t kc, const float *packed_a, const float *b, int64_t b_stride,      \
        float *c, int64_t ldc, float beta, const float *row_bias, const float *residual,         \
        int64_t ldr, int act)                                                                    \
    {                                                                                            \
        epilogue_row_body(MR, tiles, kc, packed_a, b, b_stride, c, ldc, beta, row_bias, residual, \
                          ldr, act);                                                             \
    }
AN_AVX512_EPILOGUE(14)
AN_AVX512_EPILOGUE(8)

/* ---- A tile's first h (8, 4, 2 or 1) rows of the panel's MR, straight into C */

/* The fringe rows of a product whose M is not a multiple of MR (144 rows:
 * ten panels of 14, then 4) went through a whole tile computed into a
 * scratch tile, copied into C and then given their epilogue: the unused
 * rows' FMAs and two more passes.  Here the h rows are summed in 2h
 * registers (the same FMA per k, in increasing k, as the full tile's lanes)
 * and leave as the epilogue kernel's rows do: + beta * C, then (finish)
 * bias, residual and activation.  alpha is 1, so these are the scratch
 * tile's bits (see an_gemm_ukernel_partial_fn). */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
partial_rows_body(const int h, const int panel_rows, int64_t kc, const float *packed_a,
                  const float *b, const int64_t *b_offsets, float *c, int64_t ldc, float beta,
                  int finish, const float *row_bias, const float *residual, int64_t ldr, int act)
{
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int i = 0; i < h; ++i) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    const float *a = packed_a;
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
        const float *row = b_offsets ? b + b_offsets[k] : b + k * AVX512_NR;
        const __m512 b0 = _mm512_loadu_ps(row), b1 = _mm512_loadu_ps(row + 16);
#pragma GCC unroll 8
        for (int i = 0; i < h; ++i) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += panel_rows;
    }
#pragma GCC unroll 8
    for (int i = 0; i < h; ++i)
        store_row_epilogue(c + i * ldc, acc[i], beta, finish, row_bias, i,
                           residual ? residual + i * ldr : NULL, act);
}

typedef void (*avx512_partial_fn)(int64_t, const float *, const float *, const int64_t *,
                                  float *, int64_t, float, int, const float *, const float *,
                                  int64_t, int);

#define AN_AVX512_PARTIAL(H, PANEL)                                                              \
    AN_TARGET_AVX512 static void partial_##H##_of_##PANEL(                                        \
        int64_t kc, const float *packed_a, const float *b, const int64_t *b_offsets, float *c,   \
        int64_t ldc, float beta, int finish, const float *row_bias, const float *residual,       \
        int64_t ldr, int act)                                                                    \
    {                                                                                            \
        partial_rows_body(H, PANEL, kc, packed_a, b, b_offsets, c, ldc, beta, finish, row_bias,  \
                          residual, ldr, act);                                                   \
    }
AN_AVX512_PARTIAL(8, 14)
AN_AVX512_PARTIAL(4, 14)
AN_AVX512_PARTIAL(2, 14)
AN_AVX512_PARTIAL(1, 14)
AN_AVX512_PARTIAL(4, 8)
AN_AVX512_PARTIAL(2, 8)
AN_AVX512_PARTIAL(1, 8)

/* rows (1 to MR - 1) of the tile in pieces of 8, 4, 2 and 1 rows */
static void partial_pieces(const avx512_partial_fn pieces[4], int rows, int64_t kc,
                           const float *packed_a, const float *b, const int64_t *b_offsets,
                           float *c, int64_t ldc, float beta, int finish, const float *row_bias,
                           const float *residual, int64_t ldr, int act)
{
    static const int heights[] = {8, 4, 2, 1};
    int i = 0;
    for (int h = 0; h < 4; ++h)
        if (pieces[h] && rows - i >= heights[h]) {
            pieces[h](kc, packed_a + i, b, b_offsets, c + i * ldc, ldc, beta, finish,
                      row_bias ? row_bias + i : NULL, residual ? residual + i * ldr : NULL, ldr,
                      act);
            i += heights[h];
        }
}

/* the two tile heights' compute_partial: rows 1-13 of a 14-row panel in
 * pieces of 8, 4, 2, 1; rows 1-7 of an 8-row one in pieces of 4, 2, 1 */
#define AN_AVX512_PARTIAL_ENTRY(MR, EIGHT)                                                       \
    static void gemm_ukernel_avx512_##MR##x32_partial(                                            \
        int rows, int64_t kc, const float *packed_a, const float *b, const int64_t *b_offsets,   \
        float *c, int64_t ldc, float beta, int finish, const float *row_bias,                    \
        const float *residual, int64_t ldr, int act)                                             \
    {                                                                                            \
        static const avx512_partial_fn pieces[4] = {EIGHT, partial_4_of_##MR, partial_2_of_##MR, \
                                                    partial_1_of_##MR};                          \
        partial_pieces(pieces, rows, kc, packed_a, b, b_offsets, c, ldc, beta, finish, row_bias, \
                       residual, ldr, act);                                                      \
    }
AN_AVX512_PARTIAL_ENTRY(14, partial_8_of_14)
AN_AVX512_PARTIAL_ENTRY(8, NULL)

/* ---- Narrow products: N <= 32 columns, A and B read in place ----------- */

/* A block of `mr` rows (a compile-time constant after inlining) of
 *   C = A[0:mr, 0:K] B[0:K, 0:n] (+ C),  n <= 32 (nv = 1 or 2 vectors),
 * summed one KC block at a time exactly as the packed path sums it: each
 * element's block sum starts at zero, takes one FMA per k in increasing k,
 * and is added to C (or stored, for the first block when beta == 0).  So
 * the result is bit-identical to the blocked GEMM's with alpha == 1, while
 * neither A nor B is packed: with one or two column vectors per row every A
 * element is used once per block, and packing A (a full read and write of
 * the weights) cost as much as the product on a 4x4-plane 1x1 convolution.
 * With `prepacked` (a compile-time constant), A is a panel packed ahead of
 * time (an_gemm_pack_a) and element (i, k) is A[k * lda + i]: one forward
 * stream instead of mr short rows, which the prefetchers follow when the
 * weights come from L3 (a 960 x 160 layer at batch 1 took 33 us instead of 50). */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
narrow_rows_body(const int mr, const int nv, const int prepacked, int64_t K, int64_t KC,
                 const float *A, int64_t lda,
                 const float *B, int64_t ldb, int n, float beta, float *C, int64_t ldc,
                 const float *row_bias, const float *residual, int64_t ldr, int act)
{
    const __mmask16 mask0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
    const __mmask16 mask1 = n >= 32 ? (__mmask16)0xFFFF
                            : n > 16 ? (__mmask16)((1u << (n - 16)) - 1u) : (__mmask16)0;
    for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = K - pc < KC ? K - pc : KC;
        __m512 acc[14][2];
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) {
            acc[i][0] = _mm512_setzero_ps();
            acc[i][1] = _mm512_setzero_ps();
        }
        const float *a = prepacked ? A + pc * lda : A + pc;
        const float *b = B + pc * ldb;
        for (int64_t k = 0; k < kc; ++k) {
            const __m512 b0 = _mm512_maskz_loadu_ps(mask0, b);
            const __m512 b1 = nv == 2 ? _mm512_maskz_loadu_ps(mask1, b + 16) : b0;
#pragma GCC unroll 16
            for (int i = 0; i < mr; ++i) {
                const __m512 ai = _mm512_set1_ps(prepacked ? a[k * lda + i] : a[i * lda + k]);
                acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
                if (nv == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            }
            b += ldb;
        }
        const float block_beta = pc == 0 ? beta : 1.0f;
        if (pc + kc >= K && (row_bias || residual || act != AN_GEMM_ACT_NONE)) {
            /* last block: bias, residual and activation in registers */
#pragma GCC unroll 16
            for (int i = 0; i < mr; ++i) {
                float *row = C + i * ldc;
                for (int h = 0; h < nv; ++h) {
                    const __mmask16 mask = h ? mask1 : mask0;
                    __m512 v = acc[i][h];
                    if (block_beta != 0.0f)
                        v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(block_beta),
                                                           _mm512_maskz_loadu_ps(mask, row + 16 * h)));
                    v = finish_vector(v, row_bias, i, residual ? residual + i * ldr + 16 * h : NULL,
                                      mask, act);
                    _mm512_mask_storeu_ps(row + 16 * h, mask, v);
                }
            }
        } else if (block_beta == 0.0f) {
#pragma GCC unroll 16
            for (int i = 0; i < mr; ++i) {
                _mm512_mask_storeu_ps(C + i * ldc, mask0, acc[i][0]);
                if (nv == 2) _mm512_mask_storeu_ps(C + i * ldc + 16, mask1, acc[i][1]);
            }
        } else {
            const __m512 vbeta = _mm512_set1_ps(block_beta);
#pragma GCC unroll 16
            for (int i = 0; i < mr; ++i) {
                float *row = C + i * ldc;
                __m512 c0 = _mm512_mul_ps(vbeta, _mm512_maskz_loadu_ps(mask0, row));
                _mm512_mask_storeu_ps(row, mask0, _mm512_add_ps(acc[i][0], c0));
                if (nv == 2) {
                    __m512 c1 = _mm512_mul_ps(vbeta, _mm512_maskz_loadu_ps(mask1, row + 16));
                    _mm512_mask_storeu_ps(row + 16, mask1, _mm512_add_ps(acc[i][1], c1));
                }
            }
        }
    }
}

#define AN_NARROW_ROWS(MR, NV, PREPACKED, NAME)                                                  \
    AN_TARGET_AVX512 static void NAME(int64_t K, int64_t KC, const float *A, int64_t lda,         \
                                      const float *B, int64_t ldb, int n, float beta, float *C,   \
                                      int64_t ldc, const float *row_bias, const float *residual,  \
                                      int64_t ldr, int act)                                       \
    {                                                                                            \
        narrow_rows_body(MR, NV, PREPACKED, K, KC, A, lda, B, ldb, n, beta, C, ldc, row_bias,     \
                         residual, ldr, act);                                                     \
    }
AN_NARROW_ROWS(14, 1, 0, narrow_rows_14_1)
AN_NARROW_ROWS(14, 2, 0, narrow_rows_14_2)
AN_NARROW_ROWS(8, 1, 0, narrow_rows_8_1)
AN_NARROW_ROWS(8, 2, 0, narrow_rows_8_2)
AN_NARROW_ROWS(4, 1, 0, narrow_rows_4_1)
AN_NARROW_ROWS(4, 2, 0, narrow_rows_4_2)
AN_NARROW_ROWS(2, 1, 0, narrow_rows_2_1)
AN_NARROW_ROWS(2, 2, 0, narrow_rows_2_2)
AN_NARROW_ROWS(1, 1, 0, narrow_rows_1_1)
AN_NARROW_ROWS(1, 2, 0, narrow_rows_1_2)
AN_NARROW_ROWS(14, 1, 1, narrow_prepacked_14_1)
AN_NARROW_ROWS(14, 2, 1, narrow_prepacked_14_2)
AN_NARROW_ROWS(8, 1, 1, narrow_prepacked_8_1)
AN_NARROW_ROWS(8, 2, 1, narrow_prepacked_8_2)
AN_NARROW_ROWS(4, 1, 1, narrow_prepacked_4_1)
AN_NARROW_ROWS(4, 2, 1, narrow_prepacked_4_2)
AN_NARROW_ROWS(2, 1, 1, narrow_prepacked_2_1)
AN_NARROW_ROWS(2, 2, 1, narrow_prepacked_2_2)
AN_NARROW_ROWS(1, 1, 1, narrow_prepacked_1_1)
AN_NARROW_ROWS(1, 2, 1, narrow_prepacked_1_2)

typedef void (*narrow_rows_fn)(int64_t, int64_t, const float *, int64_t, const float *, int64_t,
                               int, float, float *, int64_t, const float *, const float *,
                               int64_t, int);

static const int narrow_heights[] = {14, 8, 4, 2, 1};
static const narrow_rows_fn narrow_by_height[][2] = {
    {narrow_rows_14_1, narrow_rows_14_2}, {narrow_rows_8_1, narrow_rows_8_2},
    {narrow_rows_4_1, narrow_rows_4_2},   {narrow_rows_2_1, narrow_rows_2_2},
    {narrow_rows_1_1, narrow_rows_1_2}};
static const narrow_rows_fn narrow_prepacked_by_height[][2] = {
    {narrow_prepacked_14_1, narrow_prepacked_14_2}, {narrow_prepacked_8_1, narrow_prepacked_8_2},
    {narrow_prepacked_4_1, narrow_prepacked_4_2},   {narrow_prepacked_2_1, narrow_prepacked_2_2},
    {narrow_prepacked_1_1, narrow_prepacked_1_2}};

/* Rows [i, i + height) of C in chunks of 32 columns. */
static void narrow_block(narrow_rows_fn const fns[2], int64_t N, int64_t K, int64_t KC,
                         const float *a, int64_t a_step, const float *B, int64_t ldb, float beta,
                         float *C, int64_t ldc, const float *row_bias, const float *residual,
                         int64_t ldr, int act)
{
    for (int64_t j = 0; j < N; j += 32) {
        const int n = N - j < 32 ? (int)(N - j) : 32;
        fns[n > 16](K, KC, a, a_step, B + j, ldb, n, beta, C + j, ldc, row_bias,
                    residual ? residual + j : NULL, ldr, act);
    }
}

static void gemm_narrow_avx512(int64_t rows, int64_t N, int64_t K, int64_t KC, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                               int64_t ldc, const float *row_bias, const float *residual,
                               int64_t ldr, int act)
{
    /* Rows in blocks of 14 (then 8, 4, 2, 1), columns in chunks of 32
     * inside a block: the block's A slice is read again from L1 for each
     * chunk. */
    int64_t i = 0;
    for (int h = 0; h < 5; ++h)
        for (; rows - i >= narrow_heights[h]; i += narrow_heights[h])
            narrow_block(narrow_by_height[h], N, K, KC, A + i * lda, lda, B, ldb, beta,
                         C + i * ldc, ldc, row_bias ? row_bias + i : NULL,
                         residual ? residual + i * ldr : NULL, ldr, act);
}

static void gemm_narrow_prepacked_avx512(int64_t rows, int64_t N, int64_t K, int64_t KC,
                                         const float *A_packed, int panel_rows,
                                         int64_t panel_stride, const float *B, int64_t ldb,
                                         float beta, float *C, int64_t ldc, const float *row_bias,
                                         const float *residual, int64_t ldr, int act)
{
    /* Full panels in one block of panel_rows (14 or 8); the last, partial
     * panel in blocks of 8, 4, 2, 1 rows read at their offset inside it. */
    const int first = panel_rows == 14 ? 0 : 1;
    int64_t i = 0;
    for (int h = first; h < 5; ++h) {
        for (; rows - i >= narrow_heights[h]; i += narrow_heights[h]) {
            const float *a = A_packed + (i / panel_rows) * panel_stride + i % panel_rows;
            narrow_block(narrow_prepacked_by_height[h], N, K, KC, a, panel_rows, B, ldb, beta,
                         C + i * ldc, ldc, row_bias ? row_bias + i : NULL,
                         residual ? residual + i * ldr : NULL, ldr, act);
        }
    }
}

/* Columns up to which a row-major product skips packing: each A element
 * then serves at most two column chunks of 32, so the packed copy of A
 * would be written and read once for one or two uses.  (A 1x1 convolution
 * on a 4x4 plane at batch 1 has N = 16; packing A, the weights, was half of
 * its time.) */
#define AVX512_NARROW_MAX_N 64

const an_gemm_ukernel an_gemm_ukernel_avx512 = {
    "avx512_14x32", 14, AVX512_NR, gemm_ukernel_avx512_14x32, gemm_ukernel_avx512_14x32_rows,
    gemm_ukernel_avx512_14x32_epilogue, gemm_narrow_avx512, gemm_narrow_prepacked_avx512, AVX512_NARROW_MAX_N,
    gemm_ukernel_avx512_14x32_partial, gemm_ukernel_avx512_14x32_epilogue_row};
const an_gemm_ukernel an_gemm_ukernel_avx512_8x32 = {
    "avx512_8x32", 8, AVX512_NR, gemm_ukernel_avx512_8x32, gemm_ukernel_avx512_8x32_rows,
    gemm_ukernel_avx512_8x32_epilogue, gemm_narrow_avx512, gemm_narrow_prepacked_avx512, AVX512_NARROW_MAX_N,
    gemm_ukernel_avx512_8x32_partial, gemm_ukernel_avx512_8x32_epilogue_row};

#endif
