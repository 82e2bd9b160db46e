/*
 * test_core.c — the core used as a plain C library (no Python): tensors,
 * views, errors, autograd through the arithmetic ops, and a small
 * end-to-end training loop when the nn ops are present.
 *
 * Built and run by tests/test_c_library.py (also under ASan/UBSan from
 * .ci/run):  gcc -std=c11 -O1 -fopenmp -Icsrc tests/c/test_core.c
 *            $(find csrc -name '*.c' -not -path 'csrc/python/*') -lm
 */
#include "appealnet.h"
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int close_to(float a, double b, double tol) { return fabs((double)a - b) <= tol * (1 + fabs(b)); }

static void test_create_and_views(void)
{
    int64_t shape[2] = {2, 3};
    float data[6] = {1, 2, 3, 4, 5, 6};
    an_tensor *t = an_from_data(2, data, shape);
    CHECK(t && an_numel(t) == 6 && an_is_contiguous(t));
    an_tensor *d = an_detach(t);
    CHECK(d && d->storage == t->storage && d->grad_fn == NULL);
    an_fill_(d, 7.0f);
    CHECK(an_data_ptr(t)[5] == 7.0f); /* shared storage */
    an_release(d);
    an_release(t);

    /* a transposed view through external memory with negative strides */
    float ext[6] = {0, 1, 2, 3, 4, 5};
    int64_t vshape[2] = {3, 2}, vstrides[2] = {-1, 3};
    an_tensor *v = an_from_external(2, vshape, vstrides, ext + 2, NULL, NULL);
    CHECK(v && !an_is_contiguous(v));
    an_tensor *c = an_contiguous(v);
    /* v[i][j] = ext[2 - i + 3 j] */
    float expect[6] = {2, 5, 1, 4, 0, 3};
    CHECK(c && memcmp(an_data_ptr(c), expect, sizeof expect) == 0);
    an_release(c);
    an_release(v);
}

static void test_errors_are_reported_not_fatal(void)
{
    int64_t s1[2] = {2, 3}, s2[1] = {4};
    an_tensor *a = an_zeros(2, s1), *b = an_zeros(1, s2);
    an_tensor *bad = an_add(a, b);
    CHECK(bad == NULL && an_last_status() == AN_ERR_VALUE);
    CHECK(strstr(an_last_error(), "cannot be broadcast") != NULL);
    an_clear_error();
    CHECK(an_add(a, NULL) == NULL && an_last_status() == AN_ERR_TYPE);
    int64_t neg[1] = {-3};
    CHECK(an_empty(1, neg) == NULL && an_last_status() == AN_ERR_VALUE);
    CHECK(an_backward(a, NULL, 0) == AN_ERR_RUNTIME); /* no grad */
    an_clear_error();
    /* an activation outside the enum (C callers may pass any int) */
    CHECK(an_batch_norm_act(a, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5, (an_activation)7) == NULL &&
          an_last_status() == AN_ERR_VALUE);
    CHECK(strstr(an_last_error(), "unknown activation 7") != NULL);
    an_clear_error();
    an_release(a);
    an_release(b);
}

static void test_autograd_arithmetic(void)
{
    /* f = sum((a * b + a / b) - b) with a [2,3], b [3] broadcast */
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    float da[6] = {0, 1, 2, 3, 4, 5}, db[3] = {1, 2, 3};
    an_tensor *a = an_from_data(2, da, sa), *b = an_from_data(1, db, sb);
    an_set_requires_grad(a, 1);
    an_set_requires_grad(b, 1);
    an_tensor *ab = an_mul(a, b), *q = an_div(a, b);
    an_tensor *s = an_add(ab, q), *f = an_sub(s, b);
    int64_t ones_shape[2] = {2, 3};
    an_tensor *g = an_full(2, ones_shape, 1.0f);
    CHECK(an_backward(f, g, 0) == AN_OK);
    for (int i = 0; i < 6; i++)
        CHECK(close_to(an_data_ptr(a->grad)[i], db[i % 3] + 1.0 / db[i % 3], 1e-6));
    for (int j = 0; j < 3; j++) {
        double expect = 0;
        for (int i = 0; i < 2; i++)
            expect += da[i * 3 + j] - da[i * 3 + j] / (db[j] * db[j]) - 1;
        CHECK(close_to(an_data_ptr(b->grad)[j], expect, 1e-6));
    }
    /* the graph is freed: a second pass must error, not crash */
    CHECK(an_backward(f, g, 0) == AN_ERR_RUNTIME);
    an_clear_error();
    an_tensor *all[] = {a, b, ab, q, s, f, g};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        an_release(all[i]);
}

