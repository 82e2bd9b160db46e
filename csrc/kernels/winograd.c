/* Winograd F(4x4, 3x3) transforms, see winograd.h.
 *
 * B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0 ]   A^T = [1 1  1 1  1 0]
 *       [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6 ]         [0 1 -1 2 -2 0]
 *       [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6 ]         [0 1  1 4  4 0]
 *       [0 -2 -1  2 1 0]       [1/24 1/12  1/6 ]         [0 1 -1 8 -8 1]
 *       [0  2 -1 -2 1 0]       [1/24 -1/12 1/6 ]
 *       [0  4  0 -5 0 1]       [  0     0    1 ]
 * (Lavin & Gray's points 0, +-1, +-2 and infinity.)
 * Sixteen channels at a time: their planes are transposed (SIMD, as the
 * GEMM packs) into a zero-framed channels-last block, each tile's 6x6
 * transform is then done on 16-lane vectors, and the outputs go back
 * through the same transpose.  Transforming plane by plane instead (rows of
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

#define LANES AN_VEC16_LANES

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

/* The framed block (4 TY + 2) x (4 TX + 2) x 16, then a 16 x 16 bounce. */
int64_t an_winograd_scratch_floats(int64_t H, int64_t W)
{
    return (4 * an_winograd_tiles(H) + 2) * (4 * an_winograd_tiles(W) + 2) * LANES +
           LANES * LANES;
}

/* panel[k * 16 + r] = src[r * row_stride + k], r < rows (zeros up to 16), k < kc */
static void transpose_block(const float *src, int64_t row_stride, int64_t rows, int64_t kc,
                            float *panel)
{
    if (rows == LANES && an_pack_transpose_simd(src, row_stride, rows, kc, LANES, panel))
        return;
    for (int64_t k = 0; k < kc; ++k) {
        int64_t r = 0;
        for (; r < rows; ++r) panel[k * LANES + r] = src[r * row_stride + k];
        for (; r < LANES; ++r) panel[k * LANES + r] = 0.0f;
    }
}

#ifndef AN_HAVE_VEC16
#error "the Winograd transforms need GCC-style vector extensions"
#endif
typedef an_vec16 wvec;
typedef an_mask16 wmask;
#define wload an_vec16_load

