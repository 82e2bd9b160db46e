/* unary.c — elementwise math (exp, log, sqrt, abs, pow, clamp) and the
 * activations.
 *
 * Every op is a pair of plain loops: a forward loop y = f(x) and a backward
 * rule dx = g * f'(.) written in terms of whichever tensor is cheapest to
 * keep — the input x or the output y.  One generic helper (apply_unary)
 * validates, runs the forward loop in parallel chunks and records the node;
 * one generic backward (unary_backward) runs the op's rule.  Gradients at
 * kinks and at NaN follow PyTorch's conventions (e.g. relu'(0) = 0).
 */
#include "../core/internal.h"
#include <math.h>
#include <stdlib.h>

/* Elements per task in a parallel loop: big enough to amortise scheduling,
   small enough to balance.  Elementwise work is deterministic anyway. */
#define UNARY_CHUNK 4096

/* y[i] = f(x[i]) over n elements; params are the op's scalars (slope, ...). */
typedef void (*forward_loop)(const float *restrict x, float *restrict y, int64_t n,
                             const float *params);
/* dx[i] = grad[i] * f'(.) where saved is x or y as the op chose. */
typedef void (*backward_rule)(const float *restrict saved, const float *restrict grad,
                              float *restrict dx, int64_t n, const float *params);

typedef enum { SAVE_INPUT, SAVE_OUTPUT } saved_tensor;

typedef struct {
    const char *name;          /* op name used in error messages */
    const char *node_name;     /* grad_fn name, e.g. "ReluBackward" */
    forward_loop forward;
    backward_rule backward;
    saved_tensor saves;
} unary_op;

/* -------------------------------------------------- numerically stable helpers */

/* 1/(1+e^-x) without overflow: exp is only ever taken of a non-positive number. */
static inline float stable_sigmoid(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|); finite for any finite x. */
static inline float stable_log_sigmoid(float x)
{
    return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
}

/* ------------------------------------------------------------------ math ops */

static void exp_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = expf(x[i]);
}
/* saved = y: d e^x = e^x */
static void exp_backward(const float *restrict y, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        dx[i] = g[i] * y[i];
}

static void log_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = logf(x[i]);
}
/* saved = x; at x = 0 this gives inf like PyTorch */
static void log_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        dx[i] = g[i] / x[i];
}

static void sqrt_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = sqrtf(x[i]);
}
/* saved = y: 1 / (2 sqrt x), inf at 0 like PyTorch */
static void sqrt_backward(const float *restrict y, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        dx[i] = g[i] / (2.0f * y[i]);
}

static void abs_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = fabsf(x[i]);
}
/* saved = x: sign(x), 0 at 0 and at NaN (PyTorch's sgn) */
static void abs_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
    {
        float gv = g[i]; /* loaded unconditionally: the select vectorises */
        dx[i] = x[i] > 0.0f ? gv : (x[i] < 0.0f ? -gv : 0.0f);
    }
}

/* params[0] = exponent */
static void pow_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = powf(x[i], p[0]);
}
static void pow_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    float e = p[0];
    for (int64_t i = 0; i < n; i++)
        /* x^0 is constant: PyTorch returns 0 even where x^-1 is inf */
        dx[i] = e == 0.0f ? 0.0f : g[i] * e * powf(x[i], e - 1.0f);
}

/* params = {lo, hi}; a NaN bound is absent.  NaN x stays NaN. */
static void clamp_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    float lo = p[0], hi = p[1];
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v < lo) /* false when lo is NaN */
            v = lo;
        if (v > hi)
            v = hi;
        y[i] = v;
    }
}
/* 1 inside [lo, hi] inclusive; NaN bounds never exclude */
static void clamp_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    float lo = p[0], hi = p[1];
    int has_lo = !isnan(lo), has_hi = !isnan(hi);
    for (int64_t i = 0; i < n; i++) {
        int inside = (!has_lo || x[i] >= lo) && (!has_hi || x[i] <= hi) && !isnan(x[i]);
        float gv = g[i];
        dx[i] = inside ? gv : 0.0f;
    }
}

/* ----------------------------------------------------------------- activations */

static void relu_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] <= 0.0f ? 0.0f : x[i]; /* NaN passes through */
}
/* saved = y: PyTorch masks with y <= 0, so the grad at 0 is 0 */
static void relu_backward(const float *restrict y, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
    {
        /* g loaded unconditionally so the select vectorises; a branch per
           element mispredicted on half of them (10% of a ResNet-20 step) */
        float gv = g[i];
        dx[i] = y[i] <= 0.0f ? 0.0f : gv;
    }
}

