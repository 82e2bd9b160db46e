/* broadcast.c — numpy broadcasting rules and the reduction that undoes a
   broadcast in backward. */
#include "internal.h"
#include <string.h>

an_status an_broadcast_shapes(const an_tensor *a, const an_tensor *b, const char *op,
                              int *out_ndim, int64_t *out_shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[AN_SHAPE_BUF], sb[AN_SHAPE_BUF];
            return an_set_error(AN_ERR_VALUE,
                                "%s: shapes %s and %s cannot be broadcast together (dimension %d: %lld vs %lld)",
                                op, an_shape_str(a->ndim, a->shape, sa, sizeof sa),
                                an_shape_str(b->ndim, b->shape, sb, sizeof sb), i, (long long)da,
                                (long long)db);
        }
        out_shape[i] = da == 1 ? db : da;
    }
    *out_ndim = nd;
    return AN_OK;
}

an_tensor *an_sum_to_shape(an_tensor *grad, int ndim, const int64_t *shape)
{
    int same = grad->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = grad->shape[i] == shape[i];
    if (same)
        return an_contiguous(grad);
    an_tensor *g = an_contiguous(grad);
    if (!g)
        return NULL;
    an_tensor *out = an_zeros(ndim, shape);
    if (!out) {
        an_release(g);
        return NULL;
    }
    /* Strides of `out` seen through grad's shape: 0 where out was broadcast. */
    int nd = g->ndim;
    int64_t ostr[AN_MAX_DIMS], contiguous[AN_MAX_DIMS];
    an_contiguous_strides(ndim, shape, contiguous);
    for (int i = 0; i < nd; i++) {
        int j = ndim - nd + i;
        ostr[i] = (j >= 0 && shape[j] != 1) ? contiguous[j] : 0;
    }
    const float *src = an_data_ptr(g);
    float *dst = an_data_ptr(out);
    int64_t n = an_numel(g);
    int64_t inner = nd ? g->shape[nd - 1] : 1, inner_stride = nd ? ostr[nd - 1] : 0;
    int64_t rows = inner ? n / inner : 0;
    /* Sequential in a fixed order: the result is identical for any thread count. */
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, off = 0;
        for (int d = nd - 2; d >= 0; d--) {
            off += (rem % g->shape[d]) * ostr[d];
            rem /= g->shape[d];
        }
        const float *s = src + r * inner;
        if (inner_stride == 0) {
            float acc = 0.0f;
            for (int64_t i = 0; i < inner; i++)
                acc += s[i];
            dst[off] += acc;
        } else {
            for (int64_t i = 0; i < inner; i++)
                dst[off + i * inner_stride] += s[i];
        }
    }
    an_release(g);
    return out;
}
