/* Standalone tests for the convolution-side C kernels: im2col / col2im,
 * direct depthwise convolution, pooling and batch normalisation.
 *
 * Every kernel is compared against a naive double-precision reference written
 * here (direct loops straight from the definitions), gradients included, and
 * every parallel kernel is run with 1 and 2 OpenMP threads and must give
 * bit-identical results.
 *
 * Build and run (from the repository root):
 *   gcc -std=c11 -O2 -fopenmp -Icsrc tests/c/test_conv_kernels.c \
 *       csrc/kernels/im2col.c csrc/kernels/depthwise.c csrc/kernels/pool.c \
 *       csrc/kernels/batchnorm.c csrc/kernels/batchnorm_avx2.c \
 *       csrc/kernels/batchnorm_avx512.c csrc/cpu/cpu.c -lm -o /tmp/test_conv_kernels
 *   /tmp/test_conv_kernels
 * Sanitizers: add -fsanitize=address,undefined -fno-omit-frame-pointer.
 * Also compiles without -fopenmp (the thread comparison is then trivial).
 * Exit status is non-zero on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/batchnorm.h"
#include "kernels/depthwise.h"
#include "kernels/im2col.h"
#include "kernels/pool.h"

/* ------------------------------------------------------------ test harness */

static int g_checks = 0;
static int g_failures = 0;

static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double rand_unit(void) /* uniform in [0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

static float rand_sym(void) { return (float)(2.0 * rand_unit() - 1.0); }

/* The training backward's workspace for [N, C, *] (one, grown as needed). */
static double *bn_workspace(int64_t N, int64_t C)
{
    static double *buffer;
    static int64_t size;
    const int64_t want = an_batchnorm_backward_train_workspace(N, C);
    if (want > size) {
        free(buffer);
        buffer = malloc(sizeof(double) * (size_t)want);
        size = buffer ? want : 0;
    }
    return buffer;
}

