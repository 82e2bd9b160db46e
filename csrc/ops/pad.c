/* pad.c — constant, reflect and replicate padding of the last dims
   (PyTorch's F.pad), with negative pads cropping. */
#include "../core/internal.h"
#include <stdlib.h>
#include <string.h>

/* For every dim, where each output coordinate reads from in the input:
   map[offsets[d] + o] = input coordinate, or -1 for a constant-filled slot.
   Unpadded dims map to themselves, so all dims are handled alike. */
typedef struct {
    int ndim;
    int64_t in_shape[AN_MAX_DIMS], out_shape[AN_MAX_DIMS];
    int64_t *map;
    int64_t offsets[AN_MAX_DIMS];
} pad_plan;

static int64_t source_coordinate(int64_t o, int64_t before, int64_t size, an_pad_mode mode)
{
    int64_t c = o - before;
    if (c >= 0 && c < size)
        return c;
    switch (mode) {
    case AN_PAD_REFLECT:
        /* mirror about the edge element, which is not repeated (pad < size) */
        return c < 0 ? -c : 2 * (size - 1) - c;
    case AN_PAD_REPLICATE:
        return c < 0 ? 0 : size - 1;
    default:
        return -1;
    }
}

/* (before, after) padding of dim d from PyTorch's last-dim-first list. */
static void pads_of_dim(int ndim, int n_pairs, const int64_t *pads, int d, int64_t *before, int64_t *after)
{
    int pair = ndim - 1 - d;
    *before = *after = 0;
    if (pair < n_pairs) {
        *before = pads[2 * pair];
        *after = pads[2 * pair + 1];
    }
}

static an_status validate(const an_tensor *x, int n_pairs, const int64_t *pads, an_pad_mode mode)
{
    if (an_check_not_null(x, "pad", "input"))
        return AN_ERR_TYPE;
    char buf[AN_SHAPE_BUF];
    if (mode != AN_PAD_CONSTANT && mode != AN_PAD_REFLECT && mode != AN_PAD_REPLICATE)
        return an_set_error(AN_ERR_VALUE, "pad: unknown mode %d", (int)mode);
    if (n_pairs < 0 || n_pairs > x->ndim || (n_pairs > 0 && !pads))
        return an_set_error(AN_ERR_VALUE,
                            "pad: padding length %d (%d pairs) is too large for an input of shape %s",
                            2 * n_pairs, n_pairs, an_shape_str(x->ndim, x->shape, buf, sizeof buf));
    for (int d = x->ndim - n_pairs; d < x->ndim; d++) {
        int64_t before, after, size = x->shape[d];
        pads_of_dim(x->ndim, n_pairs, pads, d, &before, &after);
        if (size + before + after < 0)
            return an_set_error(AN_ERR_VALUE,
                                "pad: padding (%lld, %lld) of dimension %d of input %s gives a negative "
                                "output size %lld",
                                (long long)before, (long long)after, d,
                                an_shape_str(x->ndim, x->shape, buf, sizeof buf),
                                (long long)(size + before + after));
        if (mode == AN_PAD_REFLECT && (before >= size || after >= size) && (before > 0 || after > 0))
            return an_set_error(AN_ERR_VALUE,
                                "pad: reflect padding (%lld, %lld) must be less than the size %lld of "
                                "dimension %d of input %s",
                                (long long)before, (long long)after, (long long)size, d,
                                an_shape_str(x->ndim, x->shape, buf, sizeof buf));
        if (mode == AN_PAD_REPLICATE && size == 0 && (before > 0 || after > 0))
            return an_set_error(AN_ERR_VALUE,
                                "pad: cannot replicate-pad the empty dimension %d of input %s", d,
                                an_shape_str(x->ndim, x->shape, buf, sizeof buf));
    }
    return AN_OK;
}

static an_status make_plan(int ndim, const int64_t *in_shape, int n_pairs, const int64_t *pads,
                           an_pad_mode mode, pad_plan *plan)
{
    plan->ndim = ndim;
    int64_t total = 0;
    for (int d = 0; d < ndim; d++) {
        int64_t before, after;
        pads_of_dim(ndim, n_pairs, pads, d, &before, &after);
        plan->in_shape[d] = in_shape[d];
        plan->out_shape[d] = in_shape[d] + before + after;
        plan->offsets[d] = total;
        total += plan->out_shape[d];
    }
    plan->map = malloc((size_t)(total > 0 ? total : 1) * sizeof *plan->map);
    if (!plan->map)
        return an_set_error(AN_ERR_MEMORY, "out of memory in pad");
    for (int d = 0; d < ndim; d++) {
        int64_t before, after;
        pads_of_dim(ndim, n_pairs, pads, d, &before, &after);
        for (int64_t o = 0; o < plan->out_shape[d]; o++)
            plan->map[plan->offsets[d] + o] = source_coordinate(o, before, in_shape[d], mode);
    }
    return AN_OK;
}

/* Offset in the contiguous input of the row feeding output row r (all dims
   but the last), or -1 when the row lies in constant padding. */