static void relu6_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] <= 0.0f ? 0.0f : (x[i] >= 6.0f ? 6.0f : x[i]);
}
/* saved = x: 1 only strictly inside (0, 6) */
static void relu6_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
    {
        float gv = g[i], v = x[i];
        dx[i] = (v > 0.0f) & (v < 6.0f) ? gv : 0.0f;
    }
}

/* params[0] = negative slope */
static void leaky_relu_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    float slope = p[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
}
static void leaky_relu_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    float slope = p[0];
    for (int64_t i = 0; i < n; i++)
        dx[i] = x[i] > 0.0f ? g[i] : g[i] * slope;
}

static void sigmoid_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = stable_sigmoid(x[i]);
}
/* saved = y: y (1 - y) */
static void sigmoid_backward(const float *restrict y, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        dx[i] = g[i] * y[i] * (1.0f - y[i]);
}

static void tanh_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = tanhf(x[i]);
}
/* saved = y: 1 - y^2 */
static void tanh_backward(const float *restrict y, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        dx[i] = g[i] * (1.0f - y[i] * y[i]);
}

static void silu_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * stable_sigmoid(x[i]);
}
/* saved = x: s (1 + x (1 - s)) with s = sigmoid(x) */
static void silu_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++) {
        float s = stable_sigmoid(x[i]);
        dx[i] = g[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

static void hardswish_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v <= -3.0f ? 0.0f : (v >= 3.0f ? v : v * (v + 3.0f) / 6.0f);
    }
}
/* saved = x: PyTorch's piecewise rule (as of torch 2.x): 0 for x <= -3, 1 for
   x >= 3, (2x+3)/6 strictly between — the derivative of the branch the
   forward took at the edges */
static void hardswish_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float gv = g[i];
        dx[i] = v <= -3.0f ? 0.0f : (v >= 3.0f ? gv : gv * (2.0f * v + 3.0f) / 6.0f);
    }
}

static void hardsigmoid_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v <= -3.0f ? 0.0f : (v >= 3.0f ? 1.0f : v / 6.0f + 0.5f);
    }
}
/* saved = x: 1/6 strictly inside (-3, 3) */
static void hardsigmoid_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
    {
        float gv = g[i], v = x[i];
        dx[i] = (v > -3.0f) & (v < 3.0f) ? gv / 6.0f : 0.0f;
    }
}

static void log_sigmoid_forward(const float *restrict x, float *restrict y, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        y[i] = stable_log_sigmoid(x[i]);
}
/* saved = x: d log sigmoid(x) = sigmoid(-x), stable for large |x| */
static void log_sigmoid_backward(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n, const float *p)
{
    (void)p;
    for (int64_t i = 0; i < n; i++)
        dx[i] = g[i] * stable_sigmoid(-x[i]);
}

/* ------------------------------------------------------------ generic driver */

/* node->extra holds a copy of the op descriptor; node->reals its params. */
static an_status unary_backward(an_node *node, an_tensor *grad_output, an_tensor **grad_inputs)
{
    const unary_op *op = (const unary_op *)node->extra;
    an_tensor *saved = node->saved[0];
    float params[2] = {(float)node->reals[0], (float)node->reals[1]};
    an_tensor *g = an_contiguous(grad_output);
    if (!g)
        return an_last_status();
    an_tensor *dx = an_empty_like(saved);
    if (!dx) {
        an_release(g);
        return an_last_status();
    }
    const float *s = an_data_ptr(saved), *pg = an_data_ptr(g);
    float *pd = an_data_ptr(dx);
    int64_t n = an_numel(dx);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t start = 0; start < n; start += UNARY_CHUNK) {
        int64_t len = n - start < UNARY_CHUNK ? n - start : UNARY_CHUNK;
        op->backward(s + start, pg + start, pd + start, len, params);
    }
    an_release(g);
    grad_inputs[0] = dx;
    return AN_OK;
}

static an_tensor *apply_unary(const unary_op *op, an_tensor *x, float param0, float param1)
{
    if (an_check_not_null(x, op->name, "input"))
        return NULL;
    an_tensor *c = an_contiguous(x);
    if (!c)
        return NULL;
    an_tensor *out = an_empty_like(x);
    if (!out) {
        an_release(c);
        return NULL;
    }
    const float params[2] = {param0, param1};
    const float *px = an_data_ptr(c);
    float *py = an_data_ptr(out);
    int64_t n = an_numel(out);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t start = 0; start < n; start += UNARY_CHUNK) {
        int64_t len = n - start < UNARY_CHUNK ? n - start : UNARY_CHUNK;
        op->forward(px + start, py + start, len, params);
    }

    if (an_needs_grad(1, &x)) {
        unary_op *copy = malloc(sizeof *copy);
        an_node *node = copy ? an_record(out, op->node_name, unary_backward, 1, &x) : NULL;
        if (!node) {
            free(copy);
            if (!an_last_status())
                an_set_error(AN_ERR_MEMORY, "out of memory recording %s", op->name);
            an_release(c);
            an_release(out);
            return NULL;
        }
        *copy = *op;
        node->extra = copy;
        node->reals[0] = param0;
        node->reals[1] = param1;
        /* detached alias: saving `out` itself would make a reference cycle */
        an_tensor *keep = an_detach(op->saves == SAVE_OUTPUT ? out : c);
        if (!keep) {
            an_release(c);
            an_release(out);
            return NULL;
        }
        an_node_save(node, 0, keep);
        an_release(keep);
    }
    an_release(c);
    return out;
}

