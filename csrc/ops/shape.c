/* shape.c — ops that change how elements are laid out, not their values:
   reshape/view/flatten, transpose/permute, select/slice (views sharing
   storage), and the copying ops index_select, concat and channel_shuffle.

   Backward rules always return freshly allocated gradients, never views of
   grad_output: the engine accumulates into a pending gradient in place, so a
   gradient that shared storage with another tensor could be corrupted. */
#include "../core/internal.h"
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* node->ints layout shared by the view ops: [0] = input ndim, [1..8] = input
   shape, [9..] = op parameters. */
enum { INT_NDIM = 0, INT_SHAPE = 1, INT_PARAM = 1 + AN_MAX_DIMS };

static void save_input_shape(an_node *node, const an_tensor *x)
{
    node->ints[INT_NDIM] = x->ndim;
    for (int i = 0; i < x->ndim; i++)
        node->ints[INT_SHAPE + i] = x->shape[i];
}

static int saved_input_shape(const an_node *node, int64_t *shape)
{
    int ndim = (int)node->ints[INT_NDIM];
    for (int i = 0; i < ndim; i++)
        shape[i] = node->ints[INT_SHAPE + i];
    return ndim;
}

/* Records a one-input node on `out`; on failure releases out and returns NULL. */
static an_node *record_unary(an_tensor **out, an_tensor *x, const char *name, an_backward_fn backward)
{
    an_node *node = an_record(*out, name, backward, 1, &x);
    if (!node) {
        an_release(*out);
        *out = NULL;
    }
    return node;
}

static int64_t product(int from, int to, const int64_t *shape)
{
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= shape[i];
    return p;
}

/* Writes a contiguous buffer (src NULL: zeros) through the strides of `dst`
   (a view whose elements never alias each other, so rows can go to
   different threads). */
static void scatter_into_strided(an_tensor *dst, const float *src)
{
    int64_t numel = an_numel(dst);
    if (numel == 0)
        return;
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    const int nd = an_merge_dims(dst->ndim, dst->shape, dst->strides, shape, strides);
    float *base = an_data_ptr(dst);
    if (nd == 0) {
        base[0] = src ? src[0] : 0.0f;
        return;
    }
    int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
    int64_t rows = numel / inner;
#pragma omp parallel for schedule(static) if (numel > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, off = 0;
        for (int d = nd - 2; d >= 0; d--) {
            off += (rem % shape[d]) * strides[d];
            rem /= shape[d];
        }
        float *o = base + off;
        const float *s = src ? src + r * inner : NULL;
        if (inner_stride == 1 && s)
            memcpy(o, s, (size_t)inner * sizeof(float));
        else if (inner_stride == 1)
            memset(o, 0, (size_t)inner * sizeof(float));
        else
            for (int64_t i = 0; i < inner; i++)
                o[i * inner_stride] = s ? s[i] : 0.0f;
    }
}

/* A contiguous copy of grad reshaped to (ndim, shape): owns its storage. */
static an_tensor *fresh_with_shape(an_tensor *grad, int ndim, const int64_t *shape)
{
    an_tensor *copy = an_clone(grad); /* grad mode is off in backward: not recorded */
    if (!copy)
        return NULL;
    int64_t strides[AN_MAX_DIMS];
    an_contiguous_strides(ndim, shape, strides);
    an_tensor *out = an_make_view(copy, ndim, shape, strides, copy->offset);
    an_release(copy);
    return out;
}

/* ----------------------------------------------------- reshape and view */

/* Strides that let a tensor with x's geometry be seen with `shape` without
   copying, or 0 when none exist.  Old dims are grouped into runs that are
   contiguous with each other; each run must be covered exactly by a run of
   new dims, which then step through it with the run's innermost stride. */
static int strides_for_view(const an_tensor *x, int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t numel = an_numel(x);
    if (numel <= 1) {
        an_contiguous_strides(ndim, shape, strides);
        return 1;
    }
    int64_t old_shape[AN_MAX_DIMS], old_strides[AN_MAX_DIMS];
    int old_ndim = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (x->shape[i] == 1)
            continue; /* a size-1 dim constrains nothing */
        old_shape[old_ndim] = x->shape[i];
        old_strides[old_ndim] = x->strides[i];
        old_ndim++;
    }
    int next_new = ndim - 1;
    int64_t last_stride = 1;
    for (int end = old_ndim - 1; end >= 0;) {
        int start = end;
        int64_t run_numel = old_shape[end];
        while (start > 0 && old_strides[start - 1] == old_strides[start] * old_shape[start]) {
            start--;
            run_numel *= old_shape[start];
        }
        int64_t covered = 1;
        while (next_new >= 0 && (covered < run_numel || shape[next_new] == 1)) {
            strides[next_new] = covered * old_strides[end];
            covered *= shape[next_new];
            next_new--;
        }
        if (covered != run_numel)
            return 0;
        last_stride = run_numel * old_strides[end];
        end = start - 1;
    }
    /* only size-1 dims can remain; their stride is irrelevant */
    for (; next_new >= 0; next_new--) {
        if (shape[next_new] != 1)
            return 0;
        strides[next_new] = last_stride;
    }
    return 1;
}

