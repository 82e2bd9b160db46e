/* AVX2 micro-kernel: 6 rows x 16 columns (two ymm per row).  12 accumulators
 * + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers; 12 FMAs per
 * 2 loads + 6 broadcasts per k step. */
#include "kernels/gemm.h"
#include "kernels/simd_activate.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX2_MR 6
#define AVX2_NR 16

/* A vector at p, or (masked) only its lanes in `mask`: the last vector of
 * a narrow product's row, which may end past C's columns. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
load_lanes(const float *p, const int masked, __m256i mask)
{
    return masked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}

AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
store_lanes(float *p, __m256 v, const int masked, __m256i mask)
{
    if (masked)
        _mm256_maskstore_ps(p, mask, v);
    else
        _mm256_storeu_ps(p, v);
}

/* The epilogue of one vector of row i, as an_epilogue_rows computes it:
 * + row_bias[i], + the residual (read as load_lanes reads), then the
 * activation. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
finish_vector(__m256 v, const float *row_bias, int i, const float *residual, const int masked,
              __m256i mask, int act)
{
    if (row_bias) v = _mm256_add_ps(v, _mm256_set1_ps(row_bias[i]));
    if (residual) v = _mm256_add_ps(v, load_lanes(residual, masked, mask));
    return an_avx2_activate(v, act);
}

/* Row i of a tile leaving with its epilogue (alpha 1): its two vectors +
 * beta * C (beta 0: C not read), then with `finish` finish_vector. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
store_row_epilogue(float *row, const __m256 acc[2], float beta, const int finish,
                   const float *row_bias, int i, const float *residual_row, int act)
{
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
        __m256 v = acc[h];
        if (beta != 0.0f)
            v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(row + 8 * h)));
        if (finish)
            v = finish_vector(v, row_bias, i, residual_row ? residual_row + 8 * h : NULL, 0,
                              _mm256_setzero_si256(), act);
        _mm256_storeu_ps(row + 8 * h, v);
    }
}

/* B row k at packed_b + k * NR (packed, aligned) or at b + b_offsets[k].
 * With `epilogue` (alpha 1) the tile leaves through finish_vector: the
 * bias, residual and activation pass of the driver, fused into the store. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
gemm_avx2_body(int64_t kc, const float *packed_a, const float *packed_b, const int64_t *b_offsets,
               float *c, int64_t ldc, float alpha, float beta, const int epilogue,
               const float *row_bias, const float *residual, int64_t ldr, int act)
{
    __m256 acc[AVX2_MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < AVX2_MR; ++i) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
#pragma GCC unroll 8
    for (int i = 0; i < AVX2_MR; ++i) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
    const float *a = packed_a;
    const float *b = packed_b;
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
        __m256 b0, b1;
        if (b_offsets) {
            b0 = _mm256_loadu_ps(packed_b + b_offsets[k]);
            b1 = _mm256_loadu_ps(packed_b + b_offsets[k] + 8);
        } else {
            b0 = _mm256_load_ps(b);
            b1 = _mm256_load_ps(b + 8);
        }
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += AVX2_MR;
        b += AVX2_NR;
    }
    if (epilogue) { /* alpha is 1: C + beta * C_old rounds as the FMA below does */
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i)
            store_row_epilogue(c + i * ldc, acc[i], beta, 1, row_bias, i,
                               residual ? residual + i * ldr : NULL, act);
        return;
    }
    __m256 valpha = _mm256_set1_ps(alpha);
    if (beta == 0.0f) {
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            _mm256_storeu_ps(c + i * ldc, _mm256_mul_ps(valpha, acc[i][0]));
            _mm256_storeu_ps(c + i * ldc + 8, _mm256_mul_ps(valpha, acc[i][1]));
        }
    } else {
        __m256 vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 8
        for (int i = 0; i < AVX2_MR; ++i) {
            float *row = c + i * ldc;
            __m256 c0 = _mm256_mul_ps(vbeta, _mm256_loadu_ps(row));
            __m256 c1 = _mm256_mul_ps(vbeta, _mm256_loadu_ps(row + 8));
            _mm256_storeu_ps(row, _mm256_fmadd_ps(valpha, acc[i][0], c0));
            _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(valpha, acc[i][1], c1));
        }
    }
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16(int64_t kc, const float *packed_a, const float *packed_b,
                                   float *c, int64_t ldc, float alpha, float beta)
{
    gemm_avx2_body(kc, packed_a, packed_b, NULL, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16_rows(int64_t kc, const float *packed_a, const float *b,
                                        const int64_t *b_offsets, float *c, int64_t ldc,
                                        float alpha, float beta)
{
    gemm_avx2_body(kc, packed_a, b, b_offsets, c, ldc, alpha, beta, 0, NULL, NULL, 0, 0);
}

/* `tiles` full tiles side by side along a row of C from packed B panels
 * b_stride floats apart, each leaving through its epilogue: a body per
 * activation, residual or none and beta 0 (a product's first K block) or
 * not, so that the tile's epilogue carries no tests; with 16-24 products
 * per tile it costs as much as the sums. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
epilogue_row_body(int64_t tiles, int64_t kc, const float *packed_a, const float *b,
                  int64_t b_stride, float *c, int64_t ldc, float beta, const float *row_bias,
                  const float *residual, int64_t ldr, int act)
{
#define AVX2_EPILOGUE_ROW(ACT)                                                                   \
    do {                                                                                         \
        if (residual)                                                                            \
            for (int64_t t = 0; t < tiles; ++t)                                                  \
                gemm_avx2_body(kc, packed_a, b + t * b_stride, NULL, c + t * AVX2_NR, ldc, 1.0f, \
                               beta, 1, row_bias, residual + t * AVX2_NR, ldr, ACT);             \
        else if (beta == 0.0f)                                                                   \
            for (int64_t t = 0; t < tiles; ++t)                                                  \
                gemm_avx2_body(kc, packed_a, b + t * b_stride, NULL, c + t * AVX2_NR, ldc, 1.0f, \
                               0.0f, 1, row_bias, NULL, 0, ACT);                                 \
        else                                                                                     \
            for (int64_t t = 0; t < tiles; ++t)                                                  \
                gemm_avx2_body(kc, packed_a, b + t * b_stride, NULL, c + t * AVX2_NR, ldc, 1.0f, \
                               beta, 1, row_bias, NULL, 0, ACT);                                 \
    } while (0)
    if (act == AN_GEMM_ACT_RELU6)
        AVX2_EPILOGUE_ROW(AN_GEMM_ACT_RELU6);
    else if (act == AN_GEMM_ACT_RELU)
        AVX2_EPILOGUE_ROW(AN_GEMM_ACT_RELU);
    else
        AVX2_EPILOGUE_ROW(AN_GEMM_ACT_NONE);
#undef AVX2_EPILOGUE_ROW
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16_epilogue(int64_t kc, const float *packed_a, const float *b,
                                            const int64_t *b_offsets, float *c, int64_t ldc,
                                            float beta, const float *row_bias,
                                            const float *residual, int64_t ldr, int act)
{
    if (b_offsets)
        gemm_avx2_body(kc, packed_a, b, b_offsets, c, ldc, 1.0f, beta, 1, row_bias, residual, ldr, act);
    else /* packed B (the 1x1 layers) */
        epilogue_row_body(1, kc, packed_a, b, 0, c, ldc, beta, row_bias, residual, ldr, act);
}

AN_TARGET_AVX2
static void gemm_ukernel_avx2_6x16_epilogue_row(int64_t tiles, int64_t kc, const float *packed_a,
                                                const float *b, int64_t b_stride, float *c,
                                                int64_t ldc, float beta, const float *row_bias,
                                                const float *residual, int64_t ldr, int act)
{
    epilogue_row_body(tiles, kc, packed_a, b, b_stride, c, ldc, beta, row_bias, residual, ldr, act);
}

/* ---- A tile's first h (4, 2 or 1) rows of the panel's 6, straight into C */

/* The fringe rows of a product whose M is not a multiple of 6 (16 rows: 6,
 * 6, 4) were computed as a whole 6-row tile into a scratch tile, copied into
 * C and then given their epilogue: a third of the work wasted on a 16-row
 * layer, plus the two passes.  Here the h rows are summed in 2h registers
 * (the same FMA per k, in increasing k, as the full tile's lanes) and leave
 * as the epilogue kernel's rows do: + beta * C, then (finish) bias, residual
 * and activation.  alpha is 1, so this is the scratch tile's bits: alpha *
 * from + beta * to with alpha 1 rounds as the vector add of beta * C does. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
gemm_avx2_rows_body(const int h, int64_t kc, const float *packed_a, const float *b,
                    const int64_t *b_offsets, float *c, int64_t ldc, float beta, int finish,
                    const float *row_bias, const float *residual, int64_t ldr, int act)
{
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < h; ++i) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    const float *a = packed_a;
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
        const float *row = b_offsets ? b + b_offsets[k] : b + k * AVX2_NR;
        const __m256 b0 = _mm256_loadu_ps(row), b1 = _mm256_loadu_ps(row + 8);
#pragma GCC unroll 4
        for (int i = 0; i < h; ++i) {
            const __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += AVX2_MR;
    }
#pragma GCC unroll 4
    for (int i = 0; i < h; ++i)
        store_row_epilogue(c + i * ldc, acc[i], beta, finish, row_bias, i,
                           residual ? residual + i * ldr : NULL, act);
}

#define AN_AVX2_ROWS(H)                                                                           \
    AN_TARGET_AVX2 static void gemm_avx2_rows_##H(int64_t kc, const float *packed_a,              \
                                                  const float *b, const int64_t *b_offsets,       \
                                                  float *c, int64_t ldc, float beta, int finish,  \
                                                  const float *row_bias, const float *residual,   \
                                                  int64_t ldr, int act)                           \
    {                                                                                             \
        gemm_avx2_rows_body(H, kc, packed_a, b, b_offsets, c, ldc, beta, finish, row_bias,        \
                            residual, ldr, act);                                                  \
    }
AN_AVX2_ROWS(4)
AN_AVX2_ROWS(2)
AN_AVX2_ROWS(1)

typedef void (*avx2_rows_fn)(int64_t, const float *, const float *, const int64_t *, float *,
                             int64_t, float, int, const float *, const float *, int64_t, int);

/* rows (1-5) of the tile in pieces of 4, 2 and 1 rows */
static void gemm_ukernel_avx2_6x16_partial(int rows, int64_t kc, const float *packed_a,
                                           const float *b, const int64_t *b_offsets, float *c,
                                           int64_t ldc, float beta, int finish,
                                           const float *row_bias, const float *residual,
                                           int64_t ldr, int act)
{
    static const int heights[] = {4, 2, 1};
    static const avx2_rows_fn pieces[] = {gemm_avx2_rows_4, gemm_avx2_rows_2, gemm_avx2_rows_1};
    int i = 0;
    for (int h = 0; h < 3; ++h)
        if (rows - i >= heights[h]) {
            pieces[h](kc, packed_a + i, b, b_offsets, c + i * ldc, ldc, beta, finish,
                      row_bias ? row_bias + i : NULL, residual ? residual + i * ldr : NULL, ldr,
                      act);
            i += heights[h];
        }
}

/* ---- Narrow products: up to AVX2_NARROW_MAX_N columns, A and B read in place */

/* How far ahead (in floats of a pre-packed A) a narrow product prefetches
 * its weights.  A batch-1 plan's 1x1 layers on 8x8 and 4x4 planes take this
 * path, and each reads its weights once per inference: MobileNetV2's 8.9 MB
 * do not stay in two 512 KB L2s, and in the chain they came from L3 or
 * memory a 4 KB page at a time, each page starting with misses the
 * hardware prefetcher does not cover.  One prefetch per two k steps (48
 * bytes of a 6-row panel) 4 KB ahead, in one process alternating with
 * none, on a Zen 3: the whole MobileNetV2 plan 0.952x the time on 2
 * threads (13 of 16 rounds faster), a 96-channel 8x8 block alone 0.926x on
 * 1 (12 of 12), a 160-channel 4x4 block 0.976x on 2.  512 and 2048 floats
 * measured within 2% of this; a prefetch in the blocked kernel's loop (A
 * reused from L2 across column tiles) made the plan 4% slower. */
#define NARROW_PREFETCH_FLOATS 1024

/* One k step of a narrow block: row i of the block's accumulators gains
 * A(i, k) times B's row k (at b). */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
narrow_step(const int mr, const int nv, const int masked, const int prepacked, const float *a,
            int64_t lda, int64_t k, const float *b, __m256i mask, __m256 acc[][2])
{
    const __m256 b0 = load_lanes(b, masked && nv == 1, mask);
    const __m256 b1 = nv == 2 ? load_lanes(b + 8, masked, mask) : b0;
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i) {
        const __m256 ai = _mm256_broadcast_ss(prepacked ? a + k * lda + i : a + i * lda + k);
        acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
        if (nv == 2) acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
}

/* The AVX-512 narrow path's contract (see narrow_rows_body there) at 8
 * lanes: a block of `mr` rows (6, 4, 2 or 1) times one chunk of n <= 16
 * columns (nv = 1 or 2 vectors), each KC block's sums started at zero, one
 * FMA per k in increasing k, then added to C: bit-identical to the blocked
 * driver with alpha 1, with neither A nor B packed.  With `masked`, the
 * chunk's last vector holds fewer than 8 columns and is read and written
 * in those lanes only.  With `prepacked`, element (i, k) of A is
 * A[k * lda + i] (a panel of an_gemm_pack_a). */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
narrow_rows_body(const int mr, const int nv, const int masked, const int prepacked, int64_t K,
                 int64_t KC, const float *A, int64_t lda, const float *B, int64_t ldb, int n,
                 float beta, float *C, int64_t ldc, const float *row_bias, const float *residual,
                 int64_t ldr, int act)
{
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8 * (nv - 1)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = K - pc < KC ? K - pc : KC;
        __m256 acc[AVX2_MR][2];
#pragma GCC unroll 8
        for (int i = 0; i < mr; ++i) {
            acc[i][0] = _mm256_setzero_ps();
            acc[i][1] = _mm256_setzero_ps();
        }
        const float *a = prepacked ? A + pc * lda : A + pc;
        const float *b = B + pc * ldb;
        int64_t k = 0;
        if (prepacked)
            for (; k + 2 <= kc; k += 2) {
                _mm_prefetch((const char *)(a + k * lda + NARROW_PREFETCH_FLOATS), _MM_HINT_T1);
                narrow_step(mr, nv, masked, prepacked, a, lda, k, b, mask, acc);
                b += ldb;
                narrow_step(mr, nv, masked, prepacked, a, lda, k + 1, b, mask, acc);
                b += ldb;
            }
        for (; k < kc; ++k) {
            narrow_step(mr, nv, masked, prepacked, a, lda, k, b, mask, acc);
            b += ldb;
        }
        const float block_beta = pc == 0 ? beta : 1.0f;
        const int finish = pc + kc >= K && (row_bias || residual || act != AN_GEMM_ACT_NONE);
#pragma GCC unroll 8
        for (int i = 0; i < mr; ++i) {
            float *row = C + i * ldc;
            for (int h = 0; h < nv; ++h) {
                const int part = masked && h == nv - 1;
                __m256 v = acc[i][h];
                if (block_beta != 0.0f)
                    v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(block_beta),
                                                       load_lanes(row + 8 * h, part, mask)));
                if (finish)
                    v = finish_vector(v, row_bias, i, residual ? residual + i * ldr + 8 * h : NULL,
                                      part, mask, act);
                store_lanes(row + 8 * h, v, part, mask);
            }
        }
    }
}

