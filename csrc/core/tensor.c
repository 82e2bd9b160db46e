/* tensor.c — reference-counted storage and tensors, views, copies. */
#include "internal.h"
#include "allocator.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void *an_alloc(size_t bytes)
{
    /* 64-byte alignment: whole cache lines and aligned zmm loads.  Blocks
       come from the caching allocator, so a training step reuses the pages
       of the previous one instead of faulting in fresh ones. */
    void *p = an_cache_alloc(bytes);
    if (!p)
        an_set_error(AN_ERR_MEMORY, "out of memory allocating %zu bytes", bytes);
    return p;
}

void an_free(void *p) { an_cache_free(p); }

static an_storage *storage_new(int64_t numel)
{
    an_storage *s = malloc(sizeof *s);
    if (!s) {
        an_set_error(AN_ERR_MEMORY, "out of memory allocating tensor storage");
        return NULL;
    }
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / sizeof(float) / 2) {
        free(s);
        an_set_error(AN_ERR_MEMORY, "tensor of %lld elements is too large", (long long)numel);
        return NULL;
    }
    s->data = an_alloc((size_t)numel * sizeof(float));
    if (!s->data) {
        free(s);
        return NULL;
    }
    s->numel = numel;
    s->refcount = 1;
    s->owner = NULL;
    s->release_owner = NULL;
    return s;
}

static void storage_release(an_storage *s)
{
    if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (s->release_owner)
        s->release_owner(s->owner);
    else
        an_free(s->data);
    free(s);
}

void an_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t step = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = step;
        step *= shape[i] > 0 ? shape[i] : 1;
    }
}

int an_merge_dims(int ndim, const int64_t *shape, const int64_t *strides, int64_t *merged_shape,
                  int64_t *merged_strides)
{
    int n = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1)
            continue;
        if (n > 0 && merged_strides[n - 1] == shape[d] * strides[d]) {
            merged_shape[n - 1] *= shape[d];
            merged_strides[n - 1] = strides[d];
        } else {
            merged_shape[n] = shape[d];
            merged_strides[n] = strides[d];
            n++;
        }
    }
    return n;
}

static an_status check_shape(int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > AN_MAX_DIMS)
        return an_set_error(AN_ERR_VALUE, "tensors may have 0 to %d dimensions, got %d",
                            AN_MAX_DIMS, ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return an_set_error(AN_ERR_VALUE, "negative dimension %lld in shape",
                                (long long)shape[i]);
        if (shape[i] && n > INT64_MAX / 8 / shape[i])
            return an_set_error(AN_ERR_MEMORY, "shape too large");
        n *= shape[i];
    }
    *numel = n;
    return AN_OK;
}

static an_tensor *tensor_shell(an_storage *storage, int ndim, const int64_t *shape,
                               const int64_t *strides, int64_t offset)
{
    an_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        an_set_error(AN_ERR_MEMORY, "out of memory allocating a tensor");
        return NULL;
    }
    t->refcount = 1;
    t->storage = storage;
    t->offset = offset;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
    }
    return t;
}

an_tensor *an_empty(int ndim, const int64_t *shape)
{
    int64_t numel = 0;
    if (check_shape(ndim, shape, &numel))
        return NULL;
    an_storage *s = storage_new(numel);
    if (!s)
        return NULL;
    int64_t strides[AN_MAX_DIMS];
    an_contiguous_strides(ndim, shape, strides);
    an_tensor *t = tensor_shell(s, ndim, shape, strides, 0);
    if (!t)
        storage_release(s);
    return t;
}

an_tensor *an_full(int ndim, const int64_t *shape, float value)
{
    an_tensor *t = an_empty(ndim, shape);
    if (t)
        an_fill_(t, value);
    return t;
}

an_tensor *an_zeros(int ndim, const int64_t *shape)
{
    an_tensor *t = an_empty(ndim, shape);
    if (t)
        memset(t->storage->data, 0, (size_t)an_numel(t) * sizeof(float));
    return t;
}

an_tensor *an_from_data(int ndim, const float *data, const int64_t *shape)
{
    an_tensor *t = an_empty(ndim, shape);
    if (t && an_numel(t))
        memcpy(t->storage->data, data, (size_t)an_numel(t) * sizeof(float));
    return t;
}

/* External memory with no owner to notify is simply never freed by us. */
static void keep_external_memory(void *owner) { (void)owner; }