/* Checks the requested shape and fills in the -1 entry. */
static an_status resolve_shape(const an_tensor *x, int ndim, const int64_t *requested, const char *op,
                               int64_t *shape)
{
    if (ndim < 0 || ndim > AN_MAX_DIMS)
        return an_set_error(AN_ERR_VALUE, "%s: tensors may have 0 to %d dimensions, got %d", op,
                            AN_MAX_DIMS, ndim);
    char req[AN_SHAPE_BUF];
    int inferred = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        shape[i] = requested[i];
        if (requested[i] == -1) {
            if (inferred >= 0)
                return an_set_error(AN_ERR_VALUE, "%s: only one dimension can be inferred, got shape %s",
                                    op, an_shape_str(ndim, requested, req, sizeof req));
            inferred = i;
        } else if (requested[i] < 0) {
            return an_set_error(AN_ERR_VALUE, "%s: invalid shape dimension %lld in shape %s", op,
                                (long long)requested[i], an_shape_str(ndim, requested, req, sizeof req));
        } else {
            known *= requested[i];
        }
    }
    int64_t numel = an_numel(x);
    if (inferred >= 0) {
        if (known == 0)
            return an_set_error(AN_ERR_VALUE,
                                "%s: cannot reshape a tensor of %lld elements into shape %s because the "
                                "unspecified dimension size -1 can be any value and is ambiguous",
                                op, (long long)numel, an_shape_str(ndim, requested, req, sizeof req));
        if (numel % known == 0) {
            shape[inferred] = numel / known;
            known = numel;
        }
    }
    if (known != numel)
        return an_set_error(AN_ERR_VALUE, "%s: shape %s is invalid for input of size %lld", op,
                            an_shape_str(ndim, requested, req, sizeof req), (long long)numel);
    return AN_OK;
}

static an_status reshape_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    int64_t shape[AN_MAX_DIMS];
    int ndim = saved_input_shape(node, shape);
    grad_inputs[0] = fresh_with_shape(grad, ndim, shape);
    return grad_inputs[0] ? AN_OK : an_last_status();
}

static an_tensor *reshape_impl(an_tensor *x, int ndim, const int64_t *requested, int allow_copy,
                               const char *op, const char *node_name)
{
    if (an_check_not_null(x, op, "input"))
        return NULL;
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    if (resolve_shape(x, ndim, requested, op, shape))
        return NULL;
    an_tensor *out;
    if (strides_for_view(x, ndim, shape, strides)) {
        out = an_make_view(x, ndim, shape, strides, x->offset);
    } else if (!allow_copy) {
        char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF], c[AN_SHAPE_BUF];
        an_set_error(AN_ERR_RUNTIME,
                     "%s: size is not compatible with input tensor's size and stride (input %s with "
                     "strides %s, requested %s; at least one dimension spans across two contiguous "
                     "subspaces); use .reshape(...) instead",
                     op, an_shape_str(x->ndim, x->shape, a, sizeof a),
                     an_shape_str(x->ndim, x->strides, b, sizeof b), an_shape_str(ndim, requested, c, sizeof c));
        return NULL;
    } else {
        an_tensor *copy = an_contiguous(x);
        if (!copy)
            return NULL;
        an_contiguous_strides(ndim, shape, strides);
        out = an_make_view(copy, ndim, shape, strides, copy->offset);
        an_release(copy);
    }
    if (out && an_needs_grad(1, &x)) {
        an_node *node = record_unary(&out, x, node_name, reshape_backward);
        if (node)
            save_input_shape(node, x);
    }
    return out;
}

an_tensor *an_reshape(an_tensor *x, int ndim, const int64_t *shape)
{
    return reshape_impl(x, ndim, shape, 1, "reshape", "ReshapeBackward");
}

an_tensor *an_view(an_tensor *x, int ndim, const int64_t *shape)
{
    return reshape_impl(x, ndim, shape, 0, "view", "ViewBackward");
}