static void test_no_grad_mode(void)
{
    int64_t shape[1] = {4};
    an_tensor *x = an_full(1, shape, 2.0f);
    an_set_requires_grad(x, 1);
    an_set_grad_enabled(0);
    an_tensor *y = an_mul(x, x);
    CHECK(y && y->grad_fn == NULL && !y->requires_grad);
    an_set_grad_enabled(1);
    an_release(y);
    an_release(x);
}

static void test_many_steps_release_everything(void)
{
    /* Under ASan/LeakSanitizer any leaked node or tensor is reported. */
    int64_t shape[2] = {8, 8};
    an_tensor *w = an_full(2, shape, 0.5f);
    an_set_requires_grad(w, 1);
    for (int step = 0; step < 200; step++) {
        an_tensor *y = an_mul(w, w);
        an_tensor *z = an_add(y, w);
        an_tensor *g = an_full(2, shape, 1.0f);
        CHECK(an_backward(z, g, 0) == AN_OK);
        an_release(g);
        an_release(z);
        an_release(y);
    }
    CHECK(close_to(an_data_ptr(w->grad)[0], 200 * (2 * 0.5 + 1), 1e-5));
    an_release(w);
}

/* an_conv2d_fused from C: act(conv + bias + residual) equals an_conv2d
 * followed by an_add_relu, bit for bit, on the 1x1 path that adds the
 * residual in the GEMM (batch 1, 32x32) and on a 3x3 path that adds it in
 * a pass; a residual of the wrong shape is an error, not a crash. */
static void test_conv_with_residual(void)
{
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0};
    const int64_t kernels[2] = {1, 3};
    for (int which = 0; which < 2; which++) {
        const int64_t k = kernels[which];
        const int64_t xs[4] = {1, 24, 32, 32}, ws[4] = {40, 24, k, k}, bs[1] = {40}, ys[4] = {1, 40, 32, 32};
        an_tensor *x = an_empty(4, xs), *w = an_empty(4, ws), *b = an_empty(1, bs), *r = an_empty(4, ys);
        CHECK(x && w && b && r);
        if (!x || !w || !b || !r)
            return;
        unsigned state = 12345u;
        an_tensor *all[4] = {x, w, b, r};
        for (int t = 0; t < 4; t++)
            for (int64_t i = 0; i < an_numel(all[t]); i++) {
                state = state * 1103515245u + 12345u;
                an_data_ptr(all[t])[i] = (float)((state >> 8) & 0xffff) / 32768.0f - 1.0f;
            }
        const int64_t *pad = k == 1 ? zero : one;
        an_tensor *plain = an_conv2d(x, w, b, one, pad, one, 1);
        an_tensor *expect = plain ? an_add_relu(plain, r) : NULL;
        an_tensor *got = an_conv2d_fused(x, w, b, one, pad, one, 1, r, AN_ACTIVATION_RELU);
        CHECK(expect && got && an_numel(got) == an_numel(expect) &&
              memcmp(an_data_ptr(got), an_data_ptr(expect), sizeof(float) * (size_t)an_numel(got)) == 0);
        const int64_t bad_shape[4] = {1, 40, 32, 31};
        an_tensor *bad = an_empty(4, bad_shape);
        CHECK(an_conv2d_fused(x, w, b, one, pad, one, 1, bad, AN_ACTIVATION_NONE) == NULL &&
              an_last_status() == AN_ERR_VALUE &&
              strstr(an_last_error(), "residual must have the output's shape") != NULL);
        an_clear_error();
        an_tensor *rest[] = {x, w, b, r, plain, expect, got, bad};
        for (size_t i = 0; i < sizeof rest / sizeof *rest; i++)
            an_release(rest[i]);
    }
}

static an_tensor *random_tensor(int ndim, const int64_t *shape, unsigned *state)
{
    an_tensor *t = an_empty(ndim, shape);
    if (t)
        for (int64_t i = 0; i < an_numel(t); i++) {
            *state = *state * 1103515245u + 12345u;
            an_data_ptr(t)[i] = (float)((*state >> 8) & 0xffff) / 32768.0f - 1.0f;
        }
    return t;
}

