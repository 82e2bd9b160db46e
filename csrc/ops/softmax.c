/* softmax.c — softmax and log_softmax along one dim.
 *
 * The tensor is seen as [outer, size, inner] around the softmax dim; each of
 * the outer*inner rows (stride `inner`) is independent, so rows are split
 * across threads and every row is summed sequentially in double: the result
 * does not depend on the thread count.  The max is subtracted before exp so
 * large logits never overflow.  Backward uses only the saved output.
 */
#include "../core/internal.h"
#include <math.h>
#include <stdlib.h>

typedef struct {
    int64_t outer, size, inner;
} row_layout;

static row_layout layout_around(const an_tensor *t, int dim)
{
    row_layout l = {1, 1, 1};
    if (t->ndim == 0)
        return l; /* a scalar is one row of one element */
    for (int d = 0; d < dim; d++)
        l.outer *= t->shape[d];
    l.size = t->shape[dim];
    for (int d = dim + 1; d < t->ndim; d++)
        l.inner *= t->shape[d];
    return l;
}

/* One row x[0], x[s], ..., x[(n-1)s] -> y.  A NaN anywhere makes the row NaN
   (it survives into the sum), as in PyTorch. */
static void softmax_row(const float *x, float *y, int64_t n, int64_t s, int log_output)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i * s] > max)
            max = x[i * s];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)x[i * s] - max);
    if (log_output) {
        double log_sum = log(sum);
        for (int64_t i = 0; i < n; i++)
            y[i * s] = (float)((double)x[i * s] - max - log_sum);
    } else {
        double inv = 1.0 / sum;
        for (int64_t i = 0; i < n; i++)
            y[i * s] = (float)(exp((double)x[i * s] - max) * inv);
    }
}

/* softmax:     dx = y * (g - sum(g * y))
   log_softmax: dx = g - exp(y) * sum(g)   (y = log-probabilities) */
static void softmax_backward_row(const float *y, const float *g, float *dx, int64_t n, int64_t s,
                                 int log_output)
{
    double dot = 0.0;
    if (log_output) {
        for (int64_t i = 0; i < n; i++)
            dot += g[i * s];
        for (int64_t i = 0; i < n; i++)
            dx[i * s] = (float)(g[i * s] - exp((double)y[i * s]) * dot);
    } else {
        for (int64_t i = 0; i < n; i++)
            dot += (double)g[i * s] * y[i * s];
        for (int64_t i = 0; i < n; i++)
            dx[i * s] = (float)(y[i * s] * (g[i * s] - dot));
    }
}

/* ints[0] = log_output, ints[1] = dim; saved[0] = detached output */
static an_status softmax_backward(an_node *node, an_tensor *grad_output, an_tensor **grad_inputs)
{
    int log_output = (int)node->ints[0];
    an_tensor *y = node->saved[0];
    row_layout l = layout_around(y, (int)node->ints[1]);
    an_tensor *g = an_contiguous(grad_output);
    if (!g)
        return an_last_status();
    an_tensor *dx = an_empty_like(y);
    if (!dx) {
        an_release(g);
        return an_last_status();
    }
    const float *py = an_data_ptr(y), *pg = an_data_ptr(g);
    float *pd = an_data_ptr(dx);
    int64_t rows = l.outer * l.inner;
#pragma omp parallel for schedule(static) if (rows * l.size > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = (r / l.inner) * l.size * l.inner + r % l.inner;
        softmax_backward_row(py + base, pg + base, pd + base, l.size, l.inner, log_output);
    }
    an_release(g);
    grad_inputs[0] = dx;
    return AN_OK;
}

static an_tensor *softmax_op(an_tensor *x, int dim, int log_output)
{
    const char *name = log_output ? "log_softmax" : "softmax";
    int d;
    if (an_check_not_null(x, name, "input") || an_normalize_dim(dim, x->ndim, name, &d))
        return NULL;
    an_tensor *c = an_contiguous(x);
    if (!c)
        return NULL;
    an_tensor *out = an_empty_like(x);
    if (!out) {
        an_release(c);
        return NULL;
    }
    row_layout l = layout_around(x, d);
    const float *px = an_data_ptr(c);
    float *py = an_data_ptr(out);
    int64_t rows = l.outer * l.inner, n = an_numel(out);
    if (n > 0) {
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            int64_t base = (r / l.inner) * l.size * l.inner + r % l.inner;
            softmax_row(px + base, py + base, l.size, l.inner, log_output);
        }
    }
    an_release(c);
    if (an_needs_grad(1, &x)) {
        an_node *node = an_record(out, log_output ? "LogSoftmaxBackward" : "SoftmaxBackward",
                                  softmax_backward, 1, &x);
        an_tensor *keep = node ? an_detach(out) : NULL;
        if (!keep) {
            an_release(out);
            return NULL;
        }
        node->ints[0] = log_output;
        node->ints[1] = d;
        an_node_save(node, 0, keep);
        an_release(keep);
    }
    return out;
}

an_tensor *an_softmax(an_tensor *x, int dim) { return softmax_op(x, dim, 0); }
an_tensor *an_log_softmax(an_tensor *x, int dim) { return softmax_op(x, dim, 1); }