an_tensor *an_flatten(an_tensor *x, int start_dim, int end_dim)
{
    if (an_check_not_null(x, "flatten", "input"))
        return NULL;
    int start, end;
    if (an_normalize_dim(start_dim, x->ndim, "flatten", &start) ||
        an_normalize_dim(end_dim, x->ndim, "flatten", &end))
        return NULL;
    if (start > end) {
        an_set_error(AN_ERR_VALUE, "flatten: start_dim (%d) cannot come after end_dim (%d)", start_dim,
                     end_dim);
        return NULL;
    }
    if (x->ndim == 0) {
        const int64_t one = 1;
        return reshape_impl(x, 1, &one, 1, "flatten", "ReshapeBackward");
    }
    int64_t shape[AN_MAX_DIMS];
    int ndim = 0;
    for (int i = 0; i < start; i++)
        shape[ndim++] = x->shape[i];
    shape[ndim++] = product(start, end + 1, x->shape);
    for (int i = end + 1; i < x->ndim; i++)
        shape[ndim++] = x->shape[i];
    return reshape_impl(x, ndim, shape, 1, "flatten", "ReshapeBackward");
}

/* ------------------------------------------------- transpose and permute */

static an_tensor *permuted_view(an_tensor *x, const int *dims)
{
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        shape[i] = x->shape[dims[i]];
        strides[i] = x->strides[dims[i]];
    }
    return an_make_view(x, x->ndim, shape, strides, x->offset);
}

/* ints[INT_PARAM + i] = the forward permutation; the gradient goes through
   its inverse. */
static an_status permute_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    int inverse[AN_MAX_DIMS];
    for (int i = 0; i < grad->ndim; i++)
        inverse[node->ints[INT_PARAM + i]] = i;
    an_tensor *view = permuted_view(grad, inverse);
    grad_inputs[0] = view ? an_clone(view) : NULL;
    an_release(view);
    return grad_inputs[0] ? AN_OK : an_last_status();
}

static an_tensor *permute_recorded(an_tensor *x, const int *dims, const char *node_name)
{
    an_tensor *out = permuted_view(x, dims);
    if (out && an_needs_grad(1, &x)) {
        an_node *node = record_unary(&out, x, node_name, permute_backward);
        if (node)
            for (int i = 0; i < x->ndim; i++)
                node->ints[INT_PARAM + i] = dims[i];
    }
    return out;
}

an_tensor *an_transpose(an_tensor *x, int dim0, int dim1)
{
    if (an_check_not_null(x, "transpose", "input"))
        return NULL;
    int d0, d1;
    if (an_normalize_dim(dim0, x->ndim, "transpose", &d0) || an_normalize_dim(dim1, x->ndim, "transpose", &d1))
        return NULL;
    int dims[AN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        dims[i] = i;
    if (x->ndim > 0) {
        dims[d0] = d1;
        dims[d1] = d0;
    }
    return permute_recorded(x, dims, "TransposeBackward");
}

an_tensor *an_permute(an_tensor *x, int ndim, const int *dims)
{
    if (an_check_not_null(x, "permute", "input"))
        return NULL;
    char buf[AN_SHAPE_BUF];
    if (ndim != x->ndim || (ndim > 0 && !dims)) {
        an_set_error(AN_ERR_VALUE,
                     "permute: number of dims doesn't match: got %d dims for a tensor of shape %s", ndim,
                     an_shape_str(x->ndim, x->shape, buf, sizeof buf));
        return NULL;
    }
    int normalized[AN_MAX_DIMS], seen[AN_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) {
        if (an_normalize_dim(dims[i], ndim, "permute", &normalized[i]))
            return NULL;
        if (seen[normalized[i]]++) {
            an_set_error(AN_ERR_VALUE, "permute: dim %d appears more than once in the permutation", dims[i]);
            return NULL;
        }
    }
    return permute_recorded(x, normalized, "PermuteBackward");
}

/* ----------------------------------------------------- select and slice */

/* The view x[..., start:stop:step, ...] along dim (no checks, no autograd). */
static an_tensor *slice_view(an_tensor *x, int dim, int64_t start, int64_t stop, int64_t step)
{
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    memcpy(strides, x->strides, sizeof strides);
    shape[dim] = stop > start ? (stop - start + step - 1) / step : 0;
    strides[dim] = x->strides[dim] * step;
    /* an empty slice may start at `size`: keep the offset inside the storage */
    int64_t offset = x->offset + (shape[dim] > 0 ? start * x->strides[dim] : 0);
    return an_make_view(x, x->ndim, shape, strides, offset);
}

/* The view x[..., index, ...] dropping dim (no checks, no autograd). */
static an_tensor *select_view(an_tensor *x, int dim, int64_t index)
{
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    int ndim = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i == dim)
            continue;
        shape[ndim] = x->shape[i];
        strides[ndim] = x->strides[i];
        ndim++;
    }
    return an_make_view(x, ndim, shape, strides, x->offset + index * x->strides[dim]);
}

