/* conv.c — 2-D convolution (NCHW) with autograd.

   The op validates, then walks an ordered list of implementations and the
   first that accepts the shape runs (specialists first, the general
   im2col + GEMM last, which accepts everything):
     1. depthwise   groups == C_in > 1, C_out a multiple of C_in: direct kernel
     2. pointwise   1x1, stride 1, no padding: a plain GEMM per image and group
     3. im2col_gemm anything: im2col per image and group, then GEMM
   The chosen implementation is remembered on the node so the backward uses
   the same lowering.  GEMM threads internally, so the per-image loops are
   sequential; that also fixes the order of the weight-gradient sums. */
#include "../core/internal.h"
#include "../kernels/depthwise.h"
#include "../kernels/gemm.h"
#include "../kernels/im2col.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t N, C, H, W;        /* input */
    int64_t Cout, kh, kw;      /* weight [Cout, C/groups, kh, kw] */
    int64_t sh, sw, ph, pw, dh, dw, groups;
    int64_t OH, OW;
} conv_geometry;

/* Raw pointers of a backward pass; a NULL gradient is not wanted. */
typedef struct {
    const float *dy, *x, *w;
    float *dx, *dw;
} conv_grads;

typedef struct {
    const char *name;
    int (*accepts)(const conv_geometry *g);
    /* y = conv(x, w) + bias (bias may be NULL); y overwritten */
    an_status (*forward)(const conv_geometry *g, const float *x, const float *w, const float *bias,
                         float *y);
    /* dx, dw zero-initialised by the caller, accumulated into */
    an_status (*backward)(const conv_geometry *g, const conv_grads *grads);
} conv_impl;

static an_status gemm_or_fail(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                              int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                              int64_t ldc)
{
    if (an_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != 0)
        return an_set_error(AN_ERR_MEMORY, "conv2d: out of memory for the GEMM packing workspace");
    return AN_OK;
}

/* y[n, co, :] = bias[co] for every image: the GEMMs then add onto it. */
static void fill_bias(const conv_geometry *g, const float *bias, float *y)
{
    int64_t plane = g->OH * g->OW, rows = g->N * g->Cout;
#pragma omp parallel for schedule(static) if (rows * plane > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        float v = bias[r % g->Cout];
        float *p = y + r * plane;
        for (int64_t i = 0; i < plane; i++)
            p[i] = v;
    }
}

/* ------------------------------------------------------------ depthwise */

static int depthwise_accepts(const conv_geometry *g)
{
    return g->groups > 1 && g->groups == g->C && g->Cout % g->C == 0;
}

static an_status depthwise_forward(const conv_geometry *g, const float *x, const float *w,
                                   const float *bias, float *y)
{
    an_depthwise_conv2d_forward_f32(x, w, bias, g->N, g->C, g->H, g->W, g->Cout / g->C, g->kh, g->kw,
                                    g->sh, g->sw, g->ph, g->pw, g->dh, g->dw, g->OH, g->OW, y);
    return AN_OK;
}

static an_status depthwise_backward(const conv_geometry *g, const conv_grads *gr)
{
    int64_t mult = g->Cout / g->C;
    if (gr->dx)
        an_depthwise_conv2d_backward_input_f32(gr->dy, gr->w, g->N, g->C, g->H, g->W, mult, g->kh,
                                               g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                                               g->OH, g->OW, gr->dx);
    if (gr->dw)
        an_depthwise_conv2d_backward_weight_f32(gr->dy, gr->x, g->N, g->C, g->H, g->W, mult, g->kh,
                                                g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                                                g->OH, g->OW, gr->dw, NULL);
    return AN_OK;
}

/* ------------------------------------------------------------ pointwise */

/* A 1x1 stride-1 unpadded convolution is y[n, g] = W_g @ x[n, g] with x
   already in GEMM layout [C/groups, H*W]: no im2col copy at all. */
