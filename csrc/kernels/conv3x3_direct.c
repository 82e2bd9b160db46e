/* Direct 3x3 convolution for few input channels, see conv3x3_direct.h. */
#include "conv3x3_direct.h"

#include "cpu/cpu.h"
#include "kernels/simd_activate.h"
#include "kernels/gemm.h"
#include "kernels/isa_variants.h"

#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define DIRECT_CHANNELS 8 /* output channels per block */

/* Floats per padded input row (both ISAs): a zero, the row (W <= 64), a
 * zero, rounded up. */
#define DIRECT_ROW_STRIDE 72

/* The 3C input rows that output row oh's taps read (rows oh - 1 .. oh + 1
 * of each channel), each at rows + (c * 3 + ki) * DIRECT_ROW_STRIDE with a
 * zero on either side; a row above or below the image is all zero. */
static inline __attribute__((always_inline)) void
fill_padded_rows(const float *x, const int C, int64_t H, int64_t W, int64_t oh, float *rows)
{
    for (int c = 0; c < C; ++c)
        for (int ki = 0; ki < 3; ++ki) {
            const int64_t ih = oh + ki - 1;
            float *row = rows + (c * 3 + ki) * DIRECT_ROW_STRIDE;
            row[0] = row[W + 1] = 0.0f;
            if (ih >= 0 && ih < H)
                memcpy(row + 1, x + (c * H + ih) * W, sizeof(float) * (size_t)W);
            else
                memset(row + 1, 0, sizeof(float) * (size_t)W);
        }
}

/* Output row y_row, columns [ow, ow + 16 * NV), channels [co, co + 8), from
 * the 3C padded input rows its taps read (see direct_rows_c): plain
 * unaligned vectors, no test for the image's edges.  Taps in the order
 * c, ki, kj, each one FMA, the zero frame included (w * 0): the GEMM's sums
 * over its padded taps. */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
direct_block(const int NV, const int C, const float *rows, const float *w, const float *bias,
             int64_t plane, int64_t ow, int64_t co, int act, float *y_row)
{
    __m512 acc[DIRECT_CHANNELS][2];
    for (int o = 0; o < DIRECT_CHANNELS; ++o)
        acc[o][0] = acc[o][1] = _mm512_setzero_ps();
    for (int c = 0; c < C; ++c)
        for (int ki = 0; ki < 3; ++ki) {
            const float *row = rows + (c * 3 + ki) * DIRECT_ROW_STRIDE + ow;
            const float *wk = w + (co * C + c) * 9 + ki * 3;
#pragma GCC unroll 3
            for (int kj = 0; kj < 3; ++kj) {
                const __m512 in0 = _mm512_loadu_ps(row + kj);
                const __m512 in1 = NV == 2 ? _mm512_loadu_ps(row + 16 + kj) : in0;
#pragma GCC unroll 8
                for (int o = 0; o < DIRECT_CHANNELS; ++o) {
                    const __m512 wo = _mm512_set1_ps(wk[o * C * 9 + kj]);
                    acc[o][0] = _mm512_fmadd_ps(wo, in0, acc[o][0]);
                    if (NV == 2) acc[o][1] = _mm512_fmadd_ps(wo, in1, acc[o][1]);
                }
            }
        }
    for (int o = 0; o < DIRECT_CHANNELS; ++o)
        for (int v = 0; v < NV; ++v) {
            __m512 r = acc[o][v];
            if (bias) r = _mm512_add_ps(r, _mm512_set1_ps(bias[co + o]));
            r = an_avx512_activate(r, act);
            _mm512_storeu_ps(y_row + (co + o) * plane + ow + 16 * v, r);
        }
}

/* Each output row first copies the 3C input rows its taps read into a
 * stack buffer (fill_padded_rows), as the AVX2 kernel below does; the input channel count is a
 * constant in each compiled body (C = 1..4).  The 3 -> 32 layer on 32x32
 * (MobileNetV2's first) on one Zen 5 thread: 14.6 us a call with the edge
 * tests and the channel loop in the tap loop, 9.2 us now (16 -> 32: 7.5 -> 5.2 us). */
AN_TARGET_AVX512 static inline __attribute__((always_inline)) void
direct_rows_c(const int C, const float *x, const float *w, const float *bias, int64_t Cout,
              int64_t H, int64_t W, int64_t r0, int64_t r1, int act, float *y)
{
    _Alignas(64) float rows[4 * 3 * DIRECT_ROW_STRIDE];
    const int64_t plane = H * W;
    for (int64_t oh = r0; oh < r1; ++oh) {
        fill_padded_rows(x, C, H, W, oh, rows);
        float *y_row = y + oh * W;
        for (int64_t co = 0; co < Cout; co += DIRECT_CHANNELS) {
            int64_t ow = 0;
            for (; ow + 32 <= W; ow += 32)
                direct_block(2, C, rows, w, bias, plane, ow, co, act, y_row);
            if (ow < W)
                direct_block(1, C, rows, w, bias, plane, ow, co, act, y_row);
        }
    }
}

