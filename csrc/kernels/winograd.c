/* Winograd F(2x2, 3x3) transforms, see winograd.h.
 *
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 * G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 * A^T = [1 1 1 0; 0 1 -1 -1]
 * Sixteen channels at a time: their planes are transposed (SIMD, as the
 * GEMM packs) into a zero-framed channels-last block, each tile is then 16
 * loads, 32 adds and 16 stores of 16-lane vectors, and the outputs go back
 * through the same transpose.  Transforming plane by plane instead (rows of
 * 4 tiles on 8x8 planes) cost twice the GEMMs. */
#include "winograd.h"

#include "kernels/gemm.h"
#include "kernels/gemm_pack.h"
#include "kernels/isa_variants.h"
#include "kernels/vec16.h"

#include <string.h>

#define LANES AN_VEC16_LANES

int an_winograd_f2x3_weights(const float *w, int64_t K, int64_t C, float *U)
{
    const int64_t plane = C * K;
    int non_finite = 0;
    for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c) {
            const float *g = w + (k * C + c) * 9;
            for (int t = 0; t < 9; ++t)
                non_finite |= !(g[t] - g[t] == 0.0f); /* inf - inf and NaN are NaN */
            float t[4][3]; /* G g */
            for (int j = 0; j < 3; ++j) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (int i = 0; i < 4; ++i) { /* (G g) G^T */
                float *u = U + (int64_t)(4 * i) * plane + c * K + k;
                u[0] = t[i][0];
                u[plane] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                u[2 * plane] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                u[3 * plane] = t[i][2];
            }
        }
    return non_finite;
}