static int pointwise_accepts(const conv_geometry *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

static an_status pointwise_forward(const conv_geometry *g, const float *x, const float *w,
                                   const float *bias, float *y)
{
    int64_t HW = g->H * g->W, cg = g->C / g->groups, og = g->Cout / g->groups;
    if (bias)
        fill_bias(g, bias, y);
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t grp = 0; grp < g->groups; grp++) {
            an_status st = gemm_or_fail(0, 0, og, HW, cg, w + grp * og * cg, cg,
                                        x + (n * g->C + grp * cg) * HW, HW, bias ? 1.0f : 0.0f,
                                        y + (n * g->Cout + grp * og) * HW, HW);
            if (st)
                return st;
        }
    return AN_OK;
}

static an_status pointwise_backward(const conv_geometry *g, const conv_grads *gr)
{
    int64_t HW = g->H * g->W, cg = g->C / g->groups, og = g->Cout / g->groups;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t grp = 0; grp < g->groups; grp++) {
            const float *dy = gr->dy + (n * g->Cout + grp * og) * HW;
            an_status st = AN_OK;
            if (gr->dx) /* dx[n, g] = W_g^T @ dy[n, g] */
                st = gemm_or_fail(1, 0, cg, HW, og, gr->w + grp * og * cg, cg, dy, HW, 0.0f,
                                  gr->dx + (n * g->C + grp * cg) * HW, HW);
            if (!st && gr->dw) /* dW_g += dy[n, g] @ x[n, g]^T, images in order */
                st = gemm_or_fail(0, 1, og, cg, HW, dy, HW, gr->x + (n * g->C + grp * cg) * HW, HW,
                                  1.0f, gr->dw + grp * og * cg, cg);
            if (st)
                return st;
        }
    return AN_OK;
}

/* ---------------------------------------------------------- im2col_gemm */

static int im2col_gemm_accepts(const conv_geometry *g)
{
    (void)g;
    return 1;
}

/* Floats of the column buffer for one image and group. */
static int64_t column_floats(const conv_geometry *g)
{
    return (g->C / g->groups) * g->kh * g->kw * g->OH * g->OW;
}

static float *alloc_columns(const conv_geometry *g)
{
    int64_t n = column_floats(g);
    return an_alloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
}

/* col[cg*kh*kw, OH*OW] of the `cg` channels starting at x_group.  The rows
   of each input channel form their own block, so channels split across
   threads without two threads writing the same row. */
static void im2col_group(const conv_geometry *g, const float *x_group, int64_t cg, float *col)
{
    int64_t plane = g->H * g->W, rows = g->kh * g->kw * g->OH * g->OW;
#pragma omp parallel for schedule(static) if (cg * rows > AN_PARALLEL_GRAIN)
    for (int64_t c = 0; c < cg; c++)
        an_im2col_f32(x_group + c * plane, 1, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw,
                      g->dh, g->dw, g->OH, g->OW, col + c * rows);
}

/* dx_group[c] += col2im(col rows of channel c): one channel per thread. */
static void col2im_group(const conv_geometry *g, const float *col, int64_t cg, float *dx_group)
{
    int64_t plane = g->H * g->W, rows = g->kh * g->kw * g->OH * g->OW;
#pragma omp parallel for schedule(static) if (cg * rows > AN_PARALLEL_GRAIN)
    for (int64_t c = 0; c < cg; c++)
        an_col2im_add_f32(col + c * rows, 1, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw,
                          g->dh, g->dw, g->OH, g->OW, dx_group + c * plane);
}

