/* pool.c — max / average / adaptive average 2-D pooling with autograd.

   Inputs are [N, C, H, W] or an unbatched [C, H, W] (treated as N = 1 and
   given back unbatched).  Output sizes follow PyTorch exactly, including
   the ceil_mode rule that the last window must start inside the input or
   its left padding. */
#include "../core/internal.h"
#include "../kernels/pool.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    int ndim;             /* 3 or 4: the rank of input and output */
    int64_t N, C, H, W;
    int64_t OH, OW;
} pool_geometry;

static an_status pool_input(const an_tensor *x, const char *op, pool_geometry *g)
{
    char sx[AN_SHAPE_BUF];
    if (an_check_not_null(x, op, "input"))
        return AN_ERR_TYPE;
    if (x->ndim != 3 && x->ndim != 4)
        return an_set_error(AN_ERR_VALUE, "%s: expected input of shape [N, C, H, W] or [C, H, W], got %s",
                            op, an_shape_str(x->ndim, x->shape, sx, sizeof sx));
    int b = x->ndim - 3;
    g->ndim = x->ndim;
    g->N = b ? x->shape[0] : 1;
    g->C = x->shape[b];
    g->H = x->shape[b + 1];
    g->W = x->shape[b + 2];
    return AN_OK;
}

static an_tensor *pool_output(const pool_geometry *g)
{
    int64_t shape[4] = {g->N, g->C, g->OH, g->OW};
    return g->ndim == 4 ? an_empty(4, shape) : an_empty(3, shape + 1);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* PyTorch's pooling_output_shape. */
static int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dilation,
                           int ceil_mode)
{
    int64_t out = floor_div(in + 2 * pad - dilation * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
    if (ceil_mode && (out - 1) * stride >= in + pad)
        out--; /* the last window would start in the right padding */
    return out;
}

/* kernel/stride/dilation >= 1, 0 <= padding <= kernel/2, output >= 1. */
static an_status pool_window_check(const char *op, const an_tensor *x, const int64_t kernel[2],
                                   const int64_t stride[2], const int64_t padding[2],
                                   const int64_t dilation[2], int ceil_mode, pool_geometry *g)
{
    if (!kernel || !stride || !padding || !dilation)
        return an_set_error(AN_ERR_TYPE, "%s: kernel_size, stride and padding must be given", op);
    if (kernel[0] < 1 || kernel[1] < 1)
        return an_set_error(AN_ERR_VALUE, "%s: kernel_size must be greater than zero, got (%lld, %lld)", op,
                            (long long)kernel[0], (long long)kernel[1]);
    if (stride[0] < 1 || stride[1] < 1)
        return an_set_error(AN_ERR_VALUE, "%s: stride must be greater than zero, got (%lld, %lld)", op,
                            (long long)stride[0], (long long)stride[1]);
    if (dilation[0] < 1 || dilation[1] < 1)
        return an_set_error(AN_ERR_VALUE, "%s: dilation must be greater than zero, got (%lld, %lld)", op,
                            (long long)dilation[0], (long long)dilation[1]);
    if (padding[0] < 0 || padding[1] < 0 || padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2)
        return an_set_error(AN_ERR_VALUE,
                            "%s: pad should be at most half of kernel size, but got padding=(%lld, %lld) "
                            "and kernel_size=(%lld, %lld)",
                            op, (long long)padding[0], (long long)padding[1], (long long)kernel[0],
                            (long long)kernel[1]);
    g->OH = pooled_size(g->H, kernel[0], padding[0], stride[0], dilation[0], ceil_mode);
    g->OW = pooled_size(g->W, kernel[1], padding[1], stride[1], dilation[1], ceil_mode);
    if (g->OH < 1 || g->OW < 1) {
        char sx[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE,
                            "%s: output size is too small: input %s with kernel_size (%lld, %lld) gives "
                            "output (%lld, %lld)",
                            op, an_shape_str(x->ndim, x->shape, sx, sizeof sx), (long long)kernel[0],
                            (long long)kernel[1], (long long)g->OH, (long long)g->OW);
    }
    return AN_OK;
}

/* Geometry and window parameters kept on the node: ints[0..6] geometry,
   ints[7..] the window. */
static void save_geometry(an_node *node, const pool_geometry *g)
{
    int64_t v[7] = {g->ndim, g->N, g->C, g->H, g->W, g->OH, g->OW};
    memcpy(node->ints, v, sizeof v);
}

static void load_geometry(const an_node *node, pool_geometry *g)
{
    g->ndim = (int)node->ints[0];
    g->N = node->ints[1], g->C = node->ints[2], g->H = node->ints[3], g->W = node->ints[4];
    g->OH = node->ints[5], g->OW = node->ints[6];
}

static an_tensor *input_grad(const pool_geometry *g)
{
    int64_t shape[4] = {g->N, g->C, g->H, g->W};
    return g->ndim == 4 ? an_zeros(4, shape) : an_zeros(3, shape + 1);
}

/* Common backward frame: dx = zeros, then the kernel accumulates into it. */
typedef void (*pool_backward_kernel)(const an_node *node, const pool_geometry *g, const float *dy,
                                     float *dx);

static an_status run_pool_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs,
                                   pool_backward_kernel kernel)
{
    pool_geometry g;
    load_geometry(node, &g);
    an_tensor *gc = an_contiguous(grad);
    an_tensor *dx = gc ? input_grad(&g) : NULL;
    if (!dx) {
        an_release(gc);
        return an_last_status();
    }
    if (an_numel(gc) > 0)
        kernel(node, &g, an_data_ptr(gc), an_data_ptr(dx));
    an_release(gc);
    grad_inputs[0] = dx;
    return AN_OK;
}

