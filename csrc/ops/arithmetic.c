/* arithmetic.c — add, sub, mul, div with numpy broadcasting, neg, and the
   residual join relu(a + b) in one pass. */
#include "../core/internal.h"
#include <stdlib.h>
#include <string.h>

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } binary_op;

static const char *const binary_names[] = {"add", "sub", "mul", "div"};

/* One row of the broadcast iteration: a and b advance by their own strides
   (0 when broadcast along this row). */
static void binary_row(binary_op op, const float *a, int64_t sa, const float *b, int64_t sb,
                       float *out, int64_t n)
{
    if (sa == 1 && sb == 1) {
        switch (op) {
        case OP_ADD: for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i]; break;
        case OP_SUB: for (int64_t i = 0; i < n; i++) out[i] = a[i] - b[i]; break;
        case OP_MUL: for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i]; break;
        case OP_DIV: for (int64_t i = 0; i < n; i++) out[i] = a[i] / b[i]; break;
        }
    } else if (sa == 1 && sb == 0) {
        float s = b[0];
        switch (op) {
        case OP_ADD: for (int64_t i = 0; i < n; i++) out[i] = a[i] + s; break;
        case OP_SUB: for (int64_t i = 0; i < n; i++) out[i] = a[i] - s; break;
        case OP_MUL: for (int64_t i = 0; i < n; i++) out[i] = a[i] * s; break;
        case OP_DIV: for (int64_t i = 0; i < n; i++) out[i] = a[i] / s; break;
        }
    } else {
        switch (op) {
        case OP_ADD: for (int64_t i = 0; i < n; i++) out[i] = a[i * sa] + b[i * sb]; break;
        case OP_SUB: for (int64_t i = 0; i < n; i++) out[i] = a[i * sa] - b[i * sb]; break;
        case OP_MUL: for (int64_t i = 0; i < n; i++) out[i] = a[i * sa] * b[i * sb]; break;
        case OP_DIV: for (int64_t i = 0; i < n; i++) out[i] = a[i * sa] / b[i * sb]; break;
        }
    }
}

/* Strides of t seen through the broadcast output shape (0 on broadcast dims). */
static void broadcast_strides(const an_tensor *t, int nd, const int64_t *out_shape, int64_t *strides)
{
    for (int i = 0; i < nd; i++) {
        int j = t->ndim - nd + i;
        strides[i] = (j >= 0 && t->shape[j] == out_shape[i]) ? t->strides[j] : 0;
    }
}

static an_tensor *binary_forward(binary_op op, an_tensor *a, an_tensor *b)
{
    const char *name = binary_names[op];
    if (an_check_not_null(a, name, "input") || an_check_not_null(b, name, "other"))
        return NULL;
    int nd;
    int64_t shape[AN_MAX_DIMS];
    if (an_broadcast_shapes(a, b, name, &nd, shape))
        return NULL;
    an_tensor *out = an_empty(nd, shape);
    if (!out)
        return NULL;
    int64_t n = an_numel(out);
    if (n == 0)
        return out;
    int64_t sa[AN_MAX_DIMS], sb[AN_MAX_DIMS];
    broadcast_strides(a, nd, shape, sa);
    broadcast_strides(b, nd, shape, sb);
    const float *pa = an_data_ptr(a), *pb = an_data_ptr(b);
    float *po = an_data_ptr(out);
    if (nd == 0) {
        binary_row(op, pa, 1, pb, 1, po, 1);
        return out;
    }
    int64_t inner = shape[nd - 1], rows = n / inner;
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, oa = 0, ob = 0;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rem % shape[d];
            rem /= shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        if (sa[nd - 1] == 0 && sb[nd - 1] == 1)
            /* scalar-like a along the row: swap so the fast path applies */
            switch (op) {
            case OP_ADD: binary_row(OP_ADD, pb + ob, 1, pa + oa, 0, po + r * inner, inner); break;
            case OP_MUL: binary_row(OP_MUL, pb + ob, 1, pa + oa, 0, po + r * inner, inner); break;
            default: binary_row(op, pa + oa, 0, pb + ob, 1, po + r * inner, inner); break;
            }
        else
            binary_row(op, pa + oa, sa[nd - 1], pb + ob, sb[nd - 1], po + r * inner, inner);
    }
    return out;
}