static an_status im2col_gemm_forward(const conv_geometry *g, const float *x, const float *w,
                                     const float *bias, float *y)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW, HW = g->H * g->W;
    float *col = alloc_columns(g); /* once per call, before the loops */
    if (!col)
        return an_last_status();
    if (bias)
        fill_bias(g, bias, y);
    an_status st = AN_OK;
    for (int64_t n = 0; n < g->N && !st; n++)
        for (int64_t grp = 0; grp < g->groups && !st; grp++) {
            im2col_group(g, x + (n * g->C + grp * cg) * HW, cg, col);
            st = gemm_or_fail(0, 0, og, OHW, ckk, w + grp * og * ckk, ckk, col, OHW,
                              bias ? 1.0f : 0.0f, y + (n * g->Cout + grp * og) * OHW, OHW);
        }
    an_free(col);
    return st;
}

static an_status im2col_gemm_backward(const conv_geometry *g, const conv_grads *gr)
{
    int64_t cg = g->C / g->groups, og = g->Cout / g->groups, ckk = cg * g->kh * g->kw;
    int64_t OHW = g->OH * g->OW, HW = g->H * g->W;
    float *col = alloc_columns(g);
    if (!col)
        return an_last_status();
    an_status st = AN_OK;
    for (int64_t n = 0; n < g->N && !st; n++)
        for (int64_t grp = 0; grp < g->groups && !st; grp++) {
            const float *dy = gr->dy + (n * g->Cout + grp * og) * OHW;
            const float *wg = gr->w + grp * og * ckk;
            if (gr->dw) { /* dW_g += dy[n, g] @ col^T, images in order */
                im2col_group(g, gr->x + (n * g->C + grp * cg) * HW, cg, col);
                st = gemm_or_fail(0, 1, og, ckk, OHW, dy, OHW, col, OHW, 1.0f,
                                  gr->dw + grp * og * ckk, ckk);
            }
            if (!st && gr->dx) { /* col = W_g^T @ dy[n, g], folded back onto dx */
                st = gemm_or_fail(1, 0, ckk, OHW, og, wg, ckk, dy, OHW, 0.0f, col, OHW);
                if (!st)
                    col2im_group(g, col, cg, gr->dx + (n * g->C + grp * cg) * HW);
            }
        }
    an_free(col);
    return st;
}

/* Specialists first; the last entry accepts every shape. */
static const conv_impl conv_impls[] = {
    {"depthwise", depthwise_accepts, depthwise_forward, depthwise_backward},
    {"pointwise", pointwise_accepts, pointwise_forward, pointwise_backward},
    {"im2col_gemm", im2col_gemm_accepts, im2col_gemm_forward, im2col_gemm_backward},
};

static int choose_impl(const conv_geometry *g)
{
    int n = (int)(sizeof conv_impls / sizeof conv_impls[0]);
    for (int i = 0; i < n; i++)
        if (conv_impls[i].accepts(g))
            return i;
    return n - 1;
}

/* ----------------------------------------------------------- the op */

/* bias grad: db[co] = sum over images, then over the plane, in that order. */
static void bias_grad(const conv_geometry *g, const float *dy, float *db)
{
    int64_t plane = g->OH * g->OW;
#pragma omp parallel for schedule(static) if (g->N * g->Cout * plane > AN_PARALLEL_GRAIN)
    for (int64_t co = 0; co < g->Cout; co++) {
        double acc = 0.0;
        for (int64_t n = 0; n < g->N; n++) {
            const float *p = dy + (n * g->Cout + co) * plane;
            for (int64_t i = 0; i < plane; i++)
                acc += p[i];
        }
        db[co] = (float)acc;
    }
}

static void geometry_from_node(const an_node *node, const an_tensor *x, const an_tensor *w,
                               conv_geometry *g)
{
    g->N = x->shape[0], g->C = x->shape[1], g->H = x->shape[2], g->W = x->shape[3];
    g->Cout = w->shape[0], g->kh = w->shape[2], g->kw = w->shape[3];
    g->sh = node->ints[0], g->sw = node->ints[1];
    g->ph = node->ints[2], g->pw = node->ints[3];
    g->dh = node->ints[4], g->dw = node->ints[5];
    g->groups = node->ints[6];
    g->OH = node->ints[7], g->OW = node->ints[8];
}