static float *alloc_f(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static double *alloc_d(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static float *rand_buf(int64_t n)
{
    float *p = alloc_f(n);
    for (int64_t i = 0; i < n; ++i) p[i] = rand_sym();
    return p;
}

static float *copy_buf(const float *src, int64_t n)
{
    float *p = alloc_f(n);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

/* |got - ref| <= tol * (1 + |ref|) elementwise; NaN must match NaN. */
static void check_close(const char *what, const char *cfg, const float *got,
                        const double *ref, int64_t n, double tol)
{
    ++g_checks;
    double worst = 0.0;
    int64_t worst_i = -1;
    for (int64_t i = 0; i < n; ++i) {
        if (isnan(ref[i]) || isnan(got[i])) {
            if (isnan(ref[i]) != isnan(got[i])) {
                worst = INFINITY;
                worst_i = i;
                break;
            }
            continue;
        }
        const double err = fabs((double)got[i] - ref[i]) / (1.0 + fabs(ref[i]));
        if (!(err <= worst)) {
            worst = err;
            worst_i = i;
        }
    }
    if (worst > tol) {
        ++g_failures;
        printf("FAIL %-28s %s: worst rel err %.3g at %lld (got %.9g ref %.9g)\n",
               what, cfg, worst, (long long)worst_i, (double)got[worst_i],
               ref[worst_i]);
    }
}

static void check_bits(const char *what, const char *cfg, const void *a,
                       const void *b, size_t bytes)
{
    ++g_checks;
    if (memcmp(a, b, bytes) != 0) {
        ++g_failures;
        printf("FAIL %-28s %s: results differ bitwise\n", what,
               cfg);
    }
}

static void check_true(const char *what, const char *cfg, int ok)
{
    ++g_checks;
    if (!ok) {
        ++g_failures;
        printf("FAIL %-28s %s\n", what, cfg);
    }
}

static int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p,
                        int64_t d)
{
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* PyTorch's pooling output size, ceil_mode included. */
static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p,
                        int64_t d, int ceil_mode)
{
    const int64_t num = in + 2 * p - d * (k - 1) - 1;
    int64_t o = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) --o;
    return o;
}

/* ------------------------------------------------------- convolution tests */

typedef struct {
    int64_t N, C, H, W, M, kh, kw, sh, sw, ph, pw, dh, dw;
} ConvCfg;

static const ConvCfg conv_cfgs[] = {
    /* N  C   H   W  M kh kw sh sw ph pw dh dw */
    {1, 32, 16, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1}, /* MobileNet 3x3 s1 */
    {3, 32, 16, 16, 2, 3, 3, 1, 1, 1, 1, 1, 1},
    {1, 96, 8, 8, 1, 3, 3, 2, 2, 1, 1, 1, 1}, /* 3x3 s2 */
    {3, 96, 8, 8, 2, 3, 3, 2, 2, 1, 1, 1, 1},
    {2, 8, 16, 16, 1, 3, 3, 2, 2, 1, 1, 1, 1},
    {1, 3, 17, 17, 1, 7, 7, 2, 2, 3, 3, 1, 1}, /* ResNet stem 7x7 s2 p3 */
    {3, 8, 9, 9, 1, 1, 1, 1, 1, 0, 0, 1, 1},   /* 1x1 */
    {2, 4, 9, 9, 1, 1, 1, 2, 2, 0, 0, 1, 1},   /* 1x1 s2 (ResNet shortcut) */
    {2, 4, 12, 12, 1, 3, 3, 1, 1, 2, 2, 2, 2}, /* dilation 2 */
    {3, 5, 7, 5, 2, 3, 3, 1, 1, 1, 1, 1, 1},   /* odd sizes, fast s1 */
    {1, 5, 7, 5, 1, 3, 3, 2, 2, 1, 1, 1, 1},   /* odd sizes, fast s2 */
    {2, 3, 3, 2, 1, 5, 5, 1, 1, 2, 2, 1, 1},   /* kernel > input */
    {1, 2, 2, 2, 2, 3, 3, 2, 2, 1, 1, 1, 1},   /* tiny, fast s2 */
    {1, 4, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1},   /* 1x1 image, fast s1 */
    {2, 4, 10, 11, 1, 3, 5, 2, 1, 1, 2, 1, 2}, /* asymmetric */
    {1, 3, 6, 6, 1, 3, 3, 3, 3, 1, 1, 1, 1},   /* stride 3 */
    {2, 6, 14, 14, 1, 5, 5, 2, 2, 2, 2, 1, 1}, /* 5x5 s2 p2 */
    {3, 4, 8, 8, 2, 3, 3, 1, 1, 0, 0, 1, 1},   /* 3x3 valid */
};

static void cfg_name(const ConvCfg *c, char *buf, size_t n)
{
    snprintf(buf, n,
             "[N%lld C%lld %lldx%lld m%lld k%lldx%lld s%lld,%lld p%lld,%lld "
             "d%lld,%lld]",
             (long long)c->N, (long long)c->C, (long long)c->H,
             (long long)c->W, (long long)c->M, (long long)c->kh,
             (long long)c->kw, (long long)c->sh, (long long)c->sw,
             (long long)c->ph, (long long)c->pw, (long long)c->dh,
             (long long)c->dw);
}

static void test_depthwise(const ConvCfg *cf, int use_bias)
{
    char name[160];
    cfg_name(cf, name, sizeof name);
    const int64_t N = cf->N, C = cf->C, H = cf->H, W = cf->W, M = cf->M;
    const int64_t kh = cf->kh, kw = cf->kw, sh = cf->sh, sw = cf->sw;
    const int64_t ph = cf->ph, pw = cf->pw, dh = cf->dh, dw = cf->dw;
    const int64_t OH = conv_out(H, kh, sh, ph, dh);
    const int64_t OW = conv_out(W, kw, sw, pw, dw);
    const int64_t Co = C * M;
    const int64_t nx = N * C * H * W, ny = N * Co * OH * OW, nw = Co * kh * kw;

    float *x = rand_buf(nx), *w = rand_buf(nw), *b = rand_buf(Co);
    float *dy = rand_buf(ny);
    float *dx0 = rand_buf(nx), *dw0 = rand_buf(nw), *db0 = rand_buf(Co);
    double *y_ref = alloc_d(ny), *dx_ref = alloc_d(nx);
    double *dw_ref = alloc_d(nw), *db_ref = alloc_d(Co);

    /* naive references, straight from the definition */
    for (int64_t i = 0; i < nx; ++i) dx_ref[i] = dx0[i];
    for (int64_t i = 0; i < nw; ++i) dw_ref[i] = dw0[i];
    for (int64_t i = 0; i < Co; ++i) db_ref[i] = db0[i];
    for (int64_t n = 0; n < N; ++n)
        for (int64_t co = 0; co < Co; ++co) {
            const int64_t ci = co / M;
            for (int64_t oh = 0; oh < OH; ++oh)
                for (int64_t ow = 0; ow < OW; ++ow) {
                    const int64_t yi = ((n * Co + co) * OH + oh) * OW + ow;
                    double acc = use_bias ? b[co] : 0.0;
                    db_ref[co] += dy[yi];
                    for (int64_t i = 0; i < kh; ++i)
                        for (int64_t j = 0; j < kw; ++j) {
                            const int64_t ih = oh * sh - ph + i * dh;
                            const int64_t iw = ow * sw - pw + j * dw;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                continue;
                            const int64_t xi = ((n * C + ci) * H + ih) * W + iw;
                            const int64_t wi = (co * kh + i) * kw + j;
                            acc += (double)w[wi] * x[xi];
                            dx_ref[xi] += (double)w[wi] * dy[yi];
                            dw_ref[wi] += (double)x[xi] * dy[yi];
                        }
                    y_ref[yi] = acc;
                }
        }

    float *y1 = alloc_f(ny), *y2 = alloc_f(ny);
    float *dx1 = copy_buf(dx0, nx), *dx2 = copy_buf(dx0, nx);
    float *dw1 = copy_buf(dw0, nw), *dw2 = copy_buf(dw0, nw);
    float *db1 = copy_buf(db0, Co), *db2 = copy_buf(db0, Co);
    const float *bias = use_bias ? b : NULL;
    for (int t = 1; t <= 2; ++t) {
        set_threads(t);
        an_depthwise_conv2d_forward_f32(x, w, bias, N, C, H, W, M, kh, kw, sh,
                                        sw, ph, pw, dh, dw, OH, OW,
                                        t == 1 ? y1 : y2);
        an_depthwise_conv2d_backward_input_f32(dy, w, N, C, H, W, M, kh, kw,
                                               sh, sw, ph, pw, dh, dw, OH, OW,
                                               t == 1 ? dx1 : dx2);
        an_depthwise_conv2d_backward_weight_f32(
            dy, x, N, C, H, W, M, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW,
            t == 1 ? dw1 : dw2, t == 1 ? db1 : db2);
    }
    /* without bias the backward also runs with dbias == NULL */
    float *dw3 = copy_buf(dw0, nw);
    an_depthwise_conv2d_backward_weight_f32(dy, x, N, C, H, W, M, kh, kw, sh,
                                            sw, ph, pw, dh, dw, OH, OW, dw3,
                                            NULL);

    check_close("depthwise forward", name, y1, y_ref, ny, 1e-5);
    check_close("depthwise backward_input", name, dx1, dx_ref, nx, 1e-5);
    check_close("depthwise backward_weight", name, dw1, dw_ref, nw, 1e-5);
    check_close("depthwise backward_bias", name, db1, db_ref, Co, 1e-5);
    check_bits("depthwise dweight (no dbias)", name, dw1, dw3,
               (size_t)nw * sizeof(float));
    check_bits("depthwise forward threads", name, y1, y2,
               (size_t)ny * sizeof(float));
    check_bits("depthwise bwd_input threads", name, dx1, dx2,
               (size_t)nx * sizeof(float));
    check_bits("depthwise bwd_weight threads", name, dw1, dw2,
               (size_t)nw * sizeof(float));
    check_bits("depthwise bwd_bias threads", name, db1, db2,
               (size_t)Co * sizeof(float));

    free(x); free(w); free(b); free(dy); free(dx0); free(dw0); free(db0);
    free(y_ref); free(dx_ref); free(dw_ref); free(db_ref);
    free(y1); free(y2); free(dx1); free(dx2); free(dw1); free(dw2);
    free(db1); free(db2); free(dw3);
}

/* im2col as used by a dense convolution: out = Wt @ im2col(x) per image must
 * equal the naive direct convolution; col itself must be exact; col2im must
 * be the adjoint and must accumulate. */
static void test_im2col(const ConvCfg *cf)
{
    char name[160];
    cfg_name(cf, name, sizeof name);
    const int64_t N = cf->N, C = cf->C, H = cf->H, W = cf->W;
    const int64_t kh = cf->kh, kw = cf->kw, sh = cf->sh, sw = cf->sw;
    const int64_t ph = cf->ph, pw = cf->pw, dh = cf->dh, dw = cf->dw;
    const int64_t OH = conv_out(H, kh, sh, ph, dh);
    const int64_t OW = conv_out(W, kw, sw, pw, dw);
    const int64_t Co = 5, K = C * kh * kw, P = OH * OW;

    float *x = rand_buf(N * C * H * W), *wt = rand_buf(Co * K);
    float *col = alloc_f(K * P), *out = alloc_f(Co * P);
    double *ref = alloc_d(Co * P);
    int col_exact = 1;
    for (int64_t n = 0; n < N; ++n) {
        const float *xn = x + n * C * H * W;
        /* poison col so that unwritten entries are caught */
        for (int64_t i = 0; i < K * P; ++i) col[i] = NAN;
        an_im2col_f32(xn, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW,
                      col);
        for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
                for (int64_t j = 0; j < kw; ++j)
                    for (int64_t oh = 0; oh < OH; ++oh)
                        for (int64_t ow = 0; ow < OW; ++ow) {
                            const int64_t ih = oh * sh - ph + i * dh;
                            const int64_t iw = ow * sw - pw + j * dw;
                            const float expect =
                                (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    ? 0.0f
                                    : xn[(c * H + ih) * W + iw];
                            const float got =
                                col[((c * kh + i) * kw + j) * P + oh * OW + ow];
                            if (memcmp(&got, &expect, sizeof got) != 0)
                                col_exact = 0;
                        }
        /* naive matmul Wt[Co,K] @ col[K,P] in double, rounded to float */
        for (int64_t o = 0; o < Co; ++o)
            for (int64_t p = 0; p < P; ++p) {
                double s = 0.0;
                for (int64_t k = 0; k < K; ++k)
                    s += (double)wt[o * K + k] * col[k * P + p];
                out[o * P + p] = (float)s;
            }
        /* naive direct convolution */
        for (int64_t o = 0; o < Co; ++o)
            for (int64_t oh = 0; oh < OH; ++oh)
                for (int64_t ow = 0; ow < OW; ++ow) {
                    double s = 0.0;
                    for (int64_t c = 0; c < C; ++c)
                        for (int64_t i = 0; i < kh; ++i)
                            for (int64_t j = 0; j < kw; ++j) {
                                const int64_t ih = oh * sh - ph + i * dh;
                                const int64_t iw = ow * sw - pw + j * dw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                s += (double)wt[(o * C + c) * kh * kw +
                                                i * kw + j] *
                                     xn[(c * H + ih) * W + iw];
                            }
                    ref[o * P + oh * OW + ow] = s;
                }
        check_close("im2col gemm == direct conv", name, out, ref, Co * P,
                    1e-6);
    }
    check_true("im2col exact entries", name, col_exact);

    /* adjoint: <im2col(x), c> == <x, col2im(c)> */
    const int64_t nxi = C * H * W;
    float *cmat = rand_buf(K * P), *back = alloc_f(nxi);
    memset(back, 0, (size_t)nxi * sizeof(float));
    an_im2col_f32(x, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, col);
    an_col2im_add_f32(cmat, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW,
                      back);
    double lhs = 0.0, rhs = 0.0, mag = 0.0;
    for (int64_t i = 0; i < K * P; ++i) {
        lhs += (double)col[i] * cmat[i];
        mag += fabs((double)col[i] * cmat[i]);
    }
    for (int64_t i = 0; i < nxi; ++i) rhs += (double)x[i] * back[i];
    check_true("col2im adjoint", name, fabs(lhs - rhs) <= 1e-5 * (1.0 + mag));

    /* accumulation against a naive scatter in double */
    float *dx = rand_buf(nxi);
    double *dref = alloc_d(nxi);
    for (int64_t i = 0; i < nxi; ++i) dref[i] = dx[i];
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j)
                for (int64_t oh = 0; oh < OH; ++oh)
                    for (int64_t ow = 0; ow < OW; ++ow) {
                        const int64_t ih = oh * sh - ph + i * dh;
                        const int64_t iw = ow * sw - pw + j * dw;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        dref[(c * H + ih) * W + iw] +=
                            cmat[((c * kh + i) * kw + j) * P + oh * OW + ow];
                    }
    an_col2im_add_f32(cmat, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW,
                      dx);
    check_close("col2im accumulate", name, dx, dref, nxi, 1e-5);

    free(x); free(wt); free(col); free(out); free(ref); free(cmat);
    free(back); free(dx); free(dref);
}

/* ----------------------------------------------------------- max pooling */

typedef struct {
    int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw;
    int ceil_mode;
} MaxCfg;

static const MaxCfg max_cfgs[] = {
    /* N C  H   W kh kw sh sw ph pw dh dw ceil */
    {2, 8, 16, 16, 3, 3, 2, 2, 1, 1, 1, 1, 0}, /* ResNet stem pool */
    {2, 8, 16, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {3, 4, 7, 5, 2, 2, 2, 2, 0, 0, 1, 1, 0},
    {3, 4, 7, 5, 2, 2, 2, 2, 0, 0, 1, 1, 1}, /* ceil overhang */
    {1, 6, 8, 8, 3, 3, 2, 2, 0, 0, 1, 1, 1}, /* ShuffleNet-ish */
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {1, 3, 9, 9, 3, 3, 1, 1, 1, 1, 2, 2, 0}, /* dilation 2 */
    {1, 3, 10, 9, 3, 2, 3, 2, 1, 1, 2, 1, 1},
    {2, 2, 3, 2, 5, 5, 1, 1, 2, 2, 1, 1, 0}, /* kernel > input */
    {1, 2, 1, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1},
};

static void test_maxpool(const MaxCfg *cf, int with_nan)
{
    char name[160];
    snprintf(name, sizeof name,
             "[N%lld C%lld %lldx%lld k%lldx%lld s%lld,%lld p%lld,%lld "
             "d%lld,%lld ceil%d%s]",
             (long long)cf->N, (long long)cf->C, (long long)cf->H,
             (long long)cf->W, (long long)cf->kh, (long long)cf->kw,
             (long long)cf->sh, (long long)cf->sw, (long long)cf->ph,
             (long long)cf->pw, (long long)cf->dh, (long long)cf->dw,
             cf->ceil_mode, with_nan ? " NaN" : "");
    const int64_t N = cf->N, C = cf->C, H = cf->H, W = cf->W;
    const int64_t kh = cf->kh, kw = cf->kw, sh = cf->sh, sw = cf->sw;
    const int64_t ph = cf->ph, pw = cf->pw, dh = cf->dh, dw = cf->dw;
    const int64_t OH = pool_out(H, kh, sh, ph, dh, cf->ceil_mode);
    const int64_t OW = pool_out(W, kw, sw, pw, dw, cf->ceil_mode);
    const int64_t nx = N * C * H * W, ny = N * C * OH * OW;

    float *x = rand_buf(nx);
    if (with_nan) /* a few NaNs, two of them sometimes in one window */
        for (int64_t i = 0; i < nx; i += 7) x[i] = NAN;
    float *dy = rand_buf(ny), *dx0 = rand_buf(nx);
    double *y_ref = alloc_d(ny), *dx_ref = alloc_d(nx);
    int32_t *a_ref = malloc((size_t)ny * sizeof(int32_t));
    for (int64_t i = 0; i < nx; ++i) dx_ref[i] = dx0[i];
    for (int64_t p = 0; p < N * C; ++p)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
                /* PyTorch: -inf start, take '>' or NaN, index of first
                 * in-image element when nothing beats -inf */
                double best = -INFINITY;
                int32_t arg = -1;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t ih = oh * sh - ph + i * dh;
                        const int64_t iw = ow * sw - pw + j * dw;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        const double v = x[p * H * W + ih * W + iw];
                        if (arg < 0) arg = (int32_t)(ih * W + iw);
                        if (v > best || isnan(v)) {
                            best = v;
                            arg = (int32_t)(ih * W + iw);
                        }
                    }
                const int64_t o = p * OH * OW + oh * OW + ow;
                y_ref[o] = best;
                a_ref[o] = arg;
                if (arg >= 0) dx_ref[p * H * W + arg] += dy[o];
            }

    float *y1 = alloc_f(ny), *y2 = alloc_f(ny), *y3 = alloc_f(ny);
    int32_t *a1 = malloc((size_t)ny * sizeof(int32_t));
    int32_t *a2 = malloc((size_t)ny * sizeof(int32_t));
    float *dx1 = copy_buf(dx0, nx), *dx2 = copy_buf(dx0, nx);
    for (int t = 1; t <= 2; ++t) {
        set_threads(t);
        an_maxpool2d_forward_f32(x, N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw,
                                 OH, OW, t == 1 ? y1 : y2, t == 1 ? a1 : a2);
        an_maxpool2d_backward_f32(dy, t == 1 ? a1 : a2, N, C, H, W, OH, OW,
                                  t == 1 ? dx1 : dx2);
    }
    an_maxpool2d_forward_f32(x, N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH,
                             OW, y3, NULL);
    check_close("maxpool forward", name, y1, y_ref, ny, 0.0);
    check_true("maxpool argmax", name,
               memcmp(a1, a_ref, (size_t)ny * sizeof(int32_t)) == 0);
    check_bits("maxpool forward (no argmax)", name, y1, y3,
               (size_t)ny * sizeof(float));
    check_close("maxpool backward", name, dx1, dx_ref, nx, 1e-6);
    check_bits("maxpool forward threads", name, y1, y2,
               (size_t)ny * sizeof(float));
    check_bits("maxpool argmax threads", name, a1, a2,
               (size_t)ny * sizeof(int32_t));
    check_bits("maxpool backward threads", name, dx1, dx2,
               (size_t)nx * sizeof(float));
    if (with_nan) {
        int any_nan = 0;
        for (int64_t i = 0; i < ny; ++i) any_nan |= isnan(y1[i]) != 0;
        check_true("maxpool NaN propagates", name, any_nan);
    }
    free(x); free(dy); free(dx0); free(y_ref); free(dx_ref); free(a_ref);
    free(y1); free(y2); free(y3); free(a1); free(a2); free(dx1); free(dx2);
}

