/* SIMD transposing packers for the GEMM (x86: AVX-512 and AVX2).
 *
 * A panel is laid out panel[k * width + r].  When the source runs along k
 * (a row-major A, or the transposed B of a weight gradient dW = dy @ col^T),
 * packing is a transpose; done an element at a time it was 13-20% of a
 * ResNet-20 training step.  These move 16 x 16 (AVX-512) or 8 x 8 (AVX2)
 * blocks through registers instead.  They only move values, so results are
 * bit-identical to the scalar packer. */
#include "kernels/gemm_pack.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* The fringe loops (a few floats per k) stay inline stores: turned into
   memset calls they were 4.5 million library calls per ResNet-20 step. */
#if defined(__GNUC__) && !defined(__clang__)
#define AN_INLINE_FILLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define AN_INLINE_FILLS
#endif
#define AN_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma"))) AN_INLINE_FILLS
#define AN_TARGET_AVX2 __attribute__((target("avx2,fma"))) AN_INLINE_FILLS

/* rows[i] holds 16 consecutive k of source row i; on return rows[k] holds
 * row 0..15 of column k. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void transpose_16x16(__m512 rows[16])
{
    __m512 t[16], u[16], v[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    /* groups of four rows: u[4g + q] holds k = q, q+4, q+8, q+12 of rows 4g..4g+3 */
    for (int g = 0; g < 4; ++g) {
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 2]);
        __m512d c = _mm512_castps_pd(t[4 * g + 1]), d = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    /* v: lanes (rows 0-3 | rows 4-7) or (rows 8-11 | rows 12-15) per column pair */
    for (int q = 0; q < 4; ++q) {
        v[q] = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x88);      /* k = q, q+8 of rows 0-7 */
        v[4 + q] = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xDD);  /* k = q+4, q+12 of rows 0-7 */
        v[8 + q] = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x88);
        v[12 + q] = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xDD);
    }
    for (int q = 0; q < 4; ++q) {
        rows[q] = _mm512_shuffle_f32x4(v[q], v[8 + q], 0x88);          /* k = q */
        rows[q + 8] = _mm512_shuffle_f32x4(v[q], v[8 + q], 0xDD);      /* k = q + 8 */
        rows[q + 4] = _mm512_shuffle_f32x4(v[4 + q], v[12 + q], 0x88); /* k = q + 4 */
        rows[q + 12] = _mm512_shuffle_f32x4(v[4 + q], v[12 + q], 0xDD); /* k = q + 12 */
    }
}

/* Rows [r0, r0 + 16) of the panel, all present in the source. */
AN_TARGET_AVX512 static void pack_16_rows_avx512(const float *src, int64_t row_stride, int64_t kc,
                                                 int width, int64_t r0, float *panel)
{
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 block[16];
        for (int i = 0; i < 16; ++i) block[i] = _mm512_loadu_ps(src + (r0 + i) * row_stride + k);
        transpose_16x16(block);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(panel + (k + i) * width + r0, block[i]);
    }
    for (; k < kc; ++k)
        for (int64_t r = r0; r < r0 + 16; ++r) panel[k * width + r] = src[r * row_stride + k];
}

AN_TARGET_AVX512 void an_pack_transpose_avx512(const float *src, int64_t row_stride, int64_t rows,
                                               int64_t kc, int width, float *panel)
{
    int64_t r0 = 0;
    for (; r0 + 16 <= rows && r0 + 16 <= width; r0 += 16)
        pack_16_rows_avx512(src, row_stride, kc, width, r0, panel);
    /* leftover rows (a fringe panel) and zero padding */
    for (int64_t k = 0; k < kc; ++k) {
        for (int64_t r = r0; r < rows; ++r) panel[k * width + r] = src[r * row_stride + k];
        for (int64_t r = rows > r0 ? rows : r0; r < width; ++r) panel[k * width + r] = 0.0f;
    }
}

/* A panel narrower than 16 (the 14-row tiles of the 14 x 32 micro-kernel):
 * its rows, padded to 16 with zero rows, go through the 16 x 16 transpose
 * and each column is stored as `width` lanes.  The 8 x 8 AVX2 transposes
 * it replaces left 6 of 14 rows to a scalar loop: 3.6% of a 2048^2 GEMM. */
AN_TARGET_AVX512 void an_pack_transpose_narrow_avx512(const float *src, int64_t row_stride,
                                                      int64_t rows, int64_t kc, int width,
                                                      float *panel)
{
    const __mmask16 lanes = (__mmask16)((1u << width) - 1u);
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 block[16];
        for (int i = 0; i < 16; ++i)
            block[i] = i < rows ? _mm512_loadu_ps(src + i * row_stride + k) : _mm512_setzero_ps();
        transpose_16x16(block);
        for (int i = 0; i < 16; ++i) _mm512_mask_storeu_ps(panel + (k + i) * width, lanes, block[i]);
    }
    for (; k < kc; ++k) {
        int64_t r = 0;
        for (; r < rows; ++r) panel[k * width + r] = src[r * row_stride + k];
        for (; r < width; ++r) panel[k * width + r] = 0.0f;
    }
}

/* 8 x 8 through ymm registers: rows[i] holds 8 k of row i; returns columns. */
AN_TARGET_AVX2 static inline __attribute__((always_inline)) void transpose_8x8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* A panel of the AVX2 micro-kernel's height, 6 (rows <= 6): rows[i] gives
 * row i, two zero rows complete the 8 x 8 transpose, and each column of 6
 * leaves as a 4- and a 2-float store.  Every product with a row-major A
 * packs it this way, and so do the weight gradients (their A is the output
 * gradient): a 1280 x 320 A took 170 us element by element and 89 us here,
 * a 64 x 576 one 15.4 and 7.0 us (Zen 3). */