an_tensor *an_from_external(int ndim, const int64_t *shape, const int64_t *strides,
                            float *data, void *owner, void (*release_owner)(void *))
{
    int64_t numel = 0;
    if (check_shape(ndim, shape, &numel))
        return NULL;
    /* storage->data is the lowest address touched, so negative strides work */
    int64_t low = 0, high = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0) {
            low = high = 0;
            break;
        }
        int64_t extent = (shape[i] - 1) * strides[i];
        if (extent < 0)
            low += extent;
        else
            high += extent;
    }
    an_storage *s = malloc(sizeof *s);
    if (!s) {
        an_set_error(AN_ERR_MEMORY, "out of memory allocating tensor storage");
        return NULL;
    }
    s->data = data + low;
    s->numel = high - low + 1;
    s->refcount = 1;
    s->owner = owner;
    s->release_owner = release_owner ? release_owner : keep_external_memory;
    an_tensor *t = tensor_shell(s, ndim, shape, strides, -low);
    if (!t) {
        s->release_owner = NULL; /* the caller keeps ownership on failure */
        s->data = NULL;
        free(s);
    }
    return t;
}

an_tensor *an_make_view(an_tensor *base, int ndim, const int64_t *shape,
                        const int64_t *strides, int64_t offset)
{
    an_tensor *t = tensor_shell(base->storage, ndim, shape, strides, offset);
    if (t)
        __atomic_add_fetch(&base->storage->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

void an_retain(an_tensor *t)
{
    if (t)
        __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void an_node_free(an_node *node); /* autograd.c */

void an_release(an_tensor *t)
{
    if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    an_release(t->grad);
    an_release(t->pending_grad);
    if (t->grad_fn)
        an_node_free(t->grad_fn);
    storage_release(t->storage);
    free(t);
}

int64_t an_numel(const an_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int an_same_shape(const an_tensor *a, const an_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

int an_is_contiguous(const an_tensor *t)
{
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1)
            continue;
        if (t->strides[i] != expected)
            return 0;
        expected *= t->shape[i];
    }
    return 1;
}

float *an_data_ptr(const an_tensor *t) { return t->storage->data + t->offset; }

/* dst (contiguous, numel elements) <- src with arbitrary strides. */
static void gather_strided(const an_tensor *src, float *dst)
{
    int64_t numel = an_numel(src);
    if (numel == 0)
        return;
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    const int nd = an_merge_dims(src->ndim, src->shape, src->strides, shape, strides);
    if (nd == 0) {
        dst[0] = an_data_ptr(src)[0];
        return;
    }
    const float *base = an_data_ptr(src);
    int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
    int64_t rows = numel / inner;
#pragma omp parallel for schedule(static) if (numel > AN_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        /* decompose the row index over the outer dims */
        int64_t rem = r, off = 0;
        for (int d = nd - 2; d >= 0; d--) {
            off += (rem % shape[d]) * strides[d];
            rem /= shape[d];
        }
        const float *s = base + off;
        float *o = dst + r * inner;
        if (inner_stride == 1)
            memcpy(o, s, (size_t)inner * sizeof(float));
        else
            for (int64_t i = 0; i < inner; i++)
                o[i] = s[i * inner_stride];
    }
}

an_tensor *an_contiguous(an_tensor *t)
{
    if (an_check_not_null(t, "contiguous", "input"))
        return NULL;
    if (an_is_contiguous(t)) {
        an_retain(t);
        return t;
    }
    an_tensor *out = an_empty(t->ndim, t->shape);
    if (!out)
        return NULL;
    gather_strided(t, an_data_ptr(out));
    return out;
}

an_tensor *an_empty_like(const an_tensor *t) { return an_empty(t->ndim, t->shape); }
an_tensor *an_zeros_like(const an_tensor *t) { return an_zeros(t->ndim, t->shape); }

static an_status clone_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    (void)node;
    an_retain(grad);
    grad_inputs[0] = grad;
    return AN_OK;
}

an_tensor *an_clone(an_tensor *t)
{
    if (an_check_not_null(t, "clone", "input"))
        return NULL;
    an_tensor *out = an_empty(t->ndim, t->shape);
    if (!out)
        return NULL;
    gather_strided(t, an_data_ptr(out));
    if (an_needs_grad(1, &t) && !an_record(out, "CloneBackward", clone_backward, 1, &t)) {
        an_release(out);
        return NULL;
    }
    return out;
}

an_tensor *an_detach(an_tensor *t)
{
    if (an_check_not_null(t, "detach", "input"))
        return NULL;
    return an_make_view(t, t->ndim, t->shape, t->strides, t->offset);
}

an_status an_copy_(an_tensor *dst, an_tensor *src)
{
    if (an_check_not_null(dst, "copy_", "destination") || an_check_not_null(src, "copy_", "source"))
        return AN_ERR_TYPE;
    if (!an_same_shape(dst, src)) {
        char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE, "copy_: shape mismatch: destination %s, source %s",
                            an_shape_str(dst->ndim, dst->shape, a, sizeof a),
                            an_shape_str(src->ndim, src->shape, b, sizeof b));
    }
    an_tensor *c = an_contiguous(src);
    if (!c)
        return an_last_status();
    int64_t n = an_numel(dst);
    const float *s = an_data_ptr(c);
    if (an_is_contiguous(dst)) {
        memmove(an_data_ptr(dst), s, (size_t)n * sizeof(float));
    } else {
        /* scatter through dst's strides */
        float *base = an_data_ptr(dst);
        for (int64_t i = 0; i < n; i++) {
            int64_t rem = i, off = 0;
            for (int d = dst->ndim - 1; d >= 0; d--) {
                off += (rem % dst->shape[d]) * dst->strides[d];
                rem /= dst->shape[d];
            }
            base[off] = s[i];
        }
    }
    an_release(c);
    return AN_OK;
}