/* Up to 10 chunks of 16 columns: each row block's A slice stays in L1
 * while the chunks pass, and B's rows (640 bytes apart or less) fall in
 * different L1 sets.  Against the packed path on one Zen 3 core: 192 x 160
 * x 32 at 75-81 GFLOP/s instead of 60-76, 64 x 128 x 192 at 82-90 instead
 * of 69-72; from 192 columns on it is no longer ahead (64 x 192 x 576: 65-71
 * against 73-75). */
#define AVX2_NARROW_MAX_N 160

typedef void (*narrow_rows_fn)(int64_t, int64_t, const float *, int64_t, const float *, int64_t,
                               int, float, float *, int64_t, const float *, const float *,
                               int64_t, int);

#define AN_NARROW_AVX2(MR, NV, MASKED, PREPACKED)                                                 \
    AN_TARGET_AVX2 static void narrow_##MR##_##NV##_##MASKED##_##PREPACKED(                       \
        int64_t K, int64_t KC, const float *A, int64_t lda, const float *B, int64_t ldb, int n,   \
        float beta, float *C, int64_t ldc, const float *row_bias, const float *residual,          \
        int64_t ldr, int act)                                                                     \
    {                                                                                             \
        narrow_rows_body(MR, NV, MASKED, PREPACKED, K, KC, A, lda, B, ldb, n, beta, C, ldc,       \
                         row_bias, residual, ldr, act);                                           \
    }