AN_TARGET_AVX512 static void direct_rows(const float *x, const float *w, const float *bias,
                                         int64_t C, int64_t Cout, int64_t H, int64_t W, int64_t r0,
                                         int64_t r1, int act, float *y)
{
    switch (C) {
    case 1: direct_rows_c(1, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    case 2: direct_rows_c(2, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    case 3: direct_rows_c(3, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    default: direct_rows_c(4, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    }
}

/* The same sums at 8 lanes.  Each output row first copies the 3C input
 * rows its taps read into a stack buffer with a zero on either side (a
 * zero row above or below the image): the taps then read plain unaligned
 * vectors, with no test for the image's edges in the inner loop.  The input
 * channel count is a constant in each compiled body (C = 1..4), so the tap
 * loop is straight code.  A block is 4 output channels by 16 columns: 8
 * accumulators, two input vectors and a weight.  (6 channels, 12
 * accumulators, left gcc one register short: it kept an accumulator on the
 * stack and the block ran at half this speed.)  Zen 3, one thread, the
 * 3 -> 32 layer on 32x32: 85 us a call with the edge tests in the tap loop,
 * 25 us now. */
#define DIRECT_CHANNELS_AVX2 4

AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
direct_block_avx2(const int C, const float *rows, const float *w, const float *bias,
                  int64_t plane, int64_t ow, int64_t co, int act, float *y)
{
    __m256 acc[DIRECT_CHANNELS_AVX2][2];
    for (int o = 0; o < DIRECT_CHANNELS_AVX2; ++o)
        acc[o][0] = acc[o][1] = _mm256_setzero_ps();
    for (int c = 0; c < C; ++c)
        for (int ki = 0; ki < 3; ++ki) {
            const float *row = rows + (c * 3 + ki) * DIRECT_ROW_STRIDE + ow;
            const float *wk = w + (co * C + c) * 9 + ki * 3;
#pragma GCC unroll 3
            for (int kj = 0; kj < 3; ++kj) {
                const __m256 in0 = _mm256_loadu_ps(row + kj), in1 = _mm256_loadu_ps(row + 8 + kj);
#pragma GCC unroll 4
                for (int o = 0; o < DIRECT_CHANNELS_AVX2; ++o) {
                    const __m256 wo = _mm256_broadcast_ss(wk + o * C * 9 + kj);
                    acc[o][0] = _mm256_fmadd_ps(wo, in0, acc[o][0]);
                    acc[o][1] = _mm256_fmadd_ps(wo, in1, acc[o][1]);
                }
            }
        }
    for (int o = 0; o < DIRECT_CHANNELS_AVX2; ++o)
        for (int v = 0; v < 2; ++v) {
            __m256 r = acc[o][v];
            if (bias) r = _mm256_add_ps(r, _mm256_set1_ps(bias[co + o]));
            r = an_avx2_activate(r, act);
            _mm256_storeu_ps(y + (co + o) * plane + ow + 8 * v, r);
        }
}

AN_TARGET_AVX2 static inline __attribute__((always_inline)) void
direct_rows_avx2_c(const int C, const float *x, const float *w, const float *bias, int64_t Cout,
                   int64_t H, int64_t W, int64_t r0, int64_t r1, int act, float *y)
{
    _Alignas(32) float rows[4 * 3 * DIRECT_ROW_STRIDE];
    const int64_t plane = H * W;
    for (int64_t oh = r0; oh < r1; ++oh) {
        fill_padded_rows(x, C, H, W, oh, rows);
        float *y_row = y + oh * W;
        for (int64_t co = 0; co < Cout; co += DIRECT_CHANNELS_AVX2)
            for (int64_t ow = 0; ow < W; ow += 16)
                direct_block_avx2(C, rows, w, bias, plane, ow, co, act, y_row);
    }
}

AN_TARGET_AVX2 static void direct_rows_avx2(const float *x, const float *w, const float *bias,
                                            int64_t C, int64_t Cout, int64_t H, int64_t W,
                                            int64_t r0, int64_t r1, int act, float *y)
{
    switch (C) {
    case 1: direct_rows_avx2_c(1, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    case 2: direct_rows_avx2_c(2, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    case 3: direct_rows_avx2_c(3, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    default: direct_rows_avx2_c(4, x, w, bias, Cout, H, W, r0, r1, act, y); break;
    }
}
#endif

int an_conv3x3_few_channels_applies(int64_t C, int64_t Cout, int64_t H, int64_t W)
{
#if defined(__x86_64__) || defined(_M_X64)
    return an_cpu_info_get()->isa >= AN_ISA_AVX2 && C >= 1 && C <= 4 && Cout >= 8 &&
           Cout % DIRECT_CHANNELS == 0 && H >= 1 && W >= 16 && W <= 64 && W % 16 == 0;
#else
    (void)C, (void)Cout, (void)H, (void)W;
    return 0;
#endif
}

void an_conv3x3_few_channels_rows_f32(const float *x, const float *w, const float *bias,
                                      int64_t C, int64_t Cout, int64_t H, int64_t W, int64_t r0,
                                      int64_t r1, int act, float *y)
{
#if defined(__x86_64__) || defined(_M_X64)
    if (an_cpu_info_get()->isa == AN_ISA_AVX512)
        direct_rows(x, w, bias, C, Cout, H, W, r0, r1, act, y);
    else
        direct_rows_avx2(x, w, bias, C, Cout, H, W, r0, r1, act, y);
#else
    (void)x, (void)w, (void)bias, (void)C, (void)Cout, (void)H, (void)W, (void)r0, (void)r1;
    (void)act, (void)y;
#endif
}