/* The framed block (2 TY + 2) x (2 TX + 2) x 16, then a 16 x 16 bounce. */
int64_t an_winograd_scratch_floats(int64_t H, int64_t W)
{
    return (2 * an_winograd_tiles(H) + 2) * (2 * an_winograd_tiles(W) + 2) * LANES +
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
    const int64_t Wf = 2 * TX + 2, Hf = 2 * TY + 2;
    wmask exponents = {0};
    /* the frame's border (and the columns / rows past an odd edge) stay 0 */
    memset(frame, 0, sizeof(float) * (size_t)(Hf * Wf * LANES));
    for (int64_t n = 0; n < nb; ++n)
        for (int64_t c0 = 0; c0 < C; c0 += LANES) {
            const int64_t count = C - c0 < LANES ? C - c0 : LANES;
            rows_to_block(x + (n * C + c0) * H * W, count, H, W, frame + (Wf + 1) * LANES,
                          Wf * LANES, &exponents);
            for (int64_t ty = 0; ty < TY; ++ty)
                for (int64_t tx = 0; tx < TX; ++tx) {
                    const float *p = frame + (2 * ty * Wf + 2 * tx) * LANES;
                    wvec e[4][4]; /* B^T d */
                    for (int j = 0; j < 4; ++j) {
                        const wvec d0 = wload(p + j * LANES), d1 = wload(p + (Wf + j) * LANES),
                                   d2 = wload(p + (2 * Wf + j) * LANES),
                                   d3 = wload(p + (3 * Wf + j) * LANES);
                        e[0][j] = d0 - d2;
                        e[1][j] = d1 + d2;
                        e[2][j] = d2 - d1;
                        e[3][j] = d1 - d3;
                    }
                    float *v = V + (n * tiles + ty * TX + tx) * C + c0;
                    for (int i = 0; i < 4; ++i) { /* (B^T d) B */
                        wstore(v + (4 * i) * T * C, e[i][0] - e[i][2], count);
                        wstore(v + (4 * i + 1) * T * C, e[i][1] + e[i][2], count);
                        wstore(v + (4 * i + 2) * T * C, e[i][2] - e[i][1], count);
                        wstore(v + (4 * i + 3) * T * C, e[i][1] - e[i][3], count);
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
    const int64_t HW = H * W;
    const wvec zero = {0};
    float *bounce = block + (2 * TY + 2) * (2 * TX + 2) * LANES;
    for (int64_t n = 0; n < nb; ++n)
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            const int64_t count = K - k0 < LANES ? K - k0 : LANES;
            wvec b = zero;
            if (bias)
                for (int64_t i = 0; i < count; ++i) b[i] = bias[k0 + i];
            /* channels-last outputs, rows 2 TX wide */
            for (int64_t ty = 0; ty < TY; ++ty)
                for (int64_t tx = 0; tx < TX; ++tx) {
                    const float *m = M + (n * tiles + ty * TX + tx) * K + k0;
                    wvec s[2][4]; /* A^T m */
                    for (int j = 0; j < 4; ++j) {
                        const wvec m0 = wload(m + j * T * K), m1 = wload(m + (4 + j) * T * K),
                                   m2 = wload(m + (8 + j) * T * K), m3 = wload(m + (12 + j) * T * K);
                        s[0][j] = m0 + m1 + m2;
                        s[1][j] = m1 - m2 - m3;
                    }
                    for (int a = 0; a < 2; ++a) { /* (A^T m) A + bias, then act */
                        wvec out[2] = {s[a][0] + s[a][1] + s[a][2] + b, s[a][1] - s[a][2] - s[a][3] + b};
                        for (int o = 0; o < 2; ++o)
                            an_vec16_store(block + ((2 * ty + a) * 2 * TX + 2 * tx + o) * LANES,
                                           an_vec16_activate(out[o], act));
                    }
                }
            /* back to planes, 16 pixels at a time (the overhanging row and
             * column of an odd edge are skipped) */
            float *yb = y + (n * K + k0) * HW;
            for (int64_t p0 = 0; p0 < HW; p0 += LANES) {
                const int64_t pixels = HW - p0 < LANES ? HW - p0 : LANES;
                float gathered[LANES * LANES];
                const float *src = block + p0 * LANES; /* even plane: rows 2 TX = W wide */
                if (W % 2 || H % 2) { /* odd plane: pick the valid pixels first */
                    for (int64_t r = 0; r < pixels; ++r) {
                        const int64_t p = p0 + r, oh = p / W, ow = p % W;
                        memcpy(gathered + r * LANES, block + (oh * 2 * TX + ow) * LANES,
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
    const int64_t Wb = 2 * TX;
    wmask exponents = {0};
    /* the overhanging row and column of an odd plane stay 0 */
    memset(block, 0, sizeof(float) * (size_t)(2 * TY * Wb * LANES));
    for (int64_t n = 0; n < nb; ++n)
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            const int64_t count = K - k0 < LANES ? K - k0 : LANES;
            rows_to_block(dy + (n * K + k0) * H * W, count, H, W, block, Wb * LANES, &exponents);
            for (int64_t ty = 0; ty < TY; ++ty)
                for (int64_t tx = 0; tx < TX; ++tx) {
                    const float *p = block + (2 * ty * Wb + 2 * tx) * LANES;
                    const wvec q00 = wload(p), q01 = wload(p + LANES), q10 = wload(p + Wb * LANES),
                               q11 = wload(p + (Wb + 1) * LANES);
                    /* A q: rows q0, q0 + q1, q0 - q1, -q1 */
                    const wvec r[4][2] = {{q00, q01}, {q00 + q10, q01 + q11}, {q00 - q10, q01 - q11},
                                          {-q10, -q11}};
                    float *o = DY + (n * tiles + ty * TX + tx) * K + k0;
                    for (int i = 0; i < 4; ++i) { /* (A q) A^T: a, a + b, a - b, -b */
                        wstore(o + (4 * i) * T * K, r[i][0], count);
                        wstore(o + (4 * i + 1) * T * K, r[i][0] + r[i][1], count);
                        wstore(o + (4 * i + 2) * T * K, r[i][0] - r[i][1], count);
                        wstore(o + (4 * i + 3) * T * K, -r[i][1], count);
                    }
                }
        }
    return any_lane(exponents);
}

void an_winograd_f2x3_weight_grad(const float *Wt, int64_t K, int64_t C, float *dw)
{
    const int64_t plane = K * C;
    for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c) {
            float m[4][4], t[3][4];
            for (int xi = 0; xi < 16; ++xi) m[xi / 4][xi % 4] = Wt[xi * plane + k * C + c];
            for (int j = 0; j < 4; ++j) { /* G^T m */
                t[0][j] = m[0][j] + 0.5f * (m[1][j] + m[2][j]);
                t[1][j] = 0.5f * (m[1][j] - m[2][j]);
                t[2][j] = 0.5f * (m[1][j] + m[2][j]) + m[3][j];
            }
            float *g = dw + (k * C + c) * 9;
            for (int i = 0; i < 3; ++i) { /* (G^T m) G */
                g[3 * i] += t[i][0] + 0.5f * (t[i][1] + t[i][2]);
                g[3 * i + 1] += 0.5f * (t[i][1] - t[i][2]);
                g[3 * i + 2] += 0.5f * (t[i][1] + t[i][2]) + t[i][3];
            }
        }
}

#define AN_DEFINE_WINOGRAD(suffix, attribute)                                                    \
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

int an_winograd_f2x3_input(const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
                           int64_t rows, float *scratch, float *V)
{
    return AN_BY_ISA(input_)(x, nb, C, H, W, rows, scratch, V);
}

void an_winograd_f2x3_output(const float *M, int64_t nb, int64_t K, int64_t H, int64_t W,
                             int64_t rows, const float *bias, int act, float *scratch, float *y)
{
    AN_BY_ISA(output_)(M, nb, K, H, W, rows, bias, act, scratch, y);
}

int an_winograd_f2x3_output_grad(const float *dy, int64_t nb, int64_t K, int64_t H, int64_t W,
                                 int64_t rows, float *scratch, float *DY)
{
    return AN_BY_ISA(output_grad_)(dy, nb, K, H, W, rows, scratch, DY);
}