/* ------------------------------------------------------------ avg pooling */

typedef struct {
    int64_t N, C, H, W, kh, kw, sh, sw, ph, pw;
    int ceil_mode, count_include_pad;
    int64_t divisor_override;
} AvgCfg;

static const AvgCfg avg_cfgs[] = {
    /* N C  H   W kh kw sh sw ph pw ceil cip div */
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 0, 0, 0},
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 0, 1, 0},
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 1, 0, 0},
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, 0},
    {3, 4, 7, 5, 2, 2, 2, 2, 0, 0, 1, 1, 0}, /* ceil overhang, no pad */
    {3, 4, 7, 5, 2, 2, 2, 2, 0, 0, 1, 0, 0},
    {1, 5, 8, 8, 3, 3, 1, 1, 1, 1, 0, 1, 0},
    {1, 5, 8, 8, 3, 3, 1, 1, 1, 1, 0, 0, 0},
    {2, 2, 8, 8, 3, 3, 2, 2, 1, 1, 1, 0, 0},
    {1, 2, 11, 11, 5, 5, 3, 3, 2, 2, 1, 1, 0},
    {1, 2, 11, 11, 5, 5, 3, 3, 2, 2, 1, 0, 0},
    {1, 2, 11, 10, 5, 3, 3, 2, 2, 1, 0, 1, 0},
    {2, 2, 3, 2, 5, 5, 1, 1, 2, 2, 0, 1, 0}, /* kernel > input */
    {2, 2, 3, 2, 5, 5, 1, 1, 2, 2, 0, 0, 0},
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, 3}, /* divisor_override */
    {4, 8, 7, 7, 7, 7, 1, 1, 0, 0, 0, 1, 0}, /* ResNet final pool */
};