static AN_ALWAYS_INLINE void wstore(float *p, wvec v, int64_t n)
{
    if (n == LANES)
        __builtin_memcpy(p, &v, sizeof v);
    else
        for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

/* Rows h < H of `count` planes (plane stride H * W) into a channels-last
 * block, row h at rows[h * row_floats] (16 floats per pixel, zeros past
 * count); notes any all-ones exponent (inf or NaN) in *exponents. */
static AN_ALWAYS_INLINE void rows_to_block(const float *planes, int64_t count, int64_t H, int64_t W,
                                           float *rows, int64_t row_floats, wmask *exponents)
{
    for (int64_t h = 0; h < H; ++h) {
        float *row = rows + h * row_floats;
        transpose_block(planes + h * W, H * W, count, W, row);
        for (int64_t q = 0; q < W; ++q)
            *exponents |= ((wmask)wload(row + q * LANES) & 0x7f800000) == 0x7f800000;
    }
}

/* whether rows_to_block saw an inf or NaN in any lane */
static AN_ALWAYS_INLINE int any_lane(wmask exponents)
{
    int any = 0;
    for (int lane = 0; lane < LANES; ++lane) any |= exponents[lane] != 0;
    return any;
}

static AN_ALWAYS_INLINE int input_body(const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
                                       int64_t T, float *frame, float *V)
{
    const int64_t TY = an_winograd_tiles(H), TX = an_winograd_tiles(W), tiles = TY * TX;
    const int64_t Wf = 4 * TX + 2, Hf = 4 * TY + 2;
    wmask exponents = {0};
    /* the frame's border (and the columns / rows past a ragged edge) stay 0 */
    memset(frame, 0, sizeof(float) * (size_t)(Hf * Wf * LANES));
    for (int64_t n = 0; n < nb; ++n)
        for (int64_t c0 = 0; c0 < C; c0 += LANES) {
            const int64_t count = C - c0 < LANES ? C - c0 : LANES;
            rows_to_block(x + (n * C + c0) * H * W, count, H, W, frame + (Wf + 1) * LANES,
                          Wf * LANES, &exponents);
            for (int64_t ty = 0; ty < TY; ++ty)
                for (int64_t tx = 0; tx < TX; ++tx) {
                    const float *p = frame + (4 * ty * Wf + 4 * tx) * LANES;
                    wvec e[6][6]; /* B^T d */
                    for (int j = 0; j < 6; ++j) {
                        wvec d[6], r[6];
                        for (int i = 0; i < 6; ++i) d[i] = wload(p + (i * Wf + j) * LANES);
                        BT_ROWS(d, r);
                        for (int i = 0; i < 6; ++i) e[i][j] = r[i];
                    }
                    float *v = V + (n * tiles + ty * TX + tx) * C + c0;
                    for (int i = 0; i < 6; ++i) { /* (B^T d) B */
                        wvec r[6];
                        BT_ROWS(e[i], r);
                        for (int j = 0; j < 6; ++j) wstore(v + (6 * i + j) * T * C, r[j], count);
                    }
                }
        }
    return any_lane(exponents);
}

static AN_ALWAYS_INLINE void output_body(const float *M, int64_t nb, int64_t K, int64_t H, int64_t W,
                                         int64_t T, const float *bias, const int act, float *block,
                                         float *y)
{
    const int64_t TY = an_winograd_tiles(H), TX = an_winograd_tiles(W), tiles = TY * TX;
    const int64_t HW = H * W, Wb = 4 * TX;
    const wvec zero = {0};
    float *bounce = block + (4 * TY + 2) * (4 * TX + 2) * LANES;
    for (int64_t n = 0; n < nb; ++n)
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            const int64_t count = K - k0 < LANES ? K - k0 : LANES;
            wvec b = zero;
            if (bias)
                for (int64_t i = 0; i < count; ++i) b[i] = bias[k0 + i];
            /* channels-last outputs, rows 4 TX wide */
            for (int64_t ty = 0; ty < TY; ++ty)
                for (int64_t tx = 0; tx < TX; ++tx) {
                    const float *m = M + (n * tiles + ty * TX + tx) * K + k0;
                    wvec s[4][6]; /* A^T m */
                    for (int j = 0; j < 6; ++j) {
                        wvec c[6], r[4];
                        for (int i = 0; i < 6; ++i) c[i] = wload(m + (6 * i + j) * T * K);
                        AT_ROWS(c, r);
                        for (int a = 0; a < 4; ++a) s[a][j] = r[a];
                    }
                    for (int a = 0; a < 4; ++a) { /* (A^T m) A + bias, then act */
                        wvec out[4];
                        AT_ROWS(s[a], out);
                        for (int o = 0; o < 4; ++o)
                            an_vec16_store(block + ((4 * ty + a) * Wb + 4 * tx + o) * LANES,
                                           an_vec16_activate(out[o] + b, act));
                    }
                }
            /* back to planes, 16 pixels at a time (the overhanging rows and
             * columns of a ragged edge are skipped) */
            float *yb = y + (n * K + k0) * HW;
            for (int64_t p0 = 0; p0 < HW; p0 += LANES) {
                const int64_t pixels = HW - p0 < LANES ? HW - p0 : LANES;
                float gathered[LANES * LANES];
                const float *src = block + p0 * LANES; /* rows 4 TX = W wide */
                if (Wb != W) { /* ragged: pick the valid pixels first */
                    for (int64_t r = 0; r < pixels; ++r) {
                        const int64_t p = p0 + r, oh = p / W, ow = p % W;
                        memcpy(gathered + r * LANES, block + (oh * Wb + ow) * LANES,
                               sizeof(float) * LANES);
                    }
                    src = gathered;
                }
                transpose_block(src, LANES, pixels, count, bounce);
                for (int64_t k = 0; k < count; ++k)
                    memcpy(yb + k * HW + p0, bounce + k * LANES, sizeof(float) * (size_t)pixels);
            }
        }
}

static AN_ALWAYS_INLINE int output_grad_body(const float *dy, int64_t nb, int64_t K, int64_t H,
                                             int64_t W, int64_t T, float *block, float *DY)
{
    const int64_t TY = an_winograd_tiles(H), TX = an_winograd_tiles(W), tiles = TY * TX;
    const int64_t Wb = 4 * TX;
    wmask exponents = {0};
    /* the overhanging rows and columns of a ragged plane stay 0 */
    memset(block, 0, sizeof(float) * (size_t)(4 * TY * Wb * LANES));
    for (int64_t n = 0; n < nb; ++n)
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            const int64_t count = K - k0 < LANES ? K - k0 : LANES;
            rows_to_block(dy + (n * K + k0) * H * W, count, H, W, block, Wb * LANES, &exponents);
            for (int64_t ty = 0; ty < TY; ++ty)
                for (int64_t tx = 0; tx < TX; ++tx) {
                    const float *p = block + (4 * ty * Wb + 4 * tx) * LANES;
                    wvec r[6][4]; /* A q */
                    for (int j = 0; j < 4; ++j) {
                        wvec q[4], c[6];
                        for (int a = 0; a < 4; ++a) q[a] = wload(p + (a * Wb + j) * LANES);
                        A_ROWS(q, c);
                        for (int i = 0; i < 6; ++i) r[i][j] = c[i];
                    }
                    float *o = DY + (n * tiles + ty * TX + tx) * K + k0;
                    for (int i = 0; i < 6; ++i) { /* (A q) A^T */
                        wvec c[6];
                        A_ROWS(r[i], c);
                        for (int j = 0; j < 6; ++j) wstore(o + (6 * i + j) * T * K, c[j], count);
                    }
                }
        }
    return any_lane(exponents);
}

