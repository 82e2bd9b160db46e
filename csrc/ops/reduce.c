/* reduce.c — sum and mean over all dims or a list of dims.
 *
 * Determinism: the reduced index range of every output element is cut into
 * fixed chunks of REDUCE_CHUNK elements.  Each chunk is summed sequentially
 * in double (chunks run in parallel), then each output adds its chunk
 * partials in chunk order.  Chunk boundaries never depend on the thread
 * count, so neither does the result — and a full reduction of a large
 * tensor still uses every thread.
 */
#include "../core/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REDUCE_CHUNK 4096

/* The input seen as interleaved groups of kept and reduced dims, adjacent
   dims of the same kind merged (valid because the input is contiguous). */
typedef struct {
    int n_kept, n_reduced;
    int64_t kept_size[AN_MAX_DIMS], kept_stride[AN_MAX_DIMS];
    int64_t red_size[AN_MAX_DIMS], red_stride[AN_MAX_DIMS];
    int64_t n_out, n_red; /* products of the sizes */
} reduce_plan;

static void plan_reduction(const an_tensor *x, const int *is_reduced, reduce_plan *p)
{
    int64_t strides[AN_MAX_DIMS];
    an_contiguous_strides(x->ndim, x->shape, strides);
    memset(p, 0, sizeof *p);
    p->n_out = p->n_red = 1;
    int last_kind = -1;
    for (int d = 0; d < x->ndim; d++) {
        int64_t size = x->shape[d];
        if (is_reduced[d]) {
            p->n_red *= size;
            if (last_kind == 1) { /* merge with the previous reduced group */
                p->red_size[p->n_reduced - 1] *= size;
                p->red_stride[p->n_reduced - 1] = strides[d];
            } else {
                p->red_size[p->n_reduced] = size;
                p->red_stride[p->n_reduced++] = strides[d];
            }
        } else {
            p->n_out *= size;
            if (last_kind == 0) {
                p->kept_size[p->n_kept - 1] *= size;
                p->kept_stride[p->n_kept - 1] = strides[d];
            } else {
                p->kept_size[p->n_kept] = size;
                p->kept_stride[p->n_kept++] = strides[d];
            }
        }
        last_kind = is_reduced[d];
    }
}

/* Offset in x of the first element of output element o. */
static int64_t output_base(const reduce_plan *p, int64_t o)
{
    int64_t offset = 0;
    for (int k = p->n_kept - 1; k >= 0; k--) {
        offset += (o % p->kept_size[k]) * p->kept_stride[k];
        o /= p->kept_size[k];
    }
    return offset;
}

/* Sum of a contiguous run in double: four independent lanes hide the add
   latency; the combination order is fixed, so the result still does not
   depend on threads. */
static inline double run_sum(const float *s, int64_t run)
{
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 4 <= run; i += 4) {
        lane[0] += s[i];
        lane[1] += s[i + 1];
        lane[2] += s[i + 2];
        lane[3] += s[i + 3];
    }
    for (; i < run; i++)
        lane[0] += s[i];
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

/* Sum of reduced positions [first, first+count) starting from x + base,
   walking runs along the innermost reduced group. */
static double sum_chunk(const float *x, const reduce_plan *p, int64_t base, int64_t first,
                        int64_t count)
{
    int nr = p->n_reduced;
    int64_t index[AN_MAX_DIMS];
    int64_t rem = first, offset = base;
    for (int k = nr - 1; k >= 0; k--) {
        index[k] = rem % p->red_size[k];
        rem /= p->red_size[k];
        offset += index[k] * p->red_stride[k];
    }
    const int64_t inner_size = p->red_size[nr - 1], inner_stride = p->red_stride[nr - 1];
    double acc = 0.0;
    while (count > 0) {
        int64_t run = inner_size - index[nr - 1];
        if (run > count)
            run = count;
        const float *s = x + offset;
        if (inner_stride == 1)
            acc += run_sum(s, run);
        else
            for (int64_t i = 0; i < run; i++)
                acc += s[i * inner_stride];
        count -= run;
        offset += run * inner_stride;
        index[nr - 1] += run;
        /* carry into the outer reduced groups */
        for (int k = nr - 1; k > 0 && index[k] == p->red_size[k]; k--) {
            offset -= index[k] * p->red_stride[k];
            index[k] = 0;
            index[k - 1]++;
            offset += p->red_stride[k - 1];
        }
    }
    return acc;
}