static void test_avgpool(const AvgCfg *cf)
{
    char name[160];
    snprintf(name, sizeof name,
             "[N%lld C%lld %lldx%lld k%lldx%lld s%lld,%lld p%lld,%lld ceil%d "
             "cip%d div%lld]",
             (long long)cf->N, (long long)cf->C, (long long)cf->H,
             (long long)cf->W, (long long)cf->kh, (long long)cf->kw,
             (long long)cf->sh, (long long)cf->sw, (long long)cf->ph,
             (long long)cf->pw, cf->ceil_mode, cf->count_include_pad,
             (long long)cf->divisor_override);
    const int64_t N = cf->N, C = cf->C, H = cf->H, W = cf->W;
    const int64_t kh = cf->kh, kw = cf->kw, sh = cf->sh, sw = cf->sw;
    const int64_t ph = cf->ph, pw = cf->pw;
    const int64_t OH = pool_out(H, kh, sh, ph, 1, cf->ceil_mode);
    const int64_t OW = pool_out(W, kw, sw, pw, 1, cf->ceil_mode);
    const int64_t nx = N * C * H * W, ny = N * C * OH * OW;

    float *x = rand_buf(nx), *dy = rand_buf(ny), *dx0 = rand_buf(nx);
    double *y_ref = alloc_d(ny), *dx_ref = alloc_d(nx);
    for (int64_t i = 0; i < nx; ++i) dx_ref[i] = dx0[i];
    for (int64_t p = 0; p < N * C; ++p)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
                /* count taps inside the padded input (the ceil_mode overhang
                 * beyond H+ph is not counted) and inside the real input */
                int64_t n_pad = 0, n_real = 0;
                double s = 0.0;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t ih = oh * sh - ph + i;
                        const int64_t iw = ow * sw - pw + j;
                        if (ih < H + ph && iw < W + pw) ++n_pad;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        ++n_real;
                        s += x[p * H * W + ih * W + iw];
                    }
                const int64_t o = p * OH * OW + oh * OW + ow;
                if (n_real == 0) {
                    y_ref[o] = 0.0;
                    continue;
                }
                const double div = cf->divisor_override > 0
                                       ? (double)cf->divisor_override
                                   : cf->count_include_pad ? (double)n_pad
                                                           : (double)n_real;
                y_ref[o] = s / div;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t ih = oh * sh - ph + i;
                        const int64_t iw = ow * sw - pw + j;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        dx_ref[p * H * W + ih * W + iw] += dy[o] / div;
                    }
            }

    float *y1 = alloc_f(ny), *y2 = alloc_f(ny);
    float *dx1 = copy_buf(dx0, nx), *dx2 = copy_buf(dx0, nx);
    for (int t = 1; t <= 2; ++t) {
        set_threads(t);
        an_avgpool2d_forward_f32(x, N, C, H, W, kh, kw, sh, sw, ph, pw,
                                 cf->count_include_pad, cf->divisor_override,
                                 OH, OW, t == 1 ? y1 : y2);
        an_avgpool2d_backward_f32(dy, N, C, H, W, kh, kw, sh, sw, ph, pw,
                                  cf->count_include_pad, cf->divisor_override,
                                  OH, OW, t == 1 ? dx1 : dx2);
    }
    check_close("avgpool forward", name, y1, y_ref, ny, 1e-6);
    check_close("avgpool backward", name, dx1, dx_ref, nx, 1e-6);
    check_bits("avgpool forward threads", name, y1, y2,
               (size_t)ny * sizeof(float));
    check_bits("avgpool backward threads", name, dx1, dx2,
               (size_t)nx * sizeof(float));
    free(x); free(dy); free(dx0); free(y_ref); free(dx_ref);
    free(y1); free(y2); free(dx1); free(dx2);
}