/* Zeros of the saved input shape with grad written into the region that the
   forward view selected (the region is rebuilt on the new tensor).  A
   select or a slice with step 1 zeroes only the two slabs beside its region
   along dim: ShuffleNetV2 splits its channels in two at every unit, and
   zeroing the whole of each half's gradient first wrote it twice. */
static an_status scatter_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs, int is_select)
{
    int64_t shape[AN_MAX_DIMS];
    int ndim = saved_input_shape(node, shape);
    const int64_t *p = node->ints + INT_PARAM;
    const int dim = (int)p[0];
    const int slabs = is_select || p[3] == 1;
    an_tensor *full = slabs ? an_empty(ndim, shape) : an_zeros(ndim, shape);
    if (!full)
        return an_last_status();
    an_tensor *region = is_select ? select_view(full, dim, p[1]) : slice_view(full, dim, p[1], p[2], p[3]);
    an_tensor *g = region ? an_contiguous(grad) : NULL;
    an_tensor *before = NULL, *after = NULL;
    if (g && slabs) {
        const int64_t first = p[1], end = is_select ? p[1] + 1 : p[1] + region->shape[dim];
        before = slice_view(full, dim, 0, first, 1);
        after = before ? slice_view(full, dim, end, shape[dim], 1) : NULL;
    }
    if (!g || (slabs && !after)) {
        an_release(before);
        an_release(g);
        an_release(region);
        an_release(full);
        return an_last_status();
    }
    if (slabs) {
        scatter_into_strided(before, NULL);
        scatter_into_strided(after, NULL);
    }
    scatter_into_strided(region, an_data_ptr(g));
    an_release(before);
    an_release(after);
    an_release(g);
    an_release(region);
    grad_inputs[0] = full;
    return AN_OK;
}

static an_status select_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    return scatter_backward(node, grad, grad_inputs, 1);
}

static an_status slice_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    return scatter_backward(node, grad, grad_inputs, 0);
}

an_tensor *an_select(an_tensor *x, int dim, int64_t index)
{
    if (an_check_not_null(x, "select", "input"))
        return NULL;
    if (x->ndim == 0) {
        an_set_error(AN_ERR_INDEX, "select: cannot index a 0-d tensor");
        return NULL;
    }
    int d;
    if (an_normalize_dim(dim, x->ndim, "select", &d))
        return NULL;
    if (index < 0 || index >= x->shape[d]) {
        an_set_error(AN_ERR_INDEX, "select: index %lld is out of bounds for dimension %d with size %lld",
                     (long long)index, d, (long long)x->shape[d]);
        return NULL;
    }
    an_tensor *out = select_view(x, d, index);
    if (out && an_needs_grad(1, &x)) {
        an_node *node = record_unary(&out, x, "SelectBackward", select_backward);
        if (node) {
            save_input_shape(node, x);
            node->ints[INT_PARAM] = d;
            node->ints[INT_PARAM + 1] = index;
        }
    }
    return out;
}

an_tensor *an_slice(an_tensor *x, int dim, int64_t start, int64_t stop, int64_t step)
{
    if (an_check_not_null(x, "slice", "input"))
        return NULL;
    if (x->ndim == 0) {
        an_set_error(AN_ERR_INDEX, "slice: cannot slice a 0-d tensor");
        return NULL;
    }
    int d;
    if (an_normalize_dim(dim, x->ndim, "slice", &d))
        return NULL;
    if (step < 1) {
        an_set_error(AN_ERR_VALUE, "slice: step must be positive, got %lld", (long long)step);
        return NULL;
    }
    if (start < 0 || start > stop || stop > x->shape[d]) {
        an_set_error(AN_ERR_INDEX,
                     "slice: range [%lld, %lld) is invalid for dimension %d with size %lld "
                     "(expected 0 <= start <= stop <= size)",
                     (long long)start, (long long)stop, d, (long long)x->shape[d]);
        return NULL;
    }
    an_tensor *out = slice_view(x, d, start, stop, step);
    if (out && an_needs_grad(1, &x)) {
        an_node *node = record_unary(&out, x, "SliceBackward", slice_backward);
        if (node) {
            save_input_shape(node, x);
            node->ints[INT_PARAM] = d;
            node->ints[INT_PARAM + 1] = start;
            node->ints[INT_PARAM + 2] = stop;
            node->ints[INT_PARAM + 3] = step;
        }
    }
    return out;
}