/* U = G g G^T for 16 output channels k at a time (one input channel c):
 * the 9 taps of each are gathered into lanes, then every transform is one
 * vector expression and each of the 36 results one store of 16 adjacent
 * floats.  (One pair at a time in scalar code cost 1.3% of a ResNet-20
 * training step, on one thread while the other waited.) */
static AN_ALWAYS_INLINE int weights_body(const float *w, int64_t K, int64_t C, float *U)
{
    const int64_t plane = C * K;
    const wvec zero = {0};
    const wmask none = {0};
    wmask finite = none - 1; /* every lane true (-1), as a vector compare gives */
    for (int64_t c = 0; c < C; ++c)
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            const int64_t count = K - k0 < LANES ? K - k0 : LANES;
            wvec g[9];
            for (int t = 0; t < 9; ++t) {
                g[t] = zero;
                for (int64_t i = 0; i < count; ++i) g[t][i] = w[((k0 + i) * C + c) * 9 + t];
                finite &= g[t] - g[t] == zero; /* inf - inf and NaN are NaN */
            }
            wvec t[6][3]; /* G g */
            for (int j = 0; j < 3; ++j) {
                const wvec column[3] = {g[j], g[3 + j], g[6 + j]};
                wvec rows[6];
                G_ROWS(column, rows);
                for (int i = 0; i < 6; ++i) t[i][j] = rows[i];
            }
            for (int i = 0; i < 6; ++i) { /* (G g) G^T */
                wvec u[6];
                G_ROWS(t[i], u);
                for (int j = 0; j < 6; ++j) wstore(U + (6 * i + j) * plane + c * K + k0, u[j], count);
            }
        }
    int non_finite = 0;
    for (int lane = 0; lane < LANES; ++lane) non_finite |= finite[lane] == 0;
    return non_finite;
}

void an_winograd_f4x3_weight_grad(const float *Wt, int64_t K, int64_t C, float *dw)
{
    const int64_t plane = K * C;
    for (int64_t k = 0; k < K; ++k)
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
    attribute static int weights_##suffix(const float *w, int64_t K, int64_t C, float *U)         \
    {                                                                                            \
        return weights_body(w, K, C, U);                                                         \
    }                                                                                            \
    attribute static int input_##suffix(const float *x, int64_t nb, int64_t C, int64_t H,         \
                                        int64_t W, int64_t T, float *frame, float *V)            \
    {                                                                                            \
        return input_body(x, nb, C, H, W, T, frame, V);                                          \
    }                                                                                            \
    attribute static void output_##suffix(const float *M, int64_t nb, int64_t K, int64_t H,       \
                                          int64_t W, int64_t T, const float *bias, int act,      \
                                          float *block, float *y)                                \
    {                                                                                            \
        if (act == AN_GEMM_ACT_RELU)                                                             \
            output_body(M, nb, K, H, W, T, bias, AN_GEMM_ACT_RELU, block, y);                    \
        else if (act == AN_GEMM_ACT_RELU6)                                                       \
            output_body(M, nb, K, H, W, T, bias, AN_GEMM_ACT_RELU6, block, y);                   \
        else                                                                                     \
            output_body(M, nb, K, H, W, T, bias, AN_GEMM_ACT_NONE, block, y);                    \
    }                                                                                            \
    attribute static int output_grad_##suffix(const float *dy, int64_t nb, int64_t K, int64_t H,  \
                                              int64_t W, int64_t T, float *block, float *DY)     \
    {                                                                                            \
        return output_grad_body(dy, nb, K, H, W, T, block, DY);                                  \
    }

AN_FOR_EACH_ISA(AN_DEFINE_WINOGRAD)

int an_winograd_f4x3_weights(const float *w, int64_t K, int64_t C, float *U)
{
    return AN_BY_ISA(weights_)(w, K, C, U);
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