/* ---------------------------------------------------- adaptive avg pooling */

static void test_adaptive(int64_t N, int64_t C, int64_t H, int64_t W,
                          int64_t OH, int64_t OW)
{
    char name[96];
    snprintf(name, sizeof name, "[N%lld C%lld %lldx%lld -> %lldx%lld]",
             (long long)N, (long long)C, (long long)H, (long long)W,
             (long long)OH, (long long)OW);
    const int64_t nx = N * C * H * W, ny = N * C * OH * OW;
    float *x = rand_buf(nx), *dy = rand_buf(ny), *dx0 = rand_buf(nx);
    double *y_ref = alloc_d(ny), *dx_ref = alloc_d(nx);
    for (int64_t i = 0; i < nx; ++i) dx_ref[i] = dx0[i];
    for (int64_t p = 0; p < N * C; ++p)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
                const int64_t h0 = (int64_t)floor((double)(oh * H) / (double)OH);
                const int64_t h1 = (int64_t)ceil((double)((oh + 1) * H) / (double)OH);
                const int64_t w0 = (int64_t)floor((double)(ow * W) / (double)OW);
                const int64_t w1 = (int64_t)ceil((double)((ow + 1) * W) / (double)OW);
                const double cnt = (double)((h1 - h0) * (w1 - w0));
                double s = 0.0;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw)
                        s += x[p * H * W + ih * W + iw];
                const int64_t o = p * OH * OW + oh * OW + ow;
                y_ref[o] = s / cnt;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw)
                        dx_ref[p * H * W + ih * W + iw] += dy[o] / cnt;
            }
    float *y1 = alloc_f(ny), *y2 = alloc_f(ny);
    float *dx1 = copy_buf(dx0, nx), *dx2 = copy_buf(dx0, nx);
    for (int t = 1; t <= 2; ++t) {
        set_threads(t);
        an_adaptive_avgpool2d_forward_f32(x, N, C, H, W, OH, OW,
                                          t == 1 ? y1 : y2);
        an_adaptive_avgpool2d_backward_f32(dy, N, C, H, W, OH, OW,
                                           t == 1 ? dx1 : dx2);
    }
    check_close("adaptive avgpool forward", name, y1, y_ref, ny, 1e-6);
    check_close("adaptive avgpool backward", name, dx1, dx_ref, nx, 1e-6);
    check_bits("adaptive fwd threads", name, y1, y2,
               (size_t)ny * sizeof(float));
    check_bits("adaptive bwd threads", name, dx1, dx2,
               (size_t)nx * sizeof(float));
    if (OH == 1 && OW == 1) {
        /* the explicit global entry points must agree exactly */
        float *g = alloc_f(ny), *gdx = copy_buf(dx0, nx);
        an_global_avgpool2d_forward_f32(x, N, C, H, W, g);
        an_global_avgpool2d_backward_f32(dy, N, C, H, W, gdx);
        check_bits("global avgpool forward", name, g, y1,
                   (size_t)ny * sizeof(float));
        check_bits("global avgpool backward", name, gdx, dx1,
                   (size_t)nx * sizeof(float));
        free(g); free(gdx);
    }
    free(x); free(dy); free(dx0); free(y_ref); free(dx_ref);
    free(y1); free(y2); free(dx1); free(dx2);
}

/* ------------------------------------------------------------ batch norm */