/* saved[0] = a, saved[1] = b (only what the rule needs) */
static an_status binary_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    binary_op op = (binary_op)node->ints[0];
    an_tensor *a = node->saved[0], *b = node->saved[1];
    /* input shapes live in extra: the inputs themselves may not be saved */
    int nda = (int)node->ints[1], ndb = (int)node->ints[2];
    const int64_t *sha = (const int64_t *)node->extra, *shb = sha + AN_MAX_DIMS;
    if (an_node_input_needs_grad(node, 0)) {
        an_tensor *full = NULL;
        switch (op) {
        case OP_ADD: case OP_SUB: full = grad; an_retain(full); break;
        case OP_MUL: full = an_mul(grad, b); break;
        case OP_DIV: full = an_div(grad, b); break;
        }
        if (!full)
            return an_last_status();
        grad_inputs[0] = an_sum_to_shape(full, nda, sha);
        an_release(full);
        if (!grad_inputs[0])
            return an_last_status();
    }
    if (an_node_input_needs_grad(node, 1)) {
        an_tensor *full = NULL;
        switch (op) {
        case OP_ADD: full = grad; an_retain(full); break;
        case OP_SUB: full = an_neg(grad); break;
        case OP_MUL: full = an_mul(grad, a); break;
        case OP_DIV: {
            /* d(a/b)/db = -(a/b)/b : reuse the quotient saved as saved[2] */
            an_tensor *t = an_div(node->saved[2], b);
            full = t ? an_mul(grad, t) : NULL;
            an_release(t);
            if (full) {
                an_tensor *neg = an_neg(full);
                an_release(full);
                full = neg;
            }
            break;
        }
        }
        if (!full)
            return an_last_status();
        grad_inputs[1] = an_sum_to_shape(full, ndb, shb);
        an_release(full);
        if (!grad_inputs[1])
            return an_last_status();
    }
    return AN_OK;
}

static an_tensor *binary(binary_op op, an_tensor *a, an_tensor *b)
{
    an_tensor *out = binary_forward(op, a, b);
    an_tensor *inputs[2] = {a, b};
    if (!out || !an_needs_grad(2, inputs))
        return out;
    int64_t *shapes = malloc(2 * AN_MAX_DIMS * sizeof *shapes);
    an_node *node = shapes ? an_record(out, (const char *[]){"AddBackward", "SubBackward", "MulBackward",
                                                              "DivBackward"}[op],
                                       binary_backward, 2, inputs)
                           : NULL;
    if (!node) {
        free(shapes);
        if (!an_last_status())
            an_set_error(AN_ERR_MEMORY, "out of memory recording %s", binary_names[op]);
        an_release(out);
        return NULL;
    }
    memcpy(shapes, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    memcpy(shapes + AN_MAX_DIMS, b->shape, sizeof(int64_t) * (size_t)b->ndim);
    node->extra = shapes;
    node->ints[0] = op;
    node->ints[1] = a->ndim;
    node->ints[2] = b->ndim;
    if (op == OP_MUL || op == OP_DIV) {
        /* detached aliases: saving `out` itself would make a reference cycle */
        an_tensor *da = op == OP_MUL ? an_detach(a) : NULL;
        an_tensor *db = an_detach(b);
        an_node_save(node, 0, da);
        an_node_save(node, 1, db);
        an_release(da);
        an_release(db);
        if (op == OP_DIV) {
            an_tensor *q = an_detach(out);
            an_node_save(node, 2, q);
            an_release(q);
        }
    }
    return out;
}

an_tensor *an_add(an_tensor *a, an_tensor *b) { return binary(OP_ADD, a, b); }
an_tensor *an_sub(an_tensor *a, an_tensor *b) { return binary(OP_SUB, a, b); }
an_tensor *an_mul(an_tensor *a, an_tensor *b) { return binary(OP_MUL, a, b); }
an_tensor *an_div(an_tensor *a, an_tensor *b) { return binary(OP_DIV, a, b); }

static an_status neg_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    (void)node;
    grad_inputs[0] = an_neg(grad);
    return grad_inputs[0] ? AN_OK : an_last_status();
}

