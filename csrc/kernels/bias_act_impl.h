/* The output pass over C's rows (see an_epilogue_rows in gemm.h), written
 * once: gemm.c builds it portable and gemm_pack_x86.c builds it for AVX2 and
 * AVX-512, where the compare-and-select loops below vectorise 8 or 16 lanes
 * wide.  Per element the same operations in the same order in every build
 * (bias, then residual, then activation), so every build gives the same
 * bits.  Include with EPILOGUE_NAME defined to the function's name. */
#include <stdint.h>

#include "kernels/gemm.h"

void EPILOGUE_NAME(float *c, int64_t rows, int64_t cols, int64_t ldc, const float *row_bias,
                   const float *residual, int64_t ldr, int act)
{
    for (int64_t i = 0; i < rows; ++i) {
        float *row = c + i * ldc;
        const float *res = residual ? residual + i * ldr : NULL;
        const float b = row_bias ? row_bias[i] : 0.0f;
        if (act == AN_GEMM_ACT_NONE) {
            if (row_bias)
                for (int64_t j = 0; j < cols; ++j) row[j] += b;
            if (res)
                for (int64_t j = 0; j < cols; ++j) row[j] += res[j];
        } else if (act == AN_GEMM_ACT_RELU) { /* one pass: add, then compare */
            for (int64_t j = 0; j < cols; ++j) {
                float v = row_bias ? row[j] + b : row[j];
                v = res ? v + res[j] : v;
                row[j] = v <= 0.0f ? 0.0f : v; /* NaN passes, -0 becomes +0 */
            }
        } else if (act == AN_GEMM_ACT_RELU6) {
            for (int64_t j = 0; j < cols; ++j) {
                float v = row_bias ? row[j] + b : row[j];
                v = res ? v + res[j] : v;
                v = v <= 0.0f ? 0.0f : v;
                row[j] = v >= 6.0f ? 6.0f : v;
            }
        }
    }
}