/* the four chunk kinds of one height: [vectors - 1][masked] */
#define AN_NARROW_AVX2_HEIGHT(MR, PREPACKED)                                                      \
    AN_NARROW_AVX2(MR, 1, 0, PREPACKED)                                                           \
    AN_NARROW_AVX2(MR, 1, 1, PREPACKED)                                                           \
    AN_NARROW_AVX2(MR, 2, 0, PREPACKED)                                                           \
    AN_NARROW_AVX2(MR, 2, 1, PREPACKED)                                                           \
    static narrow_rows_fn const narrow_##MR##_##PREPACKED[2][2] = {                               \
        {narrow_##MR##_1_0_##PREPACKED, narrow_##MR##_1_1_##PREPACKED},                           \
        {narrow_##MR##_2_0_##PREPACKED, narrow_##MR##_2_1_##PREPACKED}};
AN_NARROW_AVX2_HEIGHT(6, 0)
AN_NARROW_AVX2_HEIGHT(4, 0)
AN_NARROW_AVX2_HEIGHT(2, 0)
AN_NARROW_AVX2_HEIGHT(1, 0)
AN_NARROW_AVX2_HEIGHT(6, 1)
AN_NARROW_AVX2_HEIGHT(4, 1)
AN_NARROW_AVX2_HEIGHT(2, 1)
AN_NARROW_AVX2_HEIGHT(1, 1)

static const int narrow_heights[] = {6, 4, 2, 1};
static narrow_rows_fn const (*const narrow_by_height[2][4])[2] = {
    {narrow_6_0, narrow_4_0, narrow_2_0, narrow_1_0},
    {narrow_6_1, narrow_4_1, narrow_2_1, narrow_1_1}};

/* Rows [i, i + height) of C in chunks of 16 columns: the block's A slice
 * is read again from L1 for each chunk. */
static void narrow_block(narrow_rows_fn const fns[2][2], int64_t N, int64_t K, int64_t KC,
                         const float *a, int64_t a_step, const float *B, int64_t ldb, float beta,
                         float *C, int64_t ldc, const float *row_bias, const float *residual,
                         int64_t ldr, int act)
{
    for (int64_t j = 0; j < N; j += AVX2_NR) {
        const int n = N - j < AVX2_NR ? (int)(N - j) : AVX2_NR;
        fns[n > 8][n % 8 != 0](K, KC, a, a_step, B + j, ldb, n, beta, C + j, ldc, row_bias,
                               residual ? residual + j : NULL, ldr, act);
    }
}

/* Rows [0, rows) in blocks of 6, then 4, 2, 1 rows.  A as given (row i at
 * A + i * lda) or pre-packed (panels of panel_rows, panel_stride floats
 * apart: full panels of 6 rows, then the last, partial one in blocks of 4,
 * 2, 1 rows read at their offset inside it). */
static void narrow_walk(const int prepacked, int64_t rows, int64_t N, int64_t K, int64_t KC,
                        const float *A, int64_t lda, int panel_rows, int64_t panel_stride,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const float *row_bias, const float *residual, int64_t ldr, int act)
{
    int64_t i = 0;
    for (int h = 0; h < 4; ++h)
        for (; rows - i >= narrow_heights[h]; i += narrow_heights[h]) {
            const float *a = prepacked ? A + (i / panel_rows) * panel_stride + i % panel_rows
                                       : A + i * lda;
            narrow_block(narrow_by_height[prepacked][h], N, K, KC, a, prepacked ? panel_rows : lda,
                         B, ldb, beta, C + i * ldc, ldc, row_bias ? row_bias + i : NULL,
                         residual ? residual + i * ldr : NULL, ldr, act);
        }
}

static void gemm_narrow_avx2(int64_t rows, int64_t N, int64_t K, int64_t KC, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc, const float *row_bias, const float *residual,
                             int64_t ldr, int act)
{
    narrow_walk(0, rows, N, K, KC, A, lda, 0, 0, B, ldb, beta, C, ldc, row_bias, residual, ldr, act);
}

static void gemm_narrow_prepacked_avx2(int64_t rows, int64_t N, int64_t K, int64_t KC,
                                       const float *A_packed, int panel_rows,
                                       int64_t panel_stride, const float *B, int64_t ldb,
                                       float beta, float *C, int64_t ldc, const float *row_bias,
                                       const float *residual, int64_t ldr, int act)
{
    narrow_walk(1, rows, N, K, KC, A_packed, 0, panel_rows, panel_stride, B, ldb, beta, C, ldc,
                row_bias, residual, ldr, act);
}

const an_gemm_ukernel an_gemm_ukernel_avx2 = {
    "avx2_6x16", AVX2_MR, AVX2_NR, gemm_ukernel_avx2_6x16, gemm_ukernel_avx2_6x16_rows,
    gemm_ukernel_avx2_6x16_epilogue, gemm_narrow_avx2, gemm_narrow_prepacked_avx2,
    AVX2_NARROW_MAX_N, gemm_ukernel_avx2_6x16_partial, gemm_ukernel_avx2_6x16_epilogue_row};

#endif
