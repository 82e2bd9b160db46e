/* winograd_impl.h — winograd.c's transforms for one vector width: LANES
 * channels per block.  winograd.c includes it once per width with LANES
 * (16 or 8) defined; every function gets the width as a suffix
 * (W_FN(input_body) is input_body_L16 or input_body_L8).  The lanes are
 * independent channels running the same expressions, so the widths agree
 * bit for bit; AVX2 takes 8 (its 16-lane build spilled in 16-byte pieces
 * and reloaded them, a third of its input transform's time). */
#define W_CAT_(a, b) a##b
#define W_CAT(a, b) W_CAT_(a, b)
#define wvec W_CAT(an_vec, LANES)
#define wmask W_CAT(an_mask, LANES)
#define wload W_CAT(wvec, _load)
#define wstore_full W_CAT(wvec, _store)
#define wactivate W_CAT(wvec, _activate)
#define W_FN(name) W_CAT(name##_L, LANES)

/* panel[k * LANES + r] = src[r * row_stride + k], r < rows (zeros up to LANES), k < kc */
static void W_FN(transpose_block)(const float *src, int64_t row_stride, int64_t rows, int64_t kc,
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


static AN_ALWAYS_INLINE void W_FN(wstore)(float *p, wvec v, int64_t n)
{
    if (n == LANES)
        __builtin_memcpy(p, &v, sizeof v);
    else
        for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

/* Rows h < H of `count` planes (plane stride H * W) into a channels-last
 * block, row h at rows[h * row_floats] (16 floats per pixel, zeros past
 * count); notes any all-ones exponent (inf or NaN) in *exponents. */
static AN_ALWAYS_INLINE void W_FN(rows_to_block)(const float *planes, int64_t count, int64_t H, int64_t W,
                                           float *rows, int64_t row_floats, wmask *exponents)
{
    for (int64_t h = 0; h < H; ++h) {
        float *row = rows + h * row_floats;
        W_FN(transpose_block)(planes + h * W, H * W, count, W, row);
        for (int64_t q = 0; q < W; ++q)
            *exponents |= ((wmask)wload(row + q * LANES) & 0x7f800000) == 0x7f800000;
    }
}

/* whether rows_to_block saw an inf or NaN in any lane */
static AN_ALWAYS_INLINE int W_FN(any_lane)(wmask exponents)
{
    int any = 0;
    for (int lane = 0; lane < LANES; ++lane) any |= exponents[lane] != 0;
    return any;
}

static AN_ALWAYS_INLINE int W_FN(input_body)(const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
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
            W_FN(rows_to_block)(x + (n * C + c0) * H * W, count, H, W, frame + (Wf + 1) * LANES,
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
                        for (int j = 0; j < 6; ++j) W_FN(wstore)(v + (6 * i + j) * T * C, r[j], count);
                    }
                }
        }
    return W_FN(any_lane)(exponents);
}

static AN_ALWAYS_INLINE void W_FN(output_body)(const float *M, int64_t nb, int64_t K, int64_t H, int64_t W,
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
                            wstore_full(block + ((4 * ty + a) * Wb + 4 * tx + o) * LANES,
                                           wactivate(out[o] + b, act));
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
                W_FN(transpose_block)(src, LANES, pixels, count, bounce);
                for (int64_t k = 0; k < count; ++k)
                    memcpy(yb + k * HW + p0, bounce + k * LANES, sizeof(float) * (size_t)pixels);
            }
        }
}

static AN_ALWAYS_INLINE int W_FN(output_grad_body)(const float *dy, int64_t nb, int64_t K, int64_t H,
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
            W_FN(rows_to_block)(dy + (n * K + k0) * H * W, count, H, W, block, Wb * LANES, &exponents);
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
                        for (int j = 0; j < 6; ++j) W_FN(wstore)(o + (6 * i + j) * T * K, c[j], count);
                    }
                }
        }
    return W_FN(any_lane)(exponents);
}

/* U = G g G^T for 16 output channels k at a time (one input channel c):
 * the 9 taps of each go to lanes, then every transform is one vector
 * expression and each of the 36 results one store of 16 adjacent floats.
 * (One pair at a time in scalar code cost 1.3% of a ResNet-20 training
 * step, on one thread while the other waited.)  The taps reach the lanes
 * through the SIMD transpose, 16 input channels (144 floats of each of
 * the 16 rows of w) at a time: gathered one float at a time, 256 -> 256
 * weights took 20 ns per pair of channels, a quarter of that layer's
 * forward on 8x8 planes at batch 32.  With this and the split of K over
 * the team (conv.c), that forward took 0.68x the time; what remains of
 * the transform there is mostly writing U (9 MB) to memory. */
#ifndef W_WEIGHT_CHANNELS /* this header is included once per width */
#define W_WEIGHT_CHANNELS 16
#endif

static AN_ALWAYS_INLINE int W_FN(weights_body)(const float *w, int64_t K, int64_t C, int64_t k_begin,
                                                 int64_t k_end, float *U)
{
    const int64_t plane = C * K;
    const wvec zero = {0};
    const wmask none = {0};
    wmask finite = none - 1; /* every lane true (-1), as a vector compare gives */
    _Alignas(64) float taps[W_WEIGHT_CHANNELS * 9 * LANES];
    for (int64_t c0 = 0; c0 < C; c0 += W_WEIGHT_CHANNELS) {
        const int64_t channels = C - c0 < W_WEIGHT_CHANNELS ? C - c0 : W_WEIGHT_CHANNELS;
        for (int64_t k0 = k_begin; k0 < k_end; k0 += LANES) {
            const int64_t count = k_end - k0 < LANES ? k_end - k0 : LANES;
            /* taps[((c - c0) * 9 + t) * LANES + i] = w[k0 + i][c][t] (zero past count) */
            W_FN(transpose_block)(w + (k0 * C + c0) * 9, C * 9, count, channels * 9, taps);
            for (int64_t c = c0; c < c0 + channels; ++c) {
                wvec g[9];
                for (int t = 0; t < 9; ++t) {
                    g[t] = wload(taps + ((c - c0) * 9 + t) * LANES);
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
                    for (int j = 0; j < 6; ++j)
                        W_FN(wstore)(U + (6 * i + j) * plane + c * K + k0, u[j], count);
                }
            }
        }
    }
    int non_finite = 0;
    for (int lane = 0; lane < LANES; ++lane) non_finite |= finite[lane] == 0;
    return non_finite;
}

#undef W_CAT_
#undef W_CAT
#undef wvec
#undef wmask
#undef wload
#undef wstore_full
#undef wactivate
#undef W_FN