/* ----------------------------------------------------------------- public API */

static const unary_op EXP = {"exp", "ExpBackward", exp_forward, exp_backward, SAVE_OUTPUT};
static const unary_op LOG = {"log", "LogBackward", log_forward, log_backward, SAVE_INPUT};
static const unary_op SQRT = {"sqrt", "SqrtBackward", sqrt_forward, sqrt_backward, SAVE_OUTPUT};
static const unary_op ABS = {"abs", "AbsBackward", abs_forward, abs_backward, SAVE_INPUT};
static const unary_op POW = {"pow", "PowBackward", pow_forward, pow_backward, SAVE_INPUT};
static const unary_op CLAMP = {"clamp", "ClampBackward", clamp_forward, clamp_backward, SAVE_INPUT};
static const unary_op RELU = {"relu", "ReluBackward", relu_forward, relu_backward, SAVE_OUTPUT};
static const unary_op RELU6 = {"relu6", "Relu6Backward", relu6_forward, relu6_backward, SAVE_INPUT};
static const unary_op LEAKY_RELU = {"leaky_relu", "LeakyReluBackward", leaky_relu_forward,
                                    leaky_relu_backward, SAVE_INPUT};
static const unary_op SIGMOID = {"sigmoid", "SigmoidBackward", sigmoid_forward, sigmoid_backward,
                                 SAVE_OUTPUT};
static const unary_op TANH = {"tanh", "TanhBackward", tanh_forward, tanh_backward, SAVE_OUTPUT};
static const unary_op SILU = {"silu", "SiluBackward", silu_forward, silu_backward, SAVE_INPUT};
static const unary_op HARDSWISH = {"hardswish", "HardswishBackward", hardswish_forward,
                                   hardswish_backward, SAVE_INPUT};
static const unary_op HARDSIGMOID = {"hardsigmoid", "HardsigmoidBackward", hardsigmoid_forward,
                                     hardsigmoid_backward, SAVE_INPUT};
static const unary_op LOG_SIGMOID = {"log_sigmoid", "LogSigmoidBackward", log_sigmoid_forward,
                                     log_sigmoid_backward, SAVE_INPUT};

an_tensor *an_exp(an_tensor *x) { return apply_unary(&EXP, x, 0.0f, 0.0f); }
an_tensor *an_log(an_tensor *x) { return apply_unary(&LOG, x, 0.0f, 0.0f); }
an_tensor *an_sqrt(an_tensor *x) { return apply_unary(&SQRT, x, 0.0f, 0.0f); }
an_tensor *an_abs(an_tensor *x) { return apply_unary(&ABS, x, 0.0f, 0.0f); }
an_tensor *an_pow_scalar(an_tensor *x, float exponent) { return apply_unary(&POW, x, exponent, 0.0f); }
an_tensor *an_clamp(an_tensor *x, float min_value, float max_value)
{
    return apply_unary(&CLAMP, x, min_value, max_value);
}
an_tensor *an_relu(an_tensor *x) { return apply_unary(&RELU, x, 0.0f, 0.0f); }
an_tensor *an_relu6(an_tensor *x) { return apply_unary(&RELU6, x, 0.0f, 0.0f); }
an_tensor *an_leaky_relu(an_tensor *x, float negative_slope)
{
    return apply_unary(&LEAKY_RELU, x, negative_slope, 0.0f);
}
an_tensor *an_sigmoid(an_tensor *x) { return apply_unary(&SIGMOID, x, 0.0f, 0.0f); }
an_tensor *an_tanh(an_tensor *x) { return apply_unary(&TANH, x, 0.0f, 0.0f); }
an_tensor *an_silu(an_tensor *x) { return apply_unary(&SILU, x, 0.0f, 0.0f); }
an_tensor *an_hardswish(an_tensor *x) { return apply_unary(&HARDSWISH, x, 0.0f, 0.0f); }
an_tensor *an_hardsigmoid(an_tensor *x) { return apply_unary(&HARDSIGMOID, x, 0.0f, 0.0f); }
an_tensor *an_log_sigmoid(an_tensor *x) { return apply_unary(&LOG_SIGMOID, x, 0.0f, 0.0f); }