/* an_conv_pw_dw_pw from C: an inverted-residual block in one call equals
 * its three an_conv2d_fused_prepacked calls bit for bit, with packed weights,
 * at batch 1 on 1 and 2 threads (a band of rows each: under the sanitizers
 * this checks the band buffers' edges) and batch 3, stride 1 and 2, on
 * 32x32 planes (the row kernel), 16x16 (stride 2: the channels-last
 * kernel on the bands) and 8x8 and 4x4 (batch 1: one parallel region over
 * the narrow GEMMs' row blocks and the depthwise layer's channels); an
 * input that requires grad is an error, not a crash. */
static void test_inverted_residual_block(void)
{
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0};
    static const int64_t sizes[] = {32, 16, 8, 4};
    for (size_t which = 0; which < sizeof sizes / sizeof *sizes; which++)
    for (int64_t stride = 1; stride <= 2; stride++)
        for (int64_t n = 1; n <= 3; n += 2) {
            const int64_t size = sizes[which];
            unsigned state = 777u + (unsigned)(stride * 10 + n + size);
            const int64_t xs[4] = {n, 12, size, size}, w1s[4] = {40, 12, 1, 1}, c1[1] = {40};
            const int64_t wds[4] = {40, 1, 3, 3}, w2s[4] = {16, 40, 1, 1}, c2[1] = {16};
            const int64_t oh = size / stride, rs[4] = {n, 16, oh, oh};
            an_tensor *x = random_tensor(4, xs, &state), *w1 = random_tensor(4, w1s, &state);
            an_tensor *b1 = random_tensor(1, c1, &state), *wd = random_tensor(4, wds, &state);
            an_tensor *bd = random_tensor(1, c1, &state), *w2 = random_tensor(4, w2s, &state);
            an_tensor *b2 = random_tensor(1, c2, &state), *r = random_tensor(4, rs, &state);
            an_tensor *p1 = an_conv2d_pack_weight(w1), *p2 = an_conv2d_pack_weight(w2);
            const int64_t strides[2] = {stride, stride};
            an_tensor *e = an_conv2d_fused_prepacked(x, w1, p1, b1, one, zero, one, 1, NULL,
                                                     AN_ACTIVATION_RELU6);
            an_tensor *d = e ? an_conv2d_fused_prepacked(e, wd, NULL, bd, strides, one, one, 40, NULL,
                                                         AN_ACTIVATION_RELU6)
                             : NULL;
            an_tensor *expect = d ? an_conv2d_fused_prepacked(d, w2, p2, b2, one, zero, one, 1, r,
                                                              AN_ACTIVATION_NONE)
                                  : NULL;
            CHECK(expect != NULL);
            for (int threads = 1; threads <= 2; threads++) {
                an_set_num_threads(threads);
                an_tensor *got = an_conv_pw_dw_pw(x, w1, p1, b1, AN_ACTIVATION_RELU6, wd, bd, stride,
                                                  AN_ACTIVATION_RELU6, w2, p2, b2, r, AN_ACTIVATION_NONE);
                CHECK(got && expect && an_numel(got) == an_numel(expect) &&
                      memcmp(an_data_ptr(got), an_data_ptr(expect),
                             sizeof(float) * (size_t)an_numel(got)) == 0);
                an_release(got);
            }
            an_set_num_threads(1);
            an_tensor *all[] = {x, w1, b1, wd, bd, w2, b2, r, p1, p2, e, d, expect};
            for (size_t i = 0; i < sizeof all / sizeof *all; i++)
                an_release(all[i]);
        }
    const int64_t xs[4] = {1, 4, 16, 16}, wds[4] = {4, 1, 3, 3}, w2s[4] = {4, 4, 1, 1};
    an_tensor *x = an_zeros(4, xs), *wd = an_zeros(4, wds), *w2 = an_zeros(4, w2s);
    an_tensor *tracked = an_zeros(4, xs);
    if (tracked)
        tracked->requires_grad = 1;
    CHECK(an_conv_pw_dw_pw(tracked, NULL, NULL, NULL, AN_ACTIVATION_NONE, wd, NULL, 1,
                           AN_ACTIVATION_NONE, w2, NULL, NULL, NULL, AN_ACTIVATION_NONE) == NULL &&
          an_last_status() == AN_ERR_VALUE && strstr(an_last_error(), "inference only") != NULL);
    an_clear_error();
    an_release(x), an_release(wd), an_release(w2), an_release(tracked);
}