/* --------------------------------------------------------- index_select */

/* out[o, j, i] = x[o, index[j], i] with x viewed as [outer, size, inner]. */
static void index_select_kernel(const float *x, int64_t outer, int64_t size, int64_t inner,
                                const int64_t *index, int64_t n, float *out)
{
    int64_t rows = outer * n;
#pragma omp parallel for schedule(static) if (rows * inner > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / n, j = r % n;
        memcpy(out + r * inner, x + (o * size + index[j]) * inner, (size_t)inner * sizeof(float));
    }
}

/* grad_x[o, index[j], i] += grad[o, j, i].  Work is split into (o, column
   block) tasks: each owns its columns of every row of grad_x[o], and walks j
   in order, so repeated indices accumulate identically for any thread count. */
static void index_add_kernel(const float *grad, int64_t outer, int64_t size, int64_t inner,
                             const int64_t *index, int64_t n, float *grad_x)
{
    const int64_t block = 1024;
    int64_t blocks = (inner + block - 1) / block, tasks = outer * blocks;
#pragma omp parallel for schedule(static) if (outer * n * inner > AN_PARALLEL_GRAIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t o = t / blocks, lo = (t % blocks) * block;
        int64_t hi = lo + block < inner ? lo + block : inner;
        for (int64_t j = 0; j < n; j++) {
            const float *g = grad + (o * n + j) * inner;
            float *dst = grad_x + (o * size + index[j]) * inner;
            for (int64_t i = lo; i < hi; i++)
                dst[i] += g[i];
        }
    }
}

/* extra = the n indices; ints[INT_PARAM] = dim, ints[INT_PARAM + 1] = n */
static an_status index_select_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    int64_t shape[AN_MAX_DIMS];
    int ndim = saved_input_shape(node, shape);
    int dim = (int)node->ints[INT_PARAM];
    int64_t n = node->ints[INT_PARAM + 1];
    an_tensor *g = an_contiguous(grad);
    an_tensor *gx = g ? an_zeros(ndim, shape) : NULL;
    if (!gx) {
        an_release(g);
        return an_last_status();
    }
    if (an_numel(gx) > 0)
        index_add_kernel(an_data_ptr(g), product(0, dim, shape), shape[dim], product(dim + 1, ndim, shape),
                         (const int64_t *)node->extra, n, an_data_ptr(gx));
    an_release(g);
    grad_inputs[0] = gx;
    return AN_OK;
}

an_tensor *an_index_select(an_tensor *x, int dim, int64_t n, const int64_t *index)
{
    if (an_check_not_null(x, "index_select", "input"))
        return NULL;
    if (x->ndim == 0) {
        an_set_error(AN_ERR_INDEX, "index_select: cannot index a 0-d tensor");
        return NULL;
    }
    int d;
    if (an_normalize_dim(dim, x->ndim, "index_select", &d))
        return NULL;
    if (n < 0 || (n > 0 && !index)) {
        an_set_error(AN_ERR_VALUE, "index_select: expected a list of %lld indices", (long long)n);
        return NULL;
    }
    for (int64_t j = 0; j < n; j++)
        if (index[j] < 0 || index[j] >= x->shape[d]) {
            an_set_error(AN_ERR_INDEX,
                         "index_select: index %lld (at position %lld) is out of range for dimension %d "
                         "with size %lld",
                         (long long)index[j], (long long)j, d, (long long)x->shape[d]);
            return NULL;
        }
    int64_t shape[AN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = n;
    an_tensor *out = an_empty(x->ndim, shape);
    if (!out)
        return NULL;
    if (an_numel(out) > 0) {
        an_tensor *c = an_contiguous(x);
        if (!c) {
            an_release(out);
            return NULL;
        }
        index_select_kernel(an_data_ptr(c), product(0, d, x->shape), x->shape[d],
                            product(d + 1, x->ndim, x->shape), index, n, an_data_ptr(out));
        an_release(c);
    }
    if (an_needs_grad(1, &x)) {
        int64_t *saved = malloc((size_t)(n > 0 ? n : 1) * sizeof *saved);
        if (!saved) {
            an_set_error(AN_ERR_MEMORY, "out of memory recording index_select");
            an_release(out);
            return NULL;
        }
        if (n > 0)
            memcpy(saved, index, (size_t)n * sizeof *saved);
        an_node *node = record_unary(&out, x, "IndexSelectBackward", index_select_backward);
        if (!node) {
            free(saved);
            return NULL;
        }
        save_input_shape(node, x);
        node->ints[INT_PARAM] = d;
        node->ints[INT_PARAM + 1] = n;
        node->extra = saved;
    }
    return out;
}

/* --------------------------------------------------------------- concat */

/* Each tensor k viewed as [outer, width_k]; out is [outer, sum of widths]. */
static void concat_kernel(int n, const float *const *parts, const int64_t *widths, int64_t outer,
                          int64_t total_width, float *out)
{
    int64_t tasks = outer * n;
#pragma omp parallel for schedule(static) if (outer * total_width > AN_PARALLEL_GRAIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t o = t / n;
        int k = (int)(t % n);
        int64_t column = 0;
        for (int i = 0; i < k; i++)
            column += widths[i];
        memcpy(out + o * total_width + column, parts[k] + o * widths[k], (size_t)widths[k] * sizeof(float));
    }
}

