/* dropout.c — inverted dropout with autograd.

   The keep/drop decision of element i comes from counter offset+i of the
   global counter-based generator, so the mask depends only on the seed and
   the draw position, never on the thread count. */
#include "../core/internal.h"

/* saved[0] = the scaled mask (0 or 1/(1-p)), same shape as the output. */
static an_status dropout_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    grad_inputs[0] = an_mul(grad, node->saved[0]);
    return grad_inputs[0] ? AN_OK : an_last_status();
}

an_tensor *an_dropout(an_tensor *x, double p, int training)
{
    if (an_check_not_null(x, "dropout", "input"))
        return NULL;
    if (!(p >= 0.0 && p <= 1.0)) {
        an_set_error(AN_ERR_VALUE, "dropout: probability has to be between 0 and 1, but got %g", p);
        return NULL;
    }
    if (!training || p == 0.0 || an_numel(x) == 0) {
        an_retain(x); /* identity, as PyTorch returns the input itself */
        return x;
    }
    int64_t n = an_numel(x);
    an_tensor *xc = an_contiguous(x);
    an_tensor *mask = xc ? an_empty(x->ndim, x->shape) : NULL;
    an_tensor *out = mask ? an_empty(x->ndim, x->shape) : NULL;
    if (!out) {
        an_release(xc);
        an_release(mask);
        return NULL;
    }
    uint64_t seed, offset;
    an_random_reserve((uint64_t)n, &seed, &offset);
    /* p == 1 drops everything; 1/(1-p) would be inf there */
    float keep_scale = p < 1.0 ? (float)(1.0 / (1.0 - p)) : 0.0f;
    float threshold = (float)p;
    const float *px = an_data_ptr(xc);
    float *pm = an_data_ptr(mask), *py = an_data_ptr(out);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN / 4)
    for (int64_t i = 0; i < n; i++) {
        float u = an_random_uniform01(seed, offset + (uint64_t)i);
        pm[i] = u >= threshold ? keep_scale : 0.0f;
        py[i] = px[i] * pm[i]; /* a NaN input stays NaN even where dropped, as in PyTorch */
    }
    an_release(xc);
    if (an_needs_grad(1, &x)) {
        an_node *node = an_record(out, "DropoutBackward", dropout_backward, 1, &x);
        if (!node) {
            an_release(mask);
            an_release(out);
            return NULL;
        }
        an_node_save(node, 0, mask);
    }
    an_release(mask);
    return out;
}