/* Pure kernel: out[o] = scale * sum over the reduced positions of o. */
static void reduce_kernel(const float *x, const reduce_plan *p, double scale, double *partials,
                          float *out)
{
    int64_t chunks = (p->n_red + REDUCE_CHUNK - 1) / REDUCE_CHUNK;
    int64_t tasks = p->n_out * chunks;
    int parallel = p->n_out * p->n_red > AN_PARALLEL_GRAIN;
    (void)parallel; /* read only by the OpenMP pragmas */
    if (chunks == 1 && p->n_reduced == 1 && p->red_stride[0] == 1 && p->n_kept <= 1) {
        /* trailing contiguous dims (a global average pool): output o sums
           the run at o * n_red, the same sums as below without the index
           walk (which cost more than the adds on 4x4 planes).  Split by
           output from a lower size: at batch 1 a 1x1 layer split by
           channels wrote the planes, and summing each thread's own took
           MobileNetV2's pool (1280 4x4 planes) from 12.8 to 6.2 us (2 threads) */
        int split_outputs = p->n_out >= 64 && p->n_out * p->n_red >= AN_PARALLEL_GRAIN / 8;
        (void)split_outputs;
#pragma omp parallel for schedule(static) if (split_outputs)
        for (int64_t o = 0; o < p->n_out; o++)
            out[o] = (float)((0.0 + run_sum(x + o * p->n_red, p->n_red)) * scale);
        return;
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t o = t / chunks, c = t % chunks;
        int64_t first = c * REDUCE_CHUNK;
        int64_t count = p->n_red - first < REDUCE_CHUNK ? p->n_red - first : REDUCE_CHUNK;
        partials[t] = sum_chunk(x, p, output_base(p, o), first, count);
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t o = 0; o < p->n_out; o++) {
        double total = 0.0;
        for (int64_t c = 0; c < chunks; c++)
            total += partials[o * chunks + c];
        out[o] = (float)(total * scale);
    }
}

/* Validates dims (negative allowed, duplicates refused) into a mask. */
static an_status reduced_mask(const an_tensor *x, int n_dims, const int *dims, const char *name,
                              int *is_reduced)
{
    for (int d = 0; d < AN_MAX_DIMS; d++)
        is_reduced[d] = n_dims == 0;
    if (n_dims < 0)
        return an_set_error(AN_ERR_VALUE, "%s: number of dims must be >= 0, got %d", name, n_dims);
    if (n_dims > 0 && !dims)
        return an_set_error(AN_ERR_TYPE, "%s: dims must not be NULL when n_dims = %d", name, n_dims);
    int seen[AN_MAX_DIMS + 1] = {0};
    for (int i = 0; i < n_dims; i++) {
        int d;
        if (an_normalize_dim(dims[i], x->ndim, name, &d))
            return AN_ERR_INDEX;
        if (seen[d])
            return an_set_error(AN_ERR_VALUE, "%s: dim %d appears multiple times in the list of dims",
                                name, d);
        seen[d] = 1;
        is_reduced[d] = 1;
    }
    return AN_OK;
}

/* ------------------------------------------------------------------ backward */

/* ints[0] = ndim, ints[1] = reduced-dim bit mask; reals[0] = scale (1 or 1/n);
   extra = input shape.  dx[i] = scale * grad[output index of i]. */