static int64_t source_row(const pad_plan *p, int64_t r)
{
    int64_t offset = 0, stride = p->in_shape[p->ndim - 1];
    for (int d = p->ndim - 2; d >= 0; d--) {
        int64_t coordinate = p->map[p->offsets[d] + r % p->out_shape[d]];
        r /= p->out_shape[d];
        if (coordinate < 0)
            return -1;
        offset += coordinate * stride;
        stride *= p->in_shape[d];
    }
    return offset;
}

static void pad_forward_kernel(const pad_plan *p, const float *x, float value, float *out)
{
    int nd = p->ndim;
    int64_t width = p->out_shape[nd - 1], rows = 1;
    for (int d = 0; d < nd - 1; d++)
        rows *= p->out_shape[d];
    const int64_t *columns = p->map + p->offsets[nd - 1];
#pragma omp parallel for schedule(static) if (rows * width > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t source = source_row(p, r);
        float *o = out + r * width;
        for (int64_t c = 0; c < width; c++)
            o[c] = source >= 0 && columns[c] >= 0 ? x[source + columns[c]] : value;
    }
}

/* grad_x[source] += grad[o] for every output element.  Reflect/replicate
   send several outputs to one input, so work is split by the leading
   unpadded dims (each block of grad_x has one owner) and a block is walked
   in a fixed order: identical sums for any thread count. */
static void pad_backward_kernel(const pad_plan *p, int n_pairs, const float *grad, float *grad_x)
{
    int nd = p->ndim;
    int64_t width = p->out_shape[nd - 1], blocks = 1, rows_per_block = 1;
    for (int d = 0; d < nd - n_pairs; d++)
        blocks *= p->out_shape[d];
    for (int d = nd - n_pairs; d < nd - 1; d++)
        rows_per_block *= p->out_shape[d];
    const int64_t *columns = p->map + p->offsets[nd - 1];
#pragma omp parallel for schedule(static) if (blocks * rows_per_block * width > AN_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        for (int64_t r = b * rows_per_block; r < (b + 1) * rows_per_block; r++) {
            int64_t source = source_row(p, r);
            if (source < 0)
                continue;
            const float *g = grad + r * width;
            float *dst = grad_x + source;
            for (int64_t c = 0; c < width; c++)
                if (columns[c] >= 0)
                    dst[columns[c]] += g[c];
        }
    }
}

/* extra = the 2*n_pairs pads; ints: [0] ndim, [1..8] input shape,
   [9] n_pairs, [10] mode */
static an_status pad_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    int ndim = (int)node->ints[0];
    int64_t shape[AN_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        shape[d] = node->ints[1 + d];
    int n_pairs = (int)node->ints[1 + AN_MAX_DIMS];
    an_pad_mode mode = (an_pad_mode)node->ints[2 + AN_MAX_DIMS];
    if (n_pairs == 0) {
        grad_inputs[0] = an_clone(grad);
        return grad_inputs[0] ? AN_OK : an_last_status();
    }
    pad_plan plan;
    if (make_plan(ndim, shape, n_pairs, (const int64_t *)node->extra, mode, &plan))
        return an_last_status();
    an_tensor *g = an_contiguous(grad);
    an_tensor *gx = g ? an_zeros(ndim, shape) : NULL;
    if (gx && an_numel(g) > 0 && an_numel(gx) > 0)
        pad_backward_kernel(&plan, n_pairs, an_data_ptr(g), an_data_ptr(gx));
    free(plan.map);
    an_release(g);
    grad_inputs[0] = gx;
    return gx ? AN_OK : an_last_status();
}

an_tensor *an_pad(an_tensor *x, int n_pairs, const int64_t *pads, an_pad_mode mode, float value)
{
    if (validate(x, n_pairs, pads, mode))
        return NULL;
    an_tensor *c = an_contiguous(x);
    if (!c)
        return NULL;
    an_tensor *out = NULL;
    pad_plan plan = {0};
    if (n_pairs == 0) {
        int prev = an_is_grad_enabled();
        an_set_grad_enabled(0);
        out = an_clone(c);
        an_set_grad_enabled(prev);
    } else if (make_plan(x->ndim, x->shape, n_pairs, pads, mode, &plan) == AN_OK) {
        out = an_empty(x->ndim, plan.out_shape);
        if (out && an_numel(out) > 0)
            pad_forward_kernel(&plan, an_data_ptr(c), value, an_data_ptr(out));
    }
    free(plan.map);
    an_release(c);
    if (out && an_needs_grad(1, &x)) {
        int64_t *saved = malloc((size_t)(2 * n_pairs + 1) * sizeof *saved);
        an_node *node = saved ? an_record(out, "PadBackward", pad_backward, 1, &x) : NULL;
        if (!node) {
            if (!saved)
                an_set_error(AN_ERR_MEMORY, "out of memory recording pad");
            free(saved);
            an_release(out);
            return NULL;
        }
        if (n_pairs > 0)
            memcpy(saved, pads, (size_t)(2 * n_pairs) * sizeof *saved);
        node->extra = saved;
        node->ints[0] = x->ndim;
        for (int d = 0; d < x->ndim; d++)
            node->ints[1 + d] = x->shape[d];
        node->ints[1 + AN_MAX_DIMS] = n_pairs;
        node->ints[2 + AN_MAX_DIMS] = mode;
    }
    return out;
}