/* Records `name` on out with x as input; NULL (out released) on failure. */
static an_node *record_pool(an_tensor *out, an_tensor *x, const char *name, an_backward_fn backward,
                            const pool_geometry *g)
{
    an_node *node = an_record(out, name, backward, 1, &x);
    if (node)
        save_geometry(node, g);
    return node;
}

/* ------------------------------------------------------------ max pool */

static void max_pool_backward_kernel(const an_node *node, const pool_geometry *g, const float *dy,
                                     float *dx)
{
    an_maxpool2d_backward_f32(dy, (const int32_t *)node->extra, g->N, g->C, g->H, g->W, g->OH, g->OW, dx);
}

static an_status max_pool2d_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    return run_pool_backward(node, grad, grad_inputs, max_pool_backward_kernel);
}

an_tensor *an_max_pool2d(an_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], const int64_t dilation[2], int ceil_mode)
{
    const char *op = "max_pool2d";
    pool_geometry g;
    if (pool_input(x, op, &g) || pool_window_check(op, x, kernel, stride, padding, dilation, ceil_mode, &g))
        return NULL;
    if (g.H * g.W > INT32_MAX) {
        an_set_error(AN_ERR_VALUE, "max_pool2d: planes of more than 2^31 elements are not supported");
        return NULL;
    }
    int record = an_needs_grad(1, &x);
    int64_t n_out = g.N * g.C * g.OH * g.OW;
    /* the argmax is only kept when a backward will need it */
    int32_t *argmax = record ? malloc(sizeof(int32_t) * (size_t)(n_out > 0 ? n_out : 1)) : NULL;
    an_tensor *xc = (!record || argmax) ? an_contiguous(x) : NULL;
    an_tensor *out = xc ? pool_output(&g) : NULL;
    if (!out) {
        if (record && !argmax)
            an_set_error(AN_ERR_MEMORY, "max_pool2d: out of memory for the argmax");
        free(argmax);
        an_release(xc);
        return NULL;
    }
    if (n_out > 0)
        an_maxpool2d_forward_f32(an_data_ptr(xc), g.N, g.C, g.H, g.W, kernel[0], kernel[1], stride[0],
                                 stride[1], padding[0], padding[1], dilation[0], dilation[1], g.OH, g.OW,
                                 an_data_ptr(out), argmax);
    an_release(xc);
    if (record) {
        an_node *node = record_pool(out, x, "MaxPool2DWithIndicesBackward", max_pool2d_backward, &g);
        if (!node) {
            free(argmax);
            an_release(out);
            return NULL;
        }
        node->extra = argmax; /* freed with the node */
    }
    return out;
}