/* an_conv_pw_dw_pw_shortcut: the shortcut 1x1 convolution computed inside
 * the call (per band at batch 1 on 16x16, per row block on 8x8, per image
 * at batch 3) gives the bits of
 * an_conv2d_fused_prepacked's shortcut passed as the residual, on 1 and 2
 * threads; a NULL shortcut weight is an error. */
static void test_inverted_residual_block_shortcut(void)
{
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0};
    for (int64_t size = 16; size >= 8; size -= 8)
    for (int64_t n = 1; n <= 3; n += 2) {
        unsigned state = 991u + (unsigned)(n + size);
        const int64_t xs[4] = {n, 12, size, size}, w1s[4] = {40, 12, 1, 1}, c1[1] = {40};
        const int64_t wds[4] = {40, 1, 3, 3}, w2s[4] = {20, 40, 1, 1}, c2[1] = {20};
        const int64_t wss[4] = {20, 12, 1, 1};
        an_tensor *x = random_tensor(4, xs, &state), *w1 = random_tensor(4, w1s, &state);
        an_tensor *b1 = random_tensor(1, c1, &state), *wd = random_tensor(4, wds, &state);
        an_tensor *bd = random_tensor(1, c1, &state), *w2 = random_tensor(4, w2s, &state);
        an_tensor *b2 = random_tensor(1, c2, &state), *ws = random_tensor(4, wss, &state);
        an_tensor *bs = random_tensor(1, c2, &state);
        an_tensor *ps = an_conv2d_pack_weight(ws);
        an_tensor *r = an_conv2d_fused_prepacked(x, ws, ps, bs, one, zero, one, 1, NULL,
                                                 AN_ACTIVATION_NONE);
        an_tensor *expect = an_conv_pw_dw_pw(x, w1, NULL, b1, AN_ACTIVATION_RELU6, wd, bd, 1,
                                             AN_ACTIVATION_RELU6, w2, NULL, b2, r,
                                             AN_ACTIVATION_RELU);
        CHECK(expect != NULL);
        for (int threads = 1; threads <= 2; threads++) {
            an_set_num_threads(threads);
            an_tensor *got = an_conv_pw_dw_pw_shortcut(x, w1, NULL, b1, AN_ACTIVATION_RELU6, wd, bd,
                                                       1, AN_ACTIVATION_RELU6, w2, NULL, b2, ws, ps,
                                                       bs, AN_ACTIVATION_RELU);
            CHECK(got && expect && an_numel(got) == an_numel(expect) &&
                  memcmp(an_data_ptr(got), an_data_ptr(expect),
                         sizeof(float) * (size_t)an_numel(got)) == 0);
            an_release(got);
        }
        an_set_num_threads(1);
        CHECK(an_conv_pw_dw_pw_shortcut(x, w1, NULL, b1, AN_ACTIVATION_RELU6, wd, bd, 1,
                                        AN_ACTIVATION_RELU6, w2, NULL, b2, NULL, NULL, bs,
                                        AN_ACTIVATION_RELU) == NULL &&
              an_last_status() != AN_OK && strstr(an_last_error(), "shortcut weight") != NULL);
        an_clear_error();
        an_tensor *all[] = {x, w1, b1, wd, bd, w2, b2, ws, bs, ps, r, expect};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            an_release(all[i]);
    }
}

/* Winograd F(4x4, 3x3) from C: forward, data and weight gradients of a 3x3
 * layer with 40 -> 36 channels (partial 16-channel vectors) on an odd 7x9
 * plane, 52 images (1040 2x2 blocks of outputs: enough to take it), against a direct
 * double-precision sum; under the sanitizers this also checks the
 * transforms' reads and writes stay in their buffers. */
/* Tracks the largest |reference - computed| and the largest |reference|. */
static void note_error(double *worst, double *scale, double reference, float computed)
{
    double e = fabs(reference - (double)computed);
    *worst = e > *worst ? e : *worst;
    *scale = fabs(reference) > *scale ? fabs(reference) : *scale;
}