static void test_batchnorm(int64_t N, int64_t C, int64_t HW, int affine,
                           float offset)
{
    char name[96];
    snprintf(name, sizeof name, "[N%lld C%lld HW%lld affine%d offset%g]",
             (long long)N, (long long)C, (long long)HW, affine,
             (double)offset);
    const int64_t n = N * C * HW, M = N * HW;
    const float eps = 1e-5f;
    /* dx0, dg0, db0: what the outputs hold before a call (the kernels
       overwrite them) */
    float *x = rand_buf(n), *dy = rand_buf(n), *dx0 = rand_buf(n);
    for (int64_t c = 0; c < C; ++c) /* per-channel shift and scale */
        for (int64_t b = 0; b < N; ++b)
            for (int64_t i = 0; i < HW; ++i) {
                float *v = &x[(b * C + c) * HW + i];
                *v = offset + (float)(c % 3 + 1) * *v + 0.1f * (float)c;
            }
    float *gamma = rand_buf(C), *beta = rand_buf(C);
    float *rmean = rand_buf(C), *rvar = alloc_f(C);
    for (int64_t c = 0; c < C; ++c) rvar[c] = 0.5f + (float)rand_unit();
    float *dg0 = rand_buf(C), *db0 = rand_buf(C);
    const float *g = affine ? gamma : NULL, *bt = affine ? beta : NULL;

    /* double references */
    double *mean = alloc_d(C), *var = alloc_d(C), *inv = alloc_d(C);
    double *y_ref = alloc_d(n), *ye_ref = alloc_d(n);
    double *dx_ref = alloc_d(n), *dxe_ref = alloc_d(n);
    double *dg_ref = alloc_d(C), *db_ref = alloc_d(C);
    double *dge_ref = alloc_d(C), *dbe_ref = alloc_d(C);
    for (int64_t c = 0; c < C; ++c) {
        double s = 0.0, ss = 0.0;
        for (int64_t b = 0; b < N; ++b)
            for (int64_t i = 0; i < HW; ++i) s += x[(b * C + c) * HW + i];
        mean[c] = s / (double)M;
        for (int64_t b = 0; b < N; ++b)
            for (int64_t i = 0; i < HW; ++i) {
                const double d = x[(b * C + c) * HW + i] - mean[c];
                ss += d * d;
            }
        var[c] = ss / (double)M;
        inv[c] = 1.0 / sqrt(var[c] + eps);
        const double gm = affine ? gamma[c] : 1.0, bb = affine ? beta[c] : 0.0;
        const double inv_r = 1.0 / sqrt((double)rvar[c] + eps);
        double sdy = 0.0, sdyx = 0.0, sdyxe = 0.0;
        for (int64_t b = 0; b < N; ++b)
            for (int64_t i = 0; i < HW; ++i) {
                const int64_t k = (b * C + c) * HW + i;
                const double xh = (x[k] - mean[c]) * inv[c];
                y_ref[k] = xh * gm + bb;
                ye_ref[k] = (x[k] - rmean[c]) * inv_r * gm + bb;
                sdy += dy[k];
                sdyx += dy[k] * xh;
                sdyxe += dy[k] * (x[k] - rmean[c]) * inv_r;
            }
        for (int64_t b = 0; b < N; ++b)
            for (int64_t i = 0; i < HW; ++i) {
                const int64_t k = (b * C + c) * HW + i;
                const double xh = (x[k] - mean[c]) * inv[c];
                dx_ref[k] = gm * inv[c] / (double)M *
                            ((double)M * dy[k] - sdy - xh * sdyx);
                dxe_ref[k] = dy[k] * gm * inv_r;
            }
        dg_ref[c] = sdyx;
        db_ref[c] = sdy;
        dge_ref[c] = sdyxe;
        dbe_ref[c] = sdy;
    }

    float *m1 = alloc_f(C), *v1 = alloc_f(C), *m2 = alloc_f(C), *v2 = alloc_f(C);
    float *i1 = alloc_f(C), *i2 = alloc_f(C);
    double *moments = malloc(sizeof(double) * 2 * (size_t)(N * C));
    float *y1 = alloc_f(n), *y2 = alloc_f(n), *ye1 = alloc_f(n),
          *ye2 = alloc_f(n);
    float *dx1 = copy_buf(dx0, n), *dx2 = copy_buf(dx0, n);
    float *dxe1 = copy_buf(dx0, n), *dxe2 = copy_buf(dx0, n);
    float *dg1 = copy_buf(dg0, C), *dg2 = copy_buf(dg0, C);
    float *db1 = copy_buf(db0, C), *db2 = copy_buf(db0, C);
    float *dge1 = copy_buf(dg0, C), *dge2 = copy_buf(dg0, C);
    float *dbe1 = copy_buf(db0, C), *dbe2 = copy_buf(db0, C);
    for (int t = 1; t <= 2; ++t) {
        const int one = t == 1;
        set_threads(t);
        an_batchnorm_stats_f32(x, N, C, HW, moments, one ? m1 : m2, one ? v1 : v2);
        an_batchnorm_forward_train_f32(x, one ? m1 : m2, one ? v1 : v2, g, bt,
                                       eps, AN_BN_IDENTITY, N, C, HW,
                                       one ? y1 : y2, one ? i1 : i2);
        an_batchnorm_forward_eval_f32(x, rmean, rvar, g, bt, eps,
                                      AN_BN_IDENTITY, N, C, HW,
                                      one ? ye1 : ye2);
        an_batchnorm_backward_train_f32(dy, AN_BN_IDENTITY, x,
                                        one ? m1 : m2, one ? i1 : i2, g, NULL, N, C,
                                        HW, one ? dx1 : dx2, one ? dg1 : dg2,
                                        one ? db1 : db2, bn_workspace(N, C));
        an_batchnorm_backward_eval_f32(dy, NULL, AN_BN_IDENTITY, x, rmean,
                                       rvar, g, eps, N, C, HW,
                                       one ? dxe1 : dxe2, one ? dge1 : dge2,
                                       one ? dbe1 : dbe2);
    }
    check_close("bn mean", name, m1, mean, C, 1e-6);
    check_close("bn var", name, v1, var, C, 1e-6);
    check_close("bn invstd", name, i1, inv, C, 1e-6);
    check_close("bn forward_train", name, y1, y_ref, n, 2e-5);
    check_close("bn forward_eval", name, ye1, ye_ref, n, 1e-5);
    check_close("bn backward_train dx", name, dx1, dx_ref, n, 1e-4);
    check_close("bn backward_train dgamma", name, dg1, dg_ref, C, 1e-5);
    check_close("bn backward_train dbeta", name, db1, db_ref, C, 1e-5);
    check_close("bn backward_eval dx", name, dxe1, dxe_ref, n, 1e-5);
    check_close("bn backward_eval dgamma", name, dge1, dge_ref, C, 1e-5);
    check_close("bn backward_eval dbeta", name, dbe1, dbe_ref, C, 1e-5);
    check_bits("bn stats threads", name, m1, m2, (size_t)C * sizeof(float));
    check_bits("bn var threads", name, v1, v2, (size_t)C * sizeof(float));
    check_bits("bn forward threads", name, y1, y2, (size_t)n * sizeof(float));
    check_bits("bn eval threads", name, ye1, ye2, (size_t)n * sizeof(float));
    check_bits("bn bwd dx threads", name, dx1, dx2, (size_t)n * sizeof(float));
    check_bits("bn bwd dgamma threads", name, dg1, dg2,
               (size_t)C * sizeof(float));
    check_bits("bn bwd dbeta threads", name, db1, db2,
               (size_t)C * sizeof(float));
    check_bits("bn bwd_eval threads", name, dxe1, dxe2,
               (size_t)n * sizeof(float));
    check_bits("bn bwd_eval dgamma threads", name, dge1, dge2,
               (size_t)C * sizeof(float));

    /* nullable outputs: each gradient alone must match the full call */
    float *dxa = copy_buf(dx0, n), *dga = copy_buf(dg0, C),
          *dba = copy_buf(db0, C);
    an_batchnorm_backward_train_f32(dy, AN_BN_IDENTITY, x, m1, i1, g, NULL, N,
                                    C, HW, dxa, NULL, NULL, bn_workspace(N, C));
    an_batchnorm_backward_train_f32(dy, AN_BN_IDENTITY, x, m1, i1, g, NULL, N,
                                    C, HW, NULL, dga, NULL, bn_workspace(N, C));
    an_batchnorm_backward_train_f32(dy, AN_BN_IDENTITY, x, m1, i1, g, NULL, N,
                                    C, HW, NULL, NULL, dba, bn_workspace(N, C));
    check_bits("bn bwd dx alone", name, dxa, dx1, (size_t)n * sizeof(float));
    check_bits("bn bwd dgamma alone", name, dga, dg1,
               (size_t)C * sizeof(float));
    check_bits("bn bwd dbeta alone", name, dba, db1,
               (size_t)C * sizeof(float));
    float *dbb = copy_buf(db0, C), *dxb = copy_buf(dx0, n);
    an_batchnorm_backward_eval_f32(dy, NULL, AN_BN_IDENTITY, NULL, NULL, rvar,
                                   g, eps, N, C, HW, dxb, NULL, dbb);
    check_bits("bn bwd_eval dbeta w/o dgamma", name, dbb, dbe1,
               (size_t)C * sizeof(float));
    check_bits("bn bwd_eval dx w/o dgamma", name, dxb, dxe1,
               (size_t)n * sizeof(float));
    an_batchnorm_forward_train_f32(x, m1, v1, g, bt, eps, AN_BN_IDENTITY, N, C,
                                   HW, y2, NULL);
    check_bits("bn forward (no invstd)", name, y1, y2,
               (size_t)n * sizeof(float));

    free(x); free(dy); free(dx0); free(gamma); free(beta); free(rmean);
    free(rvar); free(dg0); free(db0); free(mean); free(var); free(inv);
    free(y_ref); free(ye_ref); free(dx_ref); free(dxe_ref); free(dg_ref);
    free(db_ref); free(dge_ref); free(dbe_ref); free(m1); free(v1); free(m2);
    free(v2); free(moments); free(i1); free(i2); free(y1); free(y2); free(ye1); free(ye2);
    free(dx1); free(dx2); free(dxe1); free(dxe2); free(dg1); free(dg2);
    free(db1); free(db2); free(dge1); free(dge2); free(dbe1); free(dbe2);
    free(dxa); free(dga); free(dba); free(dbb); free(dxb);
}