/* ------------------------------------------------------------ avg pool */

/* ints[7..14]: kh, kw, sh, sw, ph, pw, count_include_pad */
static void avg_pool_backward_kernel(const an_node *node, const pool_geometry *g, const float *dy,
                                     float *dx)
{
    const int64_t *p = node->ints + 7;
    an_avgpool2d_backward_f32(dy, g->N, g->C, g->H, g->W, p[0], p[1], p[2], p[3], p[4], p[5], (int)p[6], 0,
                              g->OH, g->OW, dx);
}

static an_status avg_pool2d_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    return run_pool_backward(node, grad, grad_inputs, avg_pool_backward_kernel);
}

an_tensor *an_avg_pool2d(an_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], int ceil_mode, int count_include_pad)
{
    const char *op = "avg_pool2d";
    const int64_t no_dilation[2] = {1, 1};
    pool_geometry g;
    if (pool_input(x, op, &g) || pool_window_check(op, x, kernel, stride, padding, no_dilation, ceil_mode, &g))
        return NULL;
    an_tensor *xc = an_contiguous(x);
    an_tensor *out = xc ? pool_output(&g) : NULL;
    if (!out) {
        an_release(xc);
        return NULL;
    }
    if (an_numel(out) > 0)
        an_avgpool2d_forward_f32(an_data_ptr(xc), g.N, g.C, g.H, g.W, kernel[0], kernel[1], stride[0],
                                 stride[1], padding[0], padding[1], count_include_pad, 0, g.OH, g.OW,
                                 an_data_ptr(out));
    an_release(xc);
    if (an_needs_grad(1, &x)) {
        an_node *node = record_pool(out, x, "AvgPool2DBackward", avg_pool2d_backward, &g);
        if (!node) {
            an_release(out);
            return NULL;
        }
        int64_t p[7] = {kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                        count_include_pad ? 1 : 0};
        memcpy(node->ints + 7, p, sizeof p);
    }
    return out;
}

/* ---------------------------------------------------- adaptive avg pool */

static void adaptive_backward_kernel(const an_node *node, const pool_geometry *g, const float *dy,
                                     float *dx)
{
    (void)node;
    an_adaptive_avgpool2d_backward_f32(dy, g->N, g->C, g->H, g->W, g->OH, g->OW, dx);
}

static an_status adaptive_avg_pool2d_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    return run_pool_backward(node, grad, grad_inputs, adaptive_backward_kernel);
}

an_tensor *an_adaptive_avg_pool2d(an_tensor *x, int64_t out_h, int64_t out_w)
{
    const char *op = "adaptive_avg_pool2d";
    pool_geometry g;
    if (pool_input(x, op, &g))
        return NULL;
    if (out_h < 0 || out_w < 0) {
        an_set_error(AN_ERR_VALUE, "%s: output_size must be >= 0, got (%lld, %lld)", op, (long long)out_h,
                     (long long)out_w);
        return NULL;
    }
    if ((g.H == 0 || g.W == 0) && out_h * out_w > 0) {
        char sx[AN_SHAPE_BUF];
        an_set_error(AN_ERR_VALUE, "%s: input %s has an empty plane; cannot pool it to (%lld, %lld)", op,
                     an_shape_str(x->ndim, x->shape, sx, sizeof sx), (long long)out_h, (long long)out_w);
        return NULL;
    }
    g.OH = out_h;
    g.OW = out_w;
    an_tensor *xc = an_contiguous(x);
    an_tensor *out = xc ? pool_output(&g) : NULL;
    if (!out) {
        an_release(xc);
        return NULL;
    }
    if (an_numel(out) > 0)
        an_adaptive_avgpool2d_forward_f32(an_data_ptr(xc), g.N, g.C, g.H, g.W, g.OH, g.OW, an_data_ptr(out));
    an_release(xc);
    if (an_needs_grad(1, &x) &&
        !record_pool(out, x, "AdaptiveAvgPool2DBackward", adaptive_avg_pool2d_backward, &g)) {
        an_release(out);
        return NULL;
    }
    return out;
}