/* saved[0] = x, saved[1] = weight (contiguous, detached); inputs x, weight, bias. */
static an_status conv2d_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    an_tensor *x = node->saved[0], *w = node->saved[1];
    conv_geometry g;
    geometry_from_node(node, x, w, &g);
    const conv_impl *impl = &conv_impls[node->ints[9]];
    an_tensor *gc = an_contiguous(grad), *dx = NULL, *dw = NULL, *db = NULL;
    an_status st = gc ? AN_OK : an_last_status();
    if (!st && an_node_input_needs_grad(node, 0) && !(dx = an_zeros(x->ndim, x->shape)))
        st = an_last_status();
    if (!st && an_node_input_needs_grad(node, 1) && !(dw = an_zeros(w->ndim, w->shape)))
        st = an_last_status();
    if (!st && an_node_input_needs_grad(node, 2)) {
        int64_t shape[1] = {g.Cout};
        if (!(db = an_empty(1, shape)))
            st = an_last_status();
        else
            bias_grad(&g, an_data_ptr(gc), an_data_ptr(db));
    }
    int work = g.N * g.Cout * g.OH * g.OW > 0 && (dx || dw);
    if (!st && work) {
        conv_grads gr = {an_data_ptr(gc), an_data_ptr(x), an_data_ptr(w),
                         dx ? an_data_ptr(dx) : NULL, dw ? an_data_ptr(dw) : NULL};
        st = impl->backward(&g, &gr);
    }
    an_release(gc);
    if (st) {
        an_release(dx);
        an_release(dw);
        an_release(db);
        return st;
    }
    grad_inputs[0] = dx;
    grad_inputs[1] = dw;
    grad_inputs[2] = db;
    return AN_OK;
}

static an_status conv2d_check(const an_tensor *x, const an_tensor *w, const an_tensor *bias,
                              const int64_t stride[2], const int64_t padding[2],
                              const int64_t dilation[2], int64_t groups, conv_geometry *g)
{
    char sx[AN_SHAPE_BUF], sw[AN_SHAPE_BUF], sb[AN_SHAPE_BUF];
    if (an_check_not_null(x, "conv2d", "input") || an_check_not_null(w, "conv2d", "weight"))
        return AN_ERR_TYPE;
    if (!stride || !padding || !dilation)
        return an_set_error(AN_ERR_TYPE, "conv2d: stride, padding and dilation must be given");
    if (x->ndim != 4)
        return an_set_error(AN_ERR_VALUE, "conv2d: expected input of shape [N, C, H, W], got %s",
                            an_shape_str(x->ndim, x->shape, sx, sizeof sx));
    if (w->ndim != 4)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: expected weight of shape [C_out, C_in/groups, kh, kw], got %s",
                            an_shape_str(w->ndim, w->shape, sw, sizeof sw));
    an_shape_str(x->ndim, x->shape, sx, sizeof sx);
    an_shape_str(w->ndim, w->shape, sw, sizeof sw);
    if (stride[0] < 1 || stride[1] < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: stride must be >= 1, got (%lld, %lld)",
                            (long long)stride[0], (long long)stride[1]);
    if (dilation[0] < 1 || dilation[1] < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: dilation must be >= 1, got (%lld, %lld)",
                            (long long)dilation[0], (long long)dilation[1]);
    if (padding[0] < 0 || padding[1] < 0)
        return an_set_error(AN_ERR_VALUE, "conv2d: padding must be >= 0, got (%lld, %lld)",
                            (long long)padding[0], (long long)padding[1]);
    if (groups < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: groups must be >= 1, got %lld", (long long)groups);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return an_set_error(AN_ERR_VALUE, "conv2d: weight %s has an empty kernel", sw);
    if (x->shape[1] % groups)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: input channels %lld (input %s) are not divisible by groups=%lld",
                            (long long)x->shape[1], sx, (long long)groups);
    if (w->shape[0] % groups)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: output channels %lld (weight %s) are not divisible by groups=%lld",
                            (long long)w->shape[0], sw, (long long)groups);
    if (w->shape[1] * groups != x->shape[1])
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: input %s has %lld channels, but weight %s with groups=%lld expects %lld",
                            sx, (long long)x->shape[1], sw, (long long)groups,
                            (long long)(w->shape[1] * groups));
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))
        return an_set_error(AN_ERR_VALUE, "conv2d: expected bias of shape [%lld] for weight %s, got %s",
                            (long long)w->shape[0], sw, an_shape_str(bias->ndim, bias->shape, sb, sizeof sb));
    g->N = x->shape[0], g->C = x->shape[1], g->H = x->shape[2], g->W = x->shape[3];
    g->Cout = w->shape[0], g->kh = w->shape[2], g->kw = w->shape[3];
    g->sh = stride[0], g->sw = stride[1], g->ph = padding[0], g->pw = padding[1];
    g->dh = dilation[0], g->dw = dilation[1], g->groups = groups;
    int64_t ekh = g->dh * (g->kh - 1) + 1, ekw = g->dw * (g->kw - 1) + 1;
    int64_t padded_h = g->H + 2 * g->ph, padded_w = g->W + 2 * g->pw;
    if (ekh > padded_h || ekw > padded_w)
        return an_set_error(AN_ERR_VALUE,
                            "conv2d: kernel size (%lld, %lld) (dilated) is larger than the padded input "
                            "(%lld, %lld)",
                            (long long)ekh, (long long)ekw, (long long)padded_h, (long long)padded_w);
    g->OH = (padded_h - ekh) / g->sh + 1;
    g->OW = (padded_w - ekw) / g->sw + 1;
    return AN_OK;
}