/* extra = sizes of each input along dim; ints[0] = dim */
static an_status concat_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    const int64_t *sizes = (const int64_t *)node->extra;
    int dim = (int)node->ints[0];
    an_tensor *g = an_contiguous(grad);
    if (!g)
        return an_last_status();
    int64_t outer = product(0, dim, g->shape), inner = product(dim + 1, g->ndim, g->shape);
    int64_t total_width = g->shape[dim] * inner;
    const float *src = an_data_ptr(g);
    int64_t start = 0;
    for (int k = 0; k < node->n_inputs; k++) {
        int64_t width = sizes[k] * inner;
        if (an_node_input_needs_grad(node, k)) {
            int64_t shape[AN_MAX_DIMS];
            memcpy(shape, g->shape, sizeof shape);
            shape[dim] = sizes[k];
            an_tensor *part = an_empty(g->ndim, shape);
            if (!part) {
                an_release(g);
                return an_last_status();
            }
            float *dst = an_data_ptr(part);
#pragma omp parallel for schedule(static) if (outer * width > AN_PARALLEL_GRAIN)
            for (int64_t o = 0; o < outer; o++)
                memcpy(dst + o * width, src + o * total_width + start, (size_t)width * sizeof(float));
            grad_inputs[k] = part;
        }
        start += width;
    }
    an_release(g);
    return AN_OK;
}

static an_status check_concat_inputs(int n, an_tensor *const *xs, int dim, int *d)
{
    if (n <= 0 || !xs)
        return an_set_error(AN_ERR_VALUE, "concat: expected a non-empty list of tensors");
    for (int k = 0; k < n; k++)
        if (!xs[k])
            return an_set_error(AN_ERR_TYPE, "concat: tensor %d must be a tensor, got NULL", k);
    const an_tensor *first = xs[0];
    if (first->ndim == 0)
        return an_set_error(AN_ERR_VALUE, "concat: zero-dimensional tensor (at position 0) cannot be concatenated");
    if (an_normalize_dim(dim, first->ndim, "concat", d))
        return an_last_status();
    char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
    for (int k = 1; k < n; k++) {
        const an_tensor *x = xs[k];
        int mismatch = x->ndim != first->ndim;
        for (int i = 0; !mismatch && i < x->ndim; i++)
            mismatch = i != *d && x->shape[i] != first->shape[i];
        if (mismatch)
            return an_set_error(AN_ERR_VALUE,
                                "concat: sizes of tensors must match except in dimension %d: tensor 0 has "
                                "shape %s but tensor %d has shape %s",
                                *d, an_shape_str(first->ndim, first->shape, a, sizeof a), k,
                                an_shape_str(x->ndim, x->shape, b, sizeof b));
    }
    return AN_OK;
}

/* Contiguous versions of the n inputs of a joining op (concat,
   channel_shuffle_concat) and their data pointers, prepared before any
   compute; release_parts frees them (safe on a partial set). */
static an_status contiguous_parts(int n, an_tensor *const *xs, const char *op, an_tensor ***parts,
                                  const float ***pointers)
{
    *parts = calloc((size_t)n, sizeof **parts);
    *pointers = calloc((size_t)n, sizeof **pointers);
    if (!*parts || !*pointers)
        return an_set_error(AN_ERR_MEMORY, "out of memory in %s", op);
    for (int k = 0; k < n; k++) {
        if (!((*parts)[k] = an_contiguous(xs[k])))
            return an_last_status();
        (*pointers)[k] = an_data_ptr((*parts)[k]);
    }
    return AN_OK;
}

