/* Winograd F(4x4, 3x3) transforms, see winograd.h.
 *
 * B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0 ]   A^T = [1 1  1 1  1 0]
 *       [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6 ]         [0 1 -1 2 -2 0]
 *       [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6 ]         [0 1  1 4  4 0]
 *       [0 -2 -1  2 1 0]       [1/24 1/12  1/6 ]         [0 1 -1 8 -8 1]
 *       [0  2 -1 -2 1 0]       [1/24 -1/12 1/6 ]
 *       [0  4  0 -5 0 1]       [  0     0    1 ]
 * (Lavin & Gray's points 0, +-1, +-2 and infinity.)
 * Sixteen channels at a time (eight on AVX2, see winograd_impl.h): their
 * planes are transposed (SIMD, as the GEMM packs) into a zero-framed
 * channels-last block, each tile's 6x6 transform is then done on 16-lane
 * vectors, and the outputs go back through the same transpose.  Transforming plane by plane instead (rows of
 * 4 tiles on 8x8 planes) cost twice the GEMMs.  F(2x2, 3x3) wrote 16
 * values per 4 outputs where this writes 36 per 16, and its GEMMs did 16
 * multiplies per 4 outputs where these do 36 per 16: ResNet-20's Winograd
 * layers took 20-30% less time. */
#include "winograd.h"

#include "kernels/gemm.h"
#include "kernels/gemm_pack.h"
#include "kernels/isa_variants.h"
#include "kernels/vec16.h"

#include <string.h>


/* The five 1-D transforms, on 6 (or 4, or 3) values; `T` is float or a
 * 16-lane vector.  Written once as macros so the scalar weight transforms
 * and the vector data transforms are the same expressions. */
#define BT_ROWS(d, r)                                                                            \
    do {                                                                                         \
        r[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];                                                 \
        r[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);                                             \
        r[2] = (d[4] - d[3]) + 4.0f * (d[1] - d[2]);                                             \
        r[3] = (d[4] - d[2]) + 2.0f * (d[3] - d[1]);                                             \
        r[4] = (d[4] - d[2]) - 2.0f * (d[3] - d[1]);                                             \
        r[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];                                                 \
    } while (0)
#define AT_ROWS(m, s)                                                                            \
    do {                                                                                         \
        s[0] = m[0] + (m[1] + m[2]) + (m[3] + m[4]);                                             \
        s[1] = (m[1] - m[2]) + 2.0f * (m[3] - m[4]);                                             \
        s[2] = (m[1] + m[2]) + 4.0f * (m[3] + m[4]);                                             \
        s[3] = (m[1] - m[2]) + 8.0f * (m[3] - m[4]) + m[5];                                      \
    } while (0)
#define A_ROWS(q, r) /* A = (A^T)^T, 6 x 4: the output gradient's transform */                  \
    do {                                                                                         \
        r[0] = q[0];                                                                             \
        r[1] = (q[0] + q[2]) + (q[1] + q[3]);                                                    \
        r[2] = (q[0] + q[2]) - (q[1] + q[3]);                                                    \
        r[3] = (q[0] + 4.0f * q[2]) + 2.0f * (q[1] + 4.0f * q[3]);                               \
        r[4] = (q[0] + 4.0f * q[2]) - 2.0f * (q[1] + 4.0f * q[3]);                               \
        r[5] = q[3];                                                                             \
    } while (0)
#define G_ROWS(g, t)                                                                             \
    do {                                                                                         \
        t[0] = 0.25f * g[0];                                                                     \
        t[1] = (g[0] + g[1] + g[2]) * (-1.0f / 6.0f);                                            \
        t[2] = (g[0] - g[1] + g[2]) * (-1.0f / 6.0f);                                            \
        t[3] = g[0] * (1.0f / 24.0f) + g[1] * (1.0f / 12.0f) + g[2] * (1.0f / 6.0f);             \
        t[4] = g[0] * (1.0f / 24.0f) - g[1] * (1.0f / 12.0f) + g[2] * (1.0f / 6.0f);             \
        t[5] = g[2];                                                                             \
    } while (0)
#define GT_ROWS(m, t) /* G^T, 3 x 6: the weight gradient's transform */                          \
    do {                                                                                         \
        t[0] = 0.25f * m[0] - (m[1] + m[2]) * (1.0f / 6.0f) + (m[3] + m[4]) * (1.0f / 24.0f);    \
        t[1] = (m[2] - m[1]) * (1.0f / 6.0f) + (m[3] - m[4]) * (1.0f / 12.0f);                   \
        t[2] = ((m[3] + m[4]) - (m[1] + m[2])) * (1.0f / 6.0f) + m[5];                           \
    } while (0)

/* The framed block (4 TY + 2) x (4 TX + 2) x 16, then a 16 x 16 bounce
 * (enough for every width). */
int64_t an_winograd_scratch_floats(int64_t H, int64_t W)
{
    return (4 * an_winograd_tiles(H) + 2) * (4 * an_winograd_tiles(W) + 2) * AN_VEC16_LANES +
           AN_VEC16_LANES * AN_VEC16_LANES;
}