an_tensor *an_conv2d(an_tensor *x, an_tensor *weight, an_tensor *bias, const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2], int64_t groups)
{
    conv_geometry g;
    if (conv2d_check(x, weight, bias, stride, padding, dilation, groups, &g))
        return NULL;
    int which = choose_impl(&g);
    int64_t shape[4] = {g.N, g.Cout, g.OH, g.OW};
    an_tensor *xc = an_contiguous(x);
    an_tensor *wc = xc ? an_contiguous(weight) : NULL;
    an_tensor *bc = wc && bias ? an_contiguous(bias) : NULL;
    an_tensor *out = wc && (bc || !bias) ? an_empty(4, shape) : NULL;
    an_status st = out ? AN_OK : an_last_status();
    if (!st && an_numel(out) > 0) {
        const float *pb = bc ? an_data_ptr(bc) : NULL;
        if (g.C == 0) { /* an empty sum: just the bias */
            if (pb)
                fill_bias(&g, pb, an_data_ptr(out));
            else
                an_fill_(out, 0.0f);
        } else {
            st = conv_impls[which].forward(&g, an_data_ptr(xc), an_data_ptr(wc), pb, an_data_ptr(out));
        }
    }
    an_release(bc);
    an_tensor *inputs[3] = {x, weight, bias};
    if (!st && an_needs_grad(3, inputs)) {
        an_node *node = an_record(out, "ConvolutionBackward", conv2d_backward, 3, inputs);
        an_tensor *sx = node ? an_detach(xc) : NULL, *sw = node ? an_detach(wc) : NULL;
        if (sx && sw) {
            an_node_save(node, 0, sx);
            an_node_save(node, 1, sw);
            int64_t params[10] = {g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, g.OH, g.OW, which};
            memcpy(node->ints, params, sizeof params);
        } else {
            st = an_last_status();
        }
        an_release(sx);
        an_release(sw);
    }
    an_release(xc);
    an_release(wc);
    if (st) {
        an_release(out);
        return NULL;
    }
    return out;
}