static void release_parts(int n, an_tensor **parts, const float **pointers)
{
    if (parts)
        for (int k = 0; k < n; k++)
            an_release(parts[k]);
    free(parts);
    free(pointers);
}

an_tensor *an_concat(int n, an_tensor *const *xs, int dim)
{
    int d;
    if (check_concat_inputs(n, xs, dim, &d))
        return NULL;
    int64_t shape[AN_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[d] = 0;
    for (int k = 0; k < n; k++)
        shape[d] += xs[k]->shape[d];
    /* contiguous copies of the inputs and their row widths, prepared before any compute */
    an_tensor **parts = NULL;
    const float **pointers = NULL;
    int64_t *widths = calloc((size_t)n, sizeof *widths);
    int64_t *sizes = malloc((size_t)n * sizeof *sizes);
    an_tensor *out = NULL;
    if (!widths || !sizes) {
        an_set_error(AN_ERR_MEMORY, "out of memory in concat");
        goto done;
    }
    if (contiguous_parts(n, xs, "concat", &parts, &pointers))
        goto done;
    int64_t inner = product(d + 1, xs[0]->ndim, shape), outer = product(0, d, shape);
    for (int k = 0; k < n; k++) {
        sizes[k] = xs[k]->shape[d];
        widths[k] = sizes[k] * inner;
    }
    out = an_empty(xs[0]->ndim, shape);
    if (!out)
        goto done;
    if (an_numel(out) > 0)
        concat_kernel(n, pointers, widths, outer, shape[d] * inner, an_data_ptr(out));
    if (an_needs_grad(n, xs)) {
        an_node *node = an_record(out, "CatBackward", concat_backward, n, xs);
        if (!node) {
            an_release(out);
            out = NULL;
            goto done;
        }
        node->ints[0] = d;
        node->extra = sizes;
        sizes = NULL;
    }
done:
    release_parts(n, parts, pointers);
    free(widths);
    free(sizes);
    return out;
}

/* ------------------------------------------------------ channel_shuffle */

/* x viewed as [N, groups, C/groups, S] is written out as [N, C/groups, groups, S]:
   output channel a*groups + b takes input channel b*(C/groups) + a. */
static void channel_shuffle_kernel(const float *x, int64_t batch, int64_t channels, int64_t groups,
                                   int64_t spatial, float *out)
{
    int64_t per_group = channels / groups, rows = batch * channels;
#pragma omp parallel for schedule(static) if (rows * spatial > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = r / channels, c = r % channels;
        int64_t source = (c % groups) * per_group + c / groups;
        memcpy(out + r * spatial, x + (n * channels + source) * spatial, (size_t)spatial * sizeof(float));
    }
}

/* The inverse of a shuffle with g groups is the shuffle with C/g groups. */
static an_status channel_shuffle_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    int64_t groups = node->ints[0], channels = grad->shape[1];
    int64_t inverse_groups = channels > 0 ? channels / groups : 1;
    grad_inputs[0] = an_channel_shuffle(grad, (int)inverse_groups);
    return grad_inputs[0] ? AN_OK : an_last_status();
}

an_tensor *an_channel_shuffle(an_tensor *x, int groups)
{
    if (an_check_not_null(x, "channel_shuffle", "input"))
        return NULL;
    char buf[AN_SHAPE_BUF];
    if (x->ndim < 3) {
        an_set_error(AN_ERR_VALUE, "channel_shuffle: expected input of shape [N, C, H, W] (at least 3-D), got %s",
                     an_shape_str(x->ndim, x->shape, buf, sizeof buf));
        return NULL;
    }
    if (groups <= 0) {
        an_set_error(AN_ERR_VALUE, "channel_shuffle: number of groups must be positive, got %d", groups);
        return NULL;
    }
    int64_t channels = x->shape[1];
    if (channels % groups != 0) {
        an_set_error(AN_ERR_VALUE,
                     "channel_shuffle: number of channels %lld must be divisible by groups %d (input %s)",
                     (long long)channels, groups, an_shape_str(x->ndim, x->shape, buf, sizeof buf));
        return NULL;
    }
    an_tensor *out = an_empty_like(x);
    if (!out)
        return NULL;
    if (an_numel(out) > 0) {
        an_tensor *c = an_contiguous(x);
        if (!c) {
            an_release(out);
            return NULL;
        }
        channel_shuffle_kernel(an_data_ptr(c), x->shape[0], channels, groups, product(2, x->ndim, x->shape),
                               an_data_ptr(out));
        an_release(c);
    }
    if (an_needs_grad(1, &x)) {
        an_node *node = record_unary(&out, x, "ChannelShuffleBackward", channel_shuffle_backward);
        if (node)
            node->ints[0] = groups;
    }
    return out;
}

