/* SIMD transposing packers (gemm_pack_x86.c), used by gemm.c when the CPU
 * has the ISA.  panel[k * width + r] = src[r * row_stride + k] for r < rows,
 * 0 for rows <= r < width; k < kc. */
#ifndef APPEALNET_KERNELS_GEMM_PACK_H
#define APPEALNET_KERNELS_GEMM_PACK_H

#include <stdint.h>

#if defined(__x86_64__) || defined(_M_X64)
void an_pack_transpose_avx512(const float *src, int64_t row_stride, int64_t rows, int64_t kc,
                              int width, float *panel);
/* The same for 8 < width < 16 (rows <= width). */
void an_pack_transpose_narrow_avx512(const float *src, int64_t row_stride, int64_t rows,
                                     int64_t kc, int width, float *panel);
/* The same with row r at rows[r] (rows[r][k], k < kc); count <= width. */
void an_pack_transpose_rows_avx512(const float *const *rows, int64_t count, int64_t kc, int width,
                                   float *panel);
void an_pack_transpose_rows_avx2(const float *const *rows, int64_t count, int64_t kc, int width,
                                 float *panel);
void an_pack_transpose_avx2(const float *src, int64_t row_stride, int64_t rows, int64_t kc,
                            int width, float *panel);
/* an_epilogue_rows built for each ISA (bias_act_impl.h). */
void an_epilogue_rows_avx512(float *c, int64_t rows, int64_t cols, int64_t ldc,
                             const float *row_bias, const float *residual, int64_t ldr, int act);
void an_epilogue_rows_avx2(float *c, int64_t rows, int64_t cols, int64_t ldc,
                           const float *row_bias, const float *residual, int64_t ldr, int act);
#endif

/* The transpose above through the widest SIMD packer the CPU and the shape
 * allow; returns 0 (nothing written) when none applies, and the caller packs
 * it element by element. */
int an_pack_transpose_simd(const float *src, int64_t row_stride, int64_t rows, int64_t kc,
                           int width, float *panel);
/* The same with row r at rows[r] (an_pack_transpose_rows_avx512 / _avx2). */
int an_pack_transpose_rows_simd(const float *const *rows, int64_t count, int64_t kc, int width,
                                float *panel);

#endif