/* Applies f to each element of t in place (any strides), in fixed order per element. */
#define FOR_EACH_ELEMENT(t, index, ptr, body)                                   \
    do {                                                                        \
        int64_t n_ = an_numel(t);                                               \
        float *base_ = an_data_ptr(t);                                          \
        int contiguous_ = an_is_contiguous(t);                                  \
        for (int64_t index = 0; index < n_; index++) {                          \
            int64_t off_ = index;                                               \
            if (!contiguous_) {                                                 \
                int64_t rem_ = index;                                           \
                off_ = 0;                                                       \
                for (int d_ = (t)->ndim - 1; d_ >= 0; d_--) {                   \
                    off_ += (rem_ % (t)->shape[d_]) * (t)->strides[d_];         \
                    rem_ /= (t)->shape[d_];                                     \
                }                                                               \
            }                                                                   \
            float *ptr = base_ + off_;                                          \
            body;                                                               \
        }                                                                       \
    } while (0)

an_status an_fill_(an_tensor *t, float value)
{
    if (an_check_not_null(t, "fill_", "input"))
        return AN_ERR_TYPE;
    FOR_EACH_ELEMENT(t, i, p, *p = value);
    return AN_OK;
}

an_status an_uniform_(an_tensor *t, float low, float high)
{
    if (an_check_not_null(t, "uniform_", "input"))
        return AN_ERR_TYPE;
    if (!(low <= high))
        return an_set_error(AN_ERR_VALUE, "uniform_: expects low <= high, got low=%g, high=%g",
                            (double)low, (double)high);
    uint64_t seed, offset;
    an_random_reserve((uint64_t)an_numel(t), &seed, &offset);
    FOR_EACH_ELEMENT(t, i, p, *p = low + (high - low) * an_random_uniform01(seed, offset + (uint64_t)i));
    return AN_OK;
}

an_status an_normal_(an_tensor *t, float mean, float std)
{
    if (an_check_not_null(t, "normal_", "input"))
        return AN_ERR_TYPE;
    if (!(std >= 0))
        return an_set_error(AN_ERR_VALUE, "normal_: expects std >= 0.0, got std=%g", (double)std);
    uint64_t seed, offset;
    int64_t n = an_numel(t);
    /* Box-Muller: two counters per element keeps each value independent of n */
    an_random_reserve(2 * (uint64_t)n, &seed, &offset);
    FOR_EACH_ELEMENT(t, i, p, {
        double u1 = 1.0 - (double)an_random_uniform01(seed, offset + 2 * (uint64_t)i);
        double u2 = an_random_uniform01(seed, offset + 2 * (uint64_t)i + 1);
        *p = (float)(mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    });
    return AN_OK;
}

int an_has_nonfinite(const an_tensor *t)
{
    int found = 0;
    FOR_EACH_ELEMENT(t, i, p, if (!isfinite(*p)) found = 1);
    return found;
}