/* The fused activations, written out as the standalone relu / relu6 ops
 * compute them. */
static float act_ref(an_bn_activation act, float v)
{
    if (act == AN_BN_RELU) return v <= 0.0f ? 0.0f : v;
    return v <= 0.0f ? 0.0f : (v >= 6.0f ? 6.0f : v);
}

/* The standalone ops' backward masks, from the saved output y. */
static float mask_ref(an_bn_activation act, float y, float g)
{
    if (act == AN_BN_RELU) return y <= 0.0f ? 0.0f : g;
    return (y > 0.0f && y < 6.0f) ? g : 0.0f;
}

/* Fused batch norm + activation against the unfused composition, bit for
 * bit: forward = act(plain forward); backward = plain backward of dy masked
 * by hand. For 1 and 2 threads. HW > 256 and not a multiple of 8 crosses the
 * masked sums' chunks and leaves a tail. */
static void test_batchnorm_act(int64_t N, int64_t C, int64_t HW, int affine)
{
    char name[96];
    snprintf(name, sizeof name, "[N%lld C%lld HW%lld affine%d]", (long long)N,
             (long long)C, (long long)HW, affine);
    const int64_t n = N * C * HW;
    const float eps = 1e-5f;
    float *x = rand_buf(n), *dy = rand_buf(n);
    float *gamma = rand_buf(C), *beta = rand_buf(C), *rmean = rand_buf(C);
    float *rvar = alloc_f(C);
    for (int64_t c = 0; c < C; ++c) {
        gamma[c] *= 8.0f; /* normalised values beyond 6 for relu6 */
        beta[c] *= 2.0f;
        rvar[c] = 0.05f + (float)rand_unit();
    }
    dy[0] = 0.0f;
    dy[n - 1] = -0.0f;
    x[(C - 1) * HW] = NAN; /* a NaN channel: NaN must pass the activation */
    const float *g = affine ? gamma : NULL, *bt = affine ? beta : NULL;
    float *mean = alloc_f(C), *var = alloc_f(C), *inv = alloc_f(C);
    float *y = alloc_f(n), *ye = alloc_f(n);
    double *moments = malloc(sizeof(double) * 2 * (size_t)(N * C));
    an_batchnorm_stats_f32(x, N, C, HW, moments, mean, var);
    free(moments);
    an_batchnorm_forward_train_f32(x, mean, var, g, bt, eps, AN_BN_IDENTITY, N,
                                   C, HW, y, inv);
    an_batchnorm_forward_eval_f32(x, rmean, rvar, g, bt, eps, AN_BN_IDENTITY,
                                  N, C, HW, ye);
    /* [0]: fused, [1]: unfused; then [thread count - 1] */
    float *yf[2], *yef[2], *dx[2][2], *dxe[2][2], *dg[2][2], *db[2][2];
    float *dge[2][2], *dbe[2][2], *dbe_only[2][2];
    float *gm = alloc_f(n), *gme = alloc_f(n), *want = alloc_f(n);
    for (int a = AN_BN_RELU; a <= AN_BN_RELU6; ++a) {
        const an_bn_activation act = (an_bn_activation)a;
        for (int t = 0; t < 2; ++t) {
            set_threads(t + 1);
            yf[t] = alloc_f(n);
            yef[t] = alloc_f(n);
            for (int u = 0; u < 2; ++u) { /* garbage: the kernels overwrite */
                dx[u][t] = rand_buf(n);
                dxe[u][t] = rand_buf(n);
                dg[u][t] = rand_buf(C);
                db[u][t] = rand_buf(C);
                dge[u][t] = rand_buf(C);
                dbe[u][t] = rand_buf(C);
                dbe_only[u][t] = rand_buf(C);
            }
            an_batchnorm_forward_train_f32(x, mean, var, g, bt, eps, act, N, C,
                                           HW, yf[t], NULL);
            an_batchnorm_forward_eval_f32(x, rmean, rvar, g, bt, eps, act, N,
                                          C, HW, yef[t]);
            for (int64_t k = 0; k < n; ++k) {
                gm[k] = mask_ref(act, yf[t][k], dy[k]);
                gme[k] = mask_ref(act, yef[t][k], dy[k]);
            }
            /* the fused backward recomputes the mask from x, g and bt; the
               reference masks with the forward's output */
            an_batchnorm_backward_train_f32(dy, act, x, mean, inv, g, bt,
                                            N, C, HW, dx[0][t], dg[0][t],
                                            db[0][t], bn_workspace(N, C));
            an_batchnorm_backward_train_f32(gm, AN_BN_IDENTITY, x, mean,
                                            inv, g, NULL, N, C, HW, dx[1][t],
                                            dg[1][t], db[1][t], bn_workspace(N, C));
            an_batchnorm_backward_eval_f32(dy, yef[t], act, x, rmean, rvar, g,
                                           eps, N, C, HW, dxe[0][t], dge[0][t],
                                           dbe[0][t]);
            an_batchnorm_backward_eval_f32(gme, NULL, AN_BN_IDENTITY, x, rmean,
                                           rvar, g, eps, N, C, HW, dxe[1][t],
                                           dge[1][t], dbe[1][t]);
            /* dbeta alone takes the sum-only path */
            an_batchnorm_backward_eval_f32(dy, yef[t], act, NULL, NULL, rvar, g,
                                           eps, N, C, HW, NULL, NULL,
                                           dbe_only[0][t]);
            an_batchnorm_backward_eval_f32(gme, NULL, AN_BN_IDENTITY, NULL,
                                           NULL, rvar, g, eps, N, C, HW, NULL,
                                           NULL, dbe_only[1][t]);
        }
        const size_t nb = (size_t)n * sizeof(float), cb = (size_t)C * sizeof(float);
        for (int64_t k = 0; k < n; ++k) want[k] = act_ref(act, y[k]);
        check_bits("bn+act forward_train", name, yf[0], want, nb);
        for (int64_t k = 0; k < n; ++k) want[k] = act_ref(act, ye[k]);
        check_bits("bn+act forward_eval", name, yef[0], want, nb);
        check_true("bn+act NaN passes", name, isnan(yf[0][(C - 1) * HW]));
        check_bits("bn+act bwd dx", name, dx[0][0], dx[1][0], nb);
        check_bits("bn+act bwd dgamma", name, dg[0][0], dg[1][0], cb);
        check_bits("bn+act bwd dbeta", name, db[0][0], db[1][0], cb);
        check_bits("bn+act bwd_eval dx", name, dxe[0][0], dxe[1][0], nb);
        check_bits("bn+act bwd_eval dgamma", name, dge[0][0], dge[1][0], cb);
        check_bits("bn+act bwd_eval dbeta", name, dbe[0][0], dbe[1][0], cb);
        check_bits("bn+act bwd_eval dbeta only", name, dbe_only[0][0],
                   dbe_only[1][0], cb);
        check_bits("bn+act fwd threads", name, yf[0], yf[1], nb);
        check_bits("bn+act fwd_eval threads", name, yef[0], yef[1], nb);
        check_bits("bn+act bwd dx threads", name, dx[0][0], dx[0][1], nb);
        check_bits("bn+act bwd dgamma threads", name, dg[0][0], dg[0][1], cb);
        check_bits("bn+act bwd_eval dx threads", name, dxe[0][0], dxe[0][1],
                   nb);
        for (int t = 0; t < 2; ++t) {
            free(yf[t]);
            free(yef[t]);
            for (int u = 0; u < 2; ++u) {
                free(dx[u][t]); free(dxe[u][t]); free(dg[u][t]);
                free(db[u][t]); free(dge[u][t]); free(dbe[u][t]);
                free(dbe_only[u][t]);
            }
        }
    }
    set_threads(2);
    free(x); free(dy); free(gamma); free(beta); free(rmean); free(rvar);
    free(mean); free(var); free(inv); free(y); free(ye); free(gm); free(gme);
    free(want);
}