#ifndef AN_HAVE_VEC16
#error "the Winograd transforms need GCC-style vector extensions"
#endif

#define LANES 16
#include "kernels/winograd_impl.h"
#undef LANES
#define LANES 8
#include "kernels/winograd_impl.h"
#undef LANES

/* The channels per block of each ISA's build. */
#define AN_WINOGRAD_LANES_generic 16
#define AN_WINOGRAD_LANES_avx2 8
#define AN_WINOGRAD_LANES_avx512 16
#define WINOGRAD_FN_(name, lanes) name##_L##lanes
#define WINOGRAD_FN(name, lanes) WINOGRAD_FN_(name, lanes)

void an_winograd_f4x3_weight_grad(const float *Wt, int64_t K, int64_t C, int64_t k_begin,
                                  int64_t k_end, float *dw)
{
    const int64_t plane = K * C;
    for (int64_t k = k_begin; k < k_end; ++k)
        for (int64_t c = 0; c < C; ++c) {
            float t[3][6]; /* G^T m */
            for (int j = 0; j < 6; ++j) {
                float m[6], r[3];
                for (int i = 0; i < 6; ++i) m[i] = Wt[(6 * i + j) * plane + k * C + c];
                GT_ROWS(m, r);
                for (int a = 0; a < 3; ++a) t[a][j] = r[a];
            }
            float *g = dw + (k * C + c) * 9;
            for (int a = 0; a < 3; ++a) { /* (G^T m) G */
                float r[3];
                GT_ROWS(t[a], r);
                for (int b = 0; b < 3; ++b) g[3 * a + b] += r[b];
            }
        }
}

#define AN_DEFINE_WINOGRAD(suffix, attribute)                                                    \
    attribute static int weights_##suffix(const float *w, int64_t K, int64_t C, int64_t k_begin,  \
                                          int64_t k_end, float *U)                               \
    {                                                                                            \
        return WINOGRAD_FN(weights_body, AN_WINOGRAD_LANES_##suffix)(w, K, C, k_begin, k_end, U); \
    }                                                                                            \
    attribute static int input_##suffix(const float *x, int64_t nb, int64_t C, int64_t H,         \
                                        int64_t W, int64_t T, float *frame, float *V)            \
    {                                                                                            \
        return WINOGRAD_FN(input_body, AN_WINOGRAD_LANES_##suffix)(x, nb, C, H, W, T, frame, V); \
    }                                                                                            \
    attribute static void output_##suffix(const float *M, int64_t nb, int64_t K, int64_t H,       \
                                          int64_t W, int64_t T, const float *bias, int act,      \
                                          float *block, float *y)                                \
    {                                                                                            \
        if (act == AN_GEMM_ACT_RELU)                                                             \
            WINOGRAD_FN(output_body, AN_WINOGRAD_LANES_##suffix)(M, nb, K, H, W, T, bias,        \
                                                                 AN_GEMM_ACT_RELU, block, y);    \
        else if (act == AN_GEMM_ACT_RELU6)                                                       \
            WINOGRAD_FN(output_body, AN_WINOGRAD_LANES_##suffix)(M, nb, K, H, W, T, bias,        \
                                                                 AN_GEMM_ACT_RELU6, block, y);   \
        else                                                                                     \
            WINOGRAD_FN(output_body, AN_WINOGRAD_LANES_##suffix)(M, nb, K, H, W, T, bias,        \
                                                                 AN_GEMM_ACT_NONE, block, y);    \
    }                                                                                            \
    attribute static int output_grad_##suffix(const float *dy, int64_t nb, int64_t K, int64_t H,  \
                                              int64_t W, int64_t T, float *block, float *DY)     \
    {                                                                                            \
        return WINOGRAD_FN(output_grad_body, AN_WINOGRAD_LANES_##suffix)(dy, nb, K, H, W, T,     \
                                                                         block, DY);             \
    }

AN_FOR_EACH_ISA(AN_DEFINE_WINOGRAD)

int an_winograd_f4x3_weights(const float *w, int64_t K, int64_t C, int64_t k_begin, int64_t k_end,
                             float *U)
{
    return AN_BY_ISA(weights_)(w, K, C, k_begin, k_end, U);
}

int an_winograd_f4x3_input(const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
                           int64_t rows, float *scratch, float *V)
{
    return AN_BY_ISA(input_)(x, nb, C, H, W, rows, scratch, V);
}

void an_winograd_f4x3_output(const float *M, int64_t nb, int64_t K, int64_t H, int64_t W,
                             int64_t rows, const float *bias, int act, float *scratch, float *y)
{
    AN_BY_ISA(output_)(M, nb, K, H, W, rows, bias, act, scratch, y);
}

int an_winograd_f4x3_output_grad(const float *dy, int64_t nb, int64_t K, int64_t H, int64_t W,
                                 int64_t rows, float *scratch, float *DY)
{
    return AN_BY_ISA(output_grad_)(dy, nb, K, H, W, rows, scratch, DY);
}