static void test_conv_winograd(void)
{
    enum { N = 52, C = 40, K = 36, H = 7, W = 9 };
    const int64_t one[2] = {1, 1};
    const int64_t xs[4] = {N, C, H, W}, ws[4] = {K, C, 3, 3}, ys[4] = {N, K, H, W};
    an_tensor *x = an_empty(4, xs), *w = an_empty(4, ws), *g = an_empty(4, ys);
    CHECK(x && w && g && an_get_conv_winograd());
    if (!x || !w || !g)
        return;
    unsigned state = 777u;
    an_tensor *all[3] = {x, w, g};
    for (int t = 0; t < 3; t++)
        for (int64_t i = 0; i < an_numel(all[t]); i++) {
            state = state * 1103515245u + 12345u;
            an_data_ptr(all[t])[i] = ((float)((state >> 8) & 0xffff) / 32768.0f - 1.0f) * (t == 1 ? 0.1f : 1.0f);
        }
    CHECK(an_set_requires_grad(x, 1) == AN_OK && an_set_requires_grad(w, 1) == AN_OK);
    an_tensor *y = an_conv2d(x, w, NULL, one, one, one, 1);
    CHECK(y && an_backward(y, g, 0) == AN_OK && x->grad && w->grad);
    if (!y || !x->grad || !w->grad)
        return;
    const float *xv = an_data_ptr(x), *wv = an_data_ptr(w), *gv = an_data_ptr(g);
    /* per quantity (dx, y, dw): the largest error and the largest reference
       value; F(4x4, 3x3) scales values by up to 8 inside its transforms, so
       errors grow with the magnitudes summed, not with the element */
    double worst[3] = {0.0, 0.0, 0.0}, scale[3] = {0.0, 0.0, 0.0};
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int q = 0; q < W; q++) {
                    double dx = 0.0; /* sum over the outputs this input feeds */
                    for (int k = 0; k < K; k++)
                        for (int i = 0; i < 3; i++)
                            for (int j = 0; j < 3; j++) {
                                int oh = h + 1 - i, ow = q + 1 - j;
                                if (oh >= 0 && oh < H && ow >= 0 && ow < W)
                                    dx += (double)gv[((n * K + k) * H + oh) * W + ow] *
                                          wv[((k * C + c) * 3 + i) * 3 + j];
                            }
                    note_error(&worst[0], &scale[0], dx, an_data_ptr(x->grad)[((n * C + c) * H + h) * W + q]);
                }
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int h = 0; h < H; h++)
                for (int q = 0; q < W; q++) {
                    double acc = 0.0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < 3; i++)
                            for (int j = 0; j < 3; j++) {
                                int ih = h + i - 1, iw = q + j - 1;
                                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                    acc += (double)xv[((n * C + c) * H + ih) * W + iw] *
                                           wv[((k * C + c) * 3 + i) * 3 + j];
                            }
                    note_error(&worst[1], &scale[1], acc, an_data_ptr(y)[((n * K + k) * H + h) * W + q]);
                }
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    double acc = 0.0;
                    for (int n = 0; n < N; n++)
                        for (int h = 0; h < H; h++)
                            for (int q = 0; q < W; q++) {
                                int ih = h + i - 1, iw = q + j - 1;
                                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                    acc += (double)gv[((n * K + k) * H + h) * W + q] *
                                           xv[((n * C + c) * H + ih) * W + iw];
                            }
                    note_error(&worst[2], &scale[2], acc, an_data_ptr(w->grad)[((k * C + c) * 3 + i) * 3 + j]);
                }
    for (int q = 0; q < 3; q++) {
        CHECK(worst[q] < 2e-5 * scale[q]);
        if (worst[q] >= 2e-5 * scale[q])
            fprintf(stderr, "winograd: quantity %d: worst error %g, largest value %g\n", q, worst[q],
                    scale[q]);
    }
    an_tensor *rest[] = {x, w, g, y};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++)
        an_release(rest[i]);
}

static int same_bits(const an_tensor *a, const an_tensor *b)
{
    return a && b && an_numel(a) == an_numel(b) &&
           memcmp(an_data_ptr(a), an_data_ptr(b), sizeof(float) * (size_t)an_numel(a)) == 0;
}