static an_status reduce_backward(an_node *node, an_tensor *grad_output, an_tensor **grad_inputs)
{
    int ndim = (int)node->ints[0];
    int64_t mask = node->ints[1];
    const int64_t *shape = (const int64_t *)node->extra;
    float scale = (float)node->reals[0];
    an_tensor *g = an_contiguous(grad_output);
    if (!g)
        return an_last_status();
    an_tensor *dx = an_empty(ndim, shape);
    if (!dx) {
        an_release(g);
        return an_last_status();
    }
    /* strides of grad seen through the input's shape: 0 on reduced dims */
    int64_t gstride[AN_MAX_DIMS], stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (mask >> d & 1) {
            gstride[d] = 0;
        } else {
            gstride[d] = stride;
            stride *= shape[d];
        }
    }
    const float *pg = an_data_ptr(g);
    float *pd = an_data_ptr(dx);
    int64_t n = an_numel(dx);
    if (ndim == 0) {
        pd[0] = pg[0] * scale;
    } else if (n > 0) {
        int64_t inner = shape[ndim - 1], rows = n / inner, inner_stride = gstride[ndim - 1];
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            int64_t rem = r, off = 0;
            for (int d = ndim - 2; d >= 0; d--) {
                off += (rem % shape[d]) * gstride[d];
                rem /= shape[d];
            }
            float *row = pd + r * inner;
            for (int64_t i = 0; i < inner; i++)
                row[i] = pg[off + i * inner_stride] * scale;
        }
    }
    an_release(g);
    grad_inputs[0] = dx;
    return AN_OK;
}

/* ------------------------------------------------------------------- forward */

static an_tensor *reduce_op(an_tensor *x, int n_dims, const int *dims, int keepdim, int mean)
{
    const char *name = mean ? "mean" : "sum";
    int is_reduced[AN_MAX_DIMS];
    if (an_check_not_null(x, name, "input") || reduced_mask(x, n_dims, dims, name, is_reduced))
        return NULL;
    int out_ndim = 0;
    int64_t out_shape[AN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        if (!is_reduced[d])
            out_shape[out_ndim++] = x->shape[d];
        else if (keepdim)
            out_shape[out_ndim++] = 1;
    }
    reduce_plan plan;
    plan_reduction(x, is_reduced, &plan);
    an_tensor *c = an_contiguous(x);
    if (!c)
        return NULL;
    an_tensor *out = an_empty(out_ndim, out_shape);
    int64_t chunks = (plan.n_red + REDUCE_CHUNK - 1) / REDUCE_CHUNK;
    size_t partial_count = (size_t)(plan.n_out * chunks);
    double *partials = out && partial_count ? an_alloc(partial_count * sizeof *partials) : NULL;
    if (!out || (partial_count && !partials)) {
        an_release(c);
        an_release(out);
        return NULL;
    }
    /* mean over nothing is 0/0 = NaN, as in PyTorch */
    double scale = mean ? 1.0 / (double)plan.n_red : 1.0;
    if (plan.n_red == 0) {
        float fill = mean ? NAN : 0.0f;
        float *po = an_data_ptr(out);
        for (int64_t o = 0; o < plan.n_out; o++)
            po[o] = fill;
    } else if (plan.n_reduced == 0) {
        /* nothing reduced (e.g. a 0-d input or only kept dims): a scaled copy */
        const float *px = an_data_ptr(c);
        float *po = an_data_ptr(out);
        for (int64_t o = 0; o < plan.n_out; o++)
            po[o] = (float)(px[o] * scale);
    } else if (plan.n_out > 0) {
        reduce_kernel(an_data_ptr(c), &plan, scale, partials, an_data_ptr(out));
    }
    an_free(partials);
    an_release(c);

    if (an_needs_grad(1, &x)) {
        int64_t *shape = malloc(AN_MAX_DIMS * sizeof *shape);
        an_node *node = shape ? an_record(out, mean ? "MeanBackward" : "SumBackward", reduce_backward,
                                          1, &x)
                              : NULL;
        if (!node) {
            free(shape);
            if (!an_last_status())
                an_set_error(AN_ERR_MEMORY, "out of memory recording %s", name);
            an_release(out);
            return NULL;
        }
        memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
        node->extra = shape;
        int64_t mask = 0;
        for (int d = 0; d < x->ndim; d++)
            if (is_reduced[d])
                mask |= (int64_t)1 << d;
        node->ints[0] = x->ndim;
        node->ints[1] = mask;
        node->reals[0] = scale;
    }
    return out;
}

an_tensor *an_sum(an_tensor *x, int n_dims, const int *dims, int keepdim)
{
    return reduce_op(x, n_dims, dims, keepdim, 0);
}

an_tensor *an_mean(an_tensor *x, int n_dims, const int *dims, int keepdim)
{
    return reduce_op(x, n_dims, dims, keepdim, 1);
}