an_tensor *an_neg(an_tensor *x)
{
    if (an_check_not_null(x, "neg", "input"))
        return NULL;
    an_tensor *c = an_contiguous(x);
    if (!c)
        return NULL;
    an_tensor *out = an_empty_like(x);
    if (out) {
        const float *s = an_data_ptr(c);
        float *d = an_data_ptr(out);
        int64_t n = an_numel(out);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++)
            d[i] = -s[i];
        if (an_needs_grad(1, &x) && !an_record(out, "NegBackward", neg_backward, 1, &x)) {
            an_release(out);
            out = NULL;
        }
    }
    an_release(c);
    return out;
}

/* ------------------------------------------------------------ add_relu */

/* relu(a + b) of same-shaped tensors, the end of a residual block: one pass
   instead of an add and a relu over the activation, and in backward one
   masked gradient that both inputs receive (the add's backward passed the
   gradient through, the relu's masked it in a pass of its own).  The value
   is computed as relu computes it on the sum, so it is bit-identical to
   relu(add(a, b)). */
static an_status add_relu_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    an_tensor *y = node->saved[0];
    an_tensor *g = an_contiguous(grad);
    if (!g)
        return an_last_status();
    an_tensor *masked = an_empty_like(y);
    if (!masked) {
        an_release(g);
        return an_last_status();
    }
    const float *py = an_data_ptr(y), *pg = an_data_ptr(g);
    float *pm = an_data_ptr(masked);
    int64_t n = an_numel(masked);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float gv = pg[i]; /* loaded unconditionally: the select vectorises */
        pm[i] = py[i] <= 0.0f ? 0.0f : gv;
    }
    an_release(g);
    /* one tensor for both inputs: gradients are never modified in place */
    if (an_node_input_needs_grad(node, 0)) {
        grad_inputs[0] = masked;
        an_retain(masked);
    }
    if (an_node_input_needs_grad(node, 1)) {
        grad_inputs[1] = masked;
        an_retain(masked);
    }
    an_release(masked);
    return AN_OK;
}

static int same_shape(const an_tensor *a, const an_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

an_tensor *an_add_relu(an_tensor *a, an_tensor *b)
{
    if (an_check_not_null(a, "add_relu", "input") || an_check_not_null(b, "add_relu", "other"))
        return NULL;
    if (!same_shape(a, b)) { /* broadcasting: the two ops, with their own grads */
        an_tensor *sum = an_add(a, b);
        an_tensor *out = sum ? an_relu(sum) : NULL;
        an_release(sum);
        return out;
    }
    an_tensor *ca = an_contiguous(a);
    an_tensor *cb = ca ? an_contiguous(b) : NULL;
    an_tensor *out = cb ? an_empty_like(a) : NULL;
    if (!out) {
        an_release(ca);
        an_release(cb);
        return NULL;
    }
    const float *pa = an_data_ptr(ca), *pb = an_data_ptr(cb);
    float *po = an_data_ptr(out);
    int64_t n = an_numel(out);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float sum = pa[i] + pb[i];
        po[i] = sum <= 0.0f ? 0.0f : sum; /* NaN passes through, as in relu */
    }
    an_release(ca);
    an_release(cb);
    an_tensor *inputs[2] = {a, b};
    if (an_needs_grad(2, inputs)) {
        an_node *node = an_record(out, "AddReluBackward", add_relu_backward, 2, inputs);
        /* detached alias: saving `out` itself would make a reference cycle */
        an_tensor *keep = node ? an_detach(out) : NULL;
        if (!keep) {
            if (!an_last_status())
                an_set_error(AN_ERR_MEMORY, "out of memory recording add_relu");
            an_release(out);
            return NULL;
        }
        an_node_save(node, 0, keep);
        an_release(keep);
    }
    return out;
}