/* an_conv2d_batch_norm_act from C, in training: the output, every gradient
 * and the running statistics are the bits of an_conv2d followed by
 * an_batch_norm_act, on a path that computes the moments as it writes the
 * planes (1x1) and one that computes them after (depthwise 5x5); a gamma of
 * the wrong length is the batch norm's error. */
static void test_conv_batch_norm(void)
{
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0}, two[2] = {2, 2};
    for (int which = 0; which < 2; which++) {
        const int64_t C = 12, K = which ? 12 : 20, k = which ? 5 : 1, groups = which ? C : 1;
        const int64_t xs[4] = {3, C, 16, 16}, ws[4] = {K, C / groups, k, k}, cs[1] = {K};
        unsigned state = 777u + (unsigned)which;
        an_tensor *x = random_tensor(4, xs, &state), *w = random_tensor(4, ws, &state);
        an_tensor *gamma = random_tensor(1, cs, &state), *beta = random_tensor(1, cs, &state);
        const int64_t ys[4] = {3, K, 16, 16};
        an_tensor *weights = random_tensor(4, ys, &state);
        an_tensor *leaves[4] = {x, w, gamma, beta};
        for (int i = 0; i < 4; i++) an_set_requires_grad(leaves[i], 1);
        an_tensor *rm[2], *rv[2], *out[2], *grads[2][4];
        for (int fused = 0; fused < 2; fused++) {
            rm[fused] = an_zeros(1, cs);
            rv[fused] = an_full(1, cs, 1.0f);
            const int64_t *pad = which ? two : zero;
            if (fused) {
                out[1] = an_conv2d_batch_norm_act(x, w, NULL, one, pad, one, groups, rm[1], rv[1],
                                                  gamma, beta, 1, 0.1, 1e-5, AN_ACTIVATION_RELU6);
            } else {
                an_tensor *y = an_conv2d(x, w, NULL, one, pad, one, groups);
                out[0] = an_batch_norm_act(y, rm[0], rv[0], gamma, beta, 1, 0.1, 1e-5,
                                           AN_ACTIVATION_RELU6);
                an_release(y);
            }
            /* a weighted sum, so that every output's gradient differs */
            an_tensor *weighted = out[fused] ? an_mul(out[fused], weights) : NULL;
            an_tensor *loss = weighted ? an_sum(weighted, 0, NULL, 0) : NULL;
            an_release(weighted);
            for (int i = 0; i < 4; i++) an_set_grad(leaves[i], NULL);
            CHECK(loss && an_backward(loss, NULL, 0) == AN_OK);
            for (int i = 0; i < 4; i++) {
                grads[fused][i] = leaves[i]->grad;
                if (grads[fused][i]) an_retain(grads[fused][i]);
            }
            an_release(loss);
        }
        CHECK(same_bits(out[0], out[1]) && same_bits(rm[0], rm[1]) && same_bits(rv[0], rv[1]));
        for (int i = 0; i < 4; i++) CHECK(same_bits(grads[0][i], grads[1][i]));
        const int64_t bad_shape[1] = {K + 1};
        an_tensor *bad = an_full(1, bad_shape, 1.0f);
        CHECK(an_conv2d_batch_norm_act(x, w, NULL, one, which ? two : zero, one, groups, NULL, NULL,
                                       bad, NULL, 1, 0.1, 1e-5, AN_ACTIVATION_NONE) == NULL &&
              an_last_status() == AN_ERR_VALUE && strstr(an_last_error(), "batch_norm") != NULL);
        an_clear_error();
        an_release(bad);
        for (int f = 0; f < 2; f++) {
            an_release(rm[f]);
            an_release(rv[f]);
            an_release(out[f]);
            for (int i = 0; i < 4; i++) an_release(grads[f][i]);
        }
        for (int i = 0; i < 4; i++) an_release(leaves[i]);
        an_release(weights);
    }
}

int main(void)
{
    test_create_and_views();
    test_errors_are_reported_not_fatal();
    test_autograd_arithmetic();
    test_no_grad_mode();
    test_many_steps_release_everything();
    test_conv_with_residual();
    test_inverted_residual_block();
    test_inverted_residual_block_shortcut();
    test_conv_winograd();
    test_conv_batch_norm();
    if (failures) {
        fprintf(stderr, "test_core: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_core: all checks passed\n");
    return 0;
}