AN_TARGET_AVX2 static void pack_transpose_6_avx2(const float *const rows[6], int64_t count,
                                                 int64_t kc, float *panel)
{
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 block[8];
        for (int i = 0; i < 6; ++i)
            block[i] = i < count ? _mm256_loadu_ps(rows[i] + k) : _mm256_setzero_ps();
        block[6] = block[7] = _mm256_setzero_ps();
        transpose_8x8(block);
        float *to = panel + k * 6;
        for (int i = 0; i < 8; ++i) {
            _mm_storeu_ps(to + i * 6, _mm256_castps256_ps128(block[i]));
            _mm_storel_pi((__m64 *)(to + i * 6 + 4), _mm256_extractf128_ps(block[i], 1));
        }
    }
    for (; k < kc; ++k) {
        int64_t r = 0;
        for (; r < count; ++r) panel[k * 6 + r] = rows[r][k];
        for (; r < 6; ++r) panel[k * 6 + r] = 0.0f;
    }
}

AN_TARGET_AVX2 void an_pack_transpose_avx2(const float *src, int64_t row_stride, int64_t rows,
                                           int64_t kc, int width, float *panel)
{
    if (width == 6 && rows <= 6) {
        const float *row[6];
        for (int64_t r = 0; r < rows; ++r) row[r] = src + r * row_stride;
        pack_transpose_6_avx2(row, rows, kc, panel);
        return;
    }
    int64_t r0 = 0;
    for (; r0 + 8 <= rows && r0 + 8 <= width; r0 += 8) {
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m256 block[8];
            for (int i = 0; i < 8; ++i) block[i] = _mm256_loadu_ps(src + (r0 + i) * row_stride + k);
            transpose_8x8(block);
            for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (k + i) * width + r0, block[i]);
        }
        for (; k < kc; ++k)
            for (int64_t r = r0; r < r0 + 8; ++r) panel[k * width + r] = src[r * row_stride + k];
    }
    for (int64_t k = 0; k < kc; ++k) {
        for (int64_t r = r0; r < rows; ++r) panel[k * width + r] = src[r * row_stride + k];
        for (int64_t r = rows > r0 ? rows : r0; r < width; ++r) panel[k * width + r] = 0.0f;
    }
}

/* an_pack_transpose_* with row r read from its own pointer, rows[r][k]
 * (the convolution's weight gradient gathers its taps this way: scalar on
 * AVX2, it took 9% of a ResNet-20 training step on a Zen 3), through
 * BLOCK x BLOCK register transposes. */
#define AN_DEFINE_PACK_TRANSPOSE_ROWS(NAME, TARGET, BLOCK, VEC, LOADU, STOREU, TRANSPOSE)           \
    TARGET void NAME(const float *const *rows, int64_t count, int64_t kc, int width, float *panel) \
    {                                                                                            \
        int64_t r0 = 0;                                                                          \
        for (; r0 + BLOCK <= count && r0 + BLOCK <= width; r0 += BLOCK) {                        \
            int64_t k = 0;                                                                       \
            for (; k + BLOCK <= kc; k += BLOCK) {                                                \
                VEC block[BLOCK];                                                                \
                for (int i = 0; i < BLOCK; ++i) block[i] = LOADU(rows[r0 + i] + k);              \
                TRANSPOSE(block);                                                                \
                for (int i = 0; i < BLOCK; ++i) STOREU(panel + (k + i) * width + r0, block[i]);  \
            }                                                                                    \
            for (; k < kc; ++k)                                                                  \
                for (int64_t r = r0; r < r0 + BLOCK; ++r) panel[k * width + r] = rows[r][k];     \
        }                                                                                        \
        for (int64_t k = 0; k < kc; ++k) {                                                       \
            for (int64_t r = r0; r < count; ++r) panel[k * width + r] = rows[r][k];              \
            for (int64_t r = count > r0 ? count : r0; r < width; ++r) panel[k * width + r] = 0.0f; \
        }                                                                                        \
    }
AN_DEFINE_PACK_TRANSPOSE_ROWS(an_pack_transpose_rows_avx512, AN_TARGET_AVX512, 16, __m512,
                              _mm512_loadu_ps, _mm512_storeu_ps, transpose_16x16)
AN_DEFINE_PACK_TRANSPOSE_ROWS(pack_transpose_rows_8_avx2, static AN_TARGET_AVX2, 8, __m256,
                              _mm256_loadu_ps, _mm256_storeu_ps, transpose_8x8)

AN_TARGET_AVX2 void an_pack_transpose_rows_avx2(const float *const *rows, int64_t count, int64_t kc,
                                                int width, float *panel)
{
    if (width == 6 && count <= 6)
        pack_transpose_6_avx2(rows, count, kc, panel);
    else
        pack_transpose_rows_8_avx2(rows, count, kc, width, panel);
}

/* an_epilogue_rows for each ISA: the portable loops of bias_act_impl.h,
 * vectorised by the compiler for the target. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
#define EPILOGUE_NAME an_epilogue_rows_avx512
#include "kernels/bias_act_impl.h"
#undef EPILOGUE_NAME
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define EPILOGUE_NAME an_epilogue_rows_avx2
#include "kernels/bias_act_impl.h"
#undef EPILOGUE_NAME
#pragma GCC pop_options

#endif