/* ------------------------------------------------ channel_shuffle_concat */

/* channel_shuffle(concat(xs, dim 1), n) for n inputs of one shape [N, c, ...]
   in one pass: output channel a*n + i is channel a of input i.  ShuffleNet
   v2 ends every unit with that pair; apart, the concatenation and the
   shuffle copied the unit's output twice forward and twice backward. */
static void interleave_channels(int n, const float *const *parts, int64_t batch, int64_t channels,
                                int64_t spatial, float *out)
{
    int64_t rows = batch * channels * n;
#pragma omp parallel for schedule(static) if (rows * spatial > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t image = r / (channels * n), c = r % (channels * n), a = c / n, i = c % n;
        memcpy(out + r * spatial, parts[i] + (image * channels + a) * spatial, (size_t)spatial * sizeof(float));
    }
}

/* grad of input i, channel a = grad of output channel a*n + i */
static an_status channel_shuffle_concat_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    int n = (int)node->ints[0];
    an_tensor *g = an_contiguous(grad);
    if (!g)
        return an_last_status();
    int64_t shape[AN_MAX_DIMS];
    memcpy(shape, grad->shape, sizeof shape);
    shape[1] /= n;
    int64_t batch = shape[0], channels = shape[1], spatial = product(2, grad->ndim, shape);
    an_status st = AN_OK;
    for (int i = 0; i < n && !st; i++) {
        if (!an_node_input_needs_grad(node, i))
            continue;
        an_tensor *gi = an_empty(grad->ndim, shape);
        if (!gi) {
            st = an_last_status();
            break;
        }
        const float *from = an_data_ptr(g);
        float *to = an_data_ptr(gi);
        int64_t rows = batch * channels;
#pragma omp parallel for schedule(static) if (rows * spatial > AN_PARALLEL_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            int64_t image = r / channels, a = r % channels;
            memcpy(to + r * spatial, from + (image * channels * n + a * n + i) * spatial,
                   (size_t)spatial * sizeof(float));
        }
        grad_inputs[i] = gi;
    }
    an_release(g);
    if (st)
        for (int i = 0; i < n; i++) {
            an_release(grad_inputs[i]);
            grad_inputs[i] = NULL;
        }
    return st;
}

an_tensor *an_channel_shuffle_concat(int n, an_tensor *const *xs)
{
    int d;
    if (check_concat_inputs(n, xs, 1, &d))
        return NULL;
    char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
    if (xs[0]->ndim < 3) {
        an_set_error(AN_ERR_VALUE, "channel_shuffle_concat: expected inputs of shape [N, C, H, W] "
                                   "(at least 3-D), got %s",
                     an_shape_str(xs[0]->ndim, xs[0]->shape, a, sizeof a));
        return NULL;
    }
    for (int k = 1; k < n; k++)
        if (xs[k]->shape[1] != xs[0]->shape[1]) {
            an_set_error(AN_ERR_VALUE, "channel_shuffle_concat: inputs must have the same shape: tensor 0 "
                                       "has shape %s but tensor %d has shape %s",
                         an_shape_str(xs[0]->ndim, xs[0]->shape, a, sizeof a), k,
                         an_shape_str(xs[k]->ndim, xs[k]->shape, b, sizeof b));
            return NULL;
        }
    int64_t shape[AN_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[1] *= n;
    an_tensor **parts = NULL;
    const float **pointers = NULL;
    an_tensor *out = NULL;
    if (contiguous_parts(n, xs, "channel_shuffle_concat", &parts, &pointers))
        goto done;
    out = an_empty(xs[0]->ndim, shape);
    if (!out)
        goto done;
    if (an_numel(out) > 0)
        interleave_channels(n, pointers, shape[0], xs[0]->shape[1], product(2, xs[0]->ndim, shape),
                            an_data_ptr(out));
    if (an_needs_grad(n, xs)) {
        an_node *node = an_record(out, "ChannelShuffleCatBackward", channel_shuffle_concat_backward, n, xs);
        if (!node) {
            an_release(out);
            out = NULL;
            goto done;
        }
        node->ints[0] = n;
    }
done:
    release_parts(n, parts, pointers);
    return out;
}