/* ------------------------------------------------------------------- main */

int main(void)
{
    const size_t n_conv = sizeof conv_cfgs / sizeof conv_cfgs[0];
    for (size_t i = 0; i < n_conv; ++i) {
        test_depthwise(&conv_cfgs[i], (int)(i % 2 == 0));
        test_im2col(&conv_cfgs[i]);
    }
    /* with and without bias on a fast-path shape */
    test_depthwise(&conv_cfgs[1], 1);
    test_depthwise(&conv_cfgs[2], 0);

    for (size_t i = 0; i < sizeof max_cfgs / sizeof max_cfgs[0]; ++i) {
        test_maxpool(&max_cfgs[i], 0);
        test_maxpool(&max_cfgs[i], 1);
    }
    for (size_t i = 0; i < sizeof avg_cfgs / sizeof avg_cfgs[0]; ++i)
        test_avgpool(&avg_cfgs[i]);

    test_adaptive(2, 3, 7, 7, 3, 3);
    test_adaptive(2, 3, 5, 5, 2, 2);
    test_adaptive(1, 4, 7, 5, 3, 2);
    test_adaptive(3, 2, 10, 10, 4, 3);
    test_adaptive(1, 2, 3, 3, 5, 5); /* output larger than input */
    test_adaptive(3, 16, 8, 8, 1, 1); /* global */
    test_adaptive(2, 5, 7, 5, 1, 1);
    test_adaptive(2, 4, 6, 6, 6, 6); /* identity */

    test_batchnorm(3, 16, 64, 1, 0.0f);
    test_batchnorm(1, 32, 49, 0, 0.0f);
    test_batchnorm(4, 8, 1, 1, 0.0f); /* BatchNorm1d */
    test_batchnorm(2, 5, 35, 1, 100.0f); /* large mean: accuracy */
    test_batchnorm(8, 3, 1, 0, -50.0f);
    test_batchnorm_act(4, 32, 300, 1); /* > parallel grain, chunks + tail */
    test_batchnorm_act(3, 5, 49, 0);
    test_batchnorm_act(16, 6, 1, 1); /* BatchNorm1d */

    /* depthwise 3x3 stride 1 on planes 4 or 8 wide: the flattened path
     * (last, so the random inputs of the cases above stay as they were) */
    static const ConvCfg flat_cfgs[] = {
        {1, 58, 8, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1},  /* 2 threads: the second starts on an odd group */
        {1, 232, 4, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1}, /* four planes a group */
        {2, 7, 8, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1},   /* two planes a group, one past the last */
    };
    for (size_t i = 0; i < sizeof flat_cfgs / sizeof flat_cfgs[0]; ++i)
        test_depthwise(&flat_cfgs[i], (int)(i % 2 == 0));

    printf("test_conv_kernels: %d checks, %d failures\n", g_checks,
           g_failures);
    return g_failures ? 1 : 0;
}
