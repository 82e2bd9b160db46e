/* linalg.c — matmul (numpy.matmul semantics, broadcast batch dims) and
   linear (x @ W^T + b), both lowered to an_gemm_f32.

   GEMM threads internally, so every loop here that calls it is sequential;
   that also fixes the order in which broadcast batch gradients are summed,
   which keeps results identical for any thread count. */
#include "../core/internal.h"
#include "../kernels/gemm.h"
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ operands */

/* One operand of a batched product seen as >= 2-D: batch dims, then a
   matrix [rows, cols].  A 1-D vector is promoted to [1, K] (left) or
   [K, 1] (right) without copying. */
typedef struct {
    int ndim;
    int64_t shape[AN_MAX_DIMS];
    int64_t strides[AN_MAX_DIMS];
    const float *data;
    int trans;   /* matrix stored transposed: element (i, j) at j*ld + i */
    int64_t ld;  /* row stride of the stored layout */
} matrix_operand;

/* Can the last two dims be read by GEMM in place (row-major or transposed,
   unit stride along one axis)?  Fills trans/ld when they can. */
static int matrix_layout_in_place(matrix_operand *m)
{
    int64_t rows = m->shape[m->ndim - 2], cols = m->shape[m->ndim - 1];
    int64_t srow = m->strides[m->ndim - 2], scol = m->strides[m->ndim - 1];
    if (rows <= 1 && cols <= 1) {
        m->trans = 0;
        m->ld = cols > 0 ? cols : 1;
        return 1;
    }
    if ((cols == 1 || scol == 1) && (rows == 1 || srow >= cols)) {
        m->trans = 0;
        m->ld = rows == 1 ? cols : srow;
        return 1;
    }
    if ((rows == 1 || srow == 1) && (cols == 1 || scol >= rows)) {
        m->trans = 1;
        m->ld = cols == 1 ? rows : scol;
        return 1;
    }
    return 0;
}

/* Describes t as an operand; *owned receives a contiguous copy when the
   layout cannot be read in place (release it after use). */
static an_status make_operand(an_tensor *t, int is_left, matrix_operand *m, an_tensor **owned)
{
    *owned = NULL;
    an_tensor *src = t;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (src->ndim == 1) {
            int64_t k = src->shape[0], s = src->strides[0];
            m->ndim = 2;
            if (is_left) {
                m->shape[0] = 1, m->shape[1] = k;
                m->strides[0] = k * s, m->strides[1] = s;
            } else {
                m->shape[0] = k, m->shape[1] = 1;
                m->strides[0] = s, m->strides[1] = 1;
            }
        } else {
            m->ndim = src->ndim;
            memcpy(m->shape, src->shape, sizeof(int64_t) * (size_t)src->ndim);
            memcpy(m->strides, src->strides, sizeof(int64_t) * (size_t)src->ndim);
        }
        m->data = an_data_ptr(src);
        if (matrix_layout_in_place(m))
            return AN_OK;
        /* a contiguous copy is always readable in place */
        *owned = an_contiguous(t);
        if (!*owned)
            return an_last_status();
        src = *owned;
    }
    return an_set_error(AN_ERR_RUNTIME, "matmul: internal layout error");
}

/* Offset of operand m's matrix for the batch index `index` of the
   broadcast batch shape (batch_ndim dims): broadcast dims contribute 0. */
static int64_t batch_offset(const int64_t *batch_shape, int batch_ndim, int64_t index,
                            int ndim, const int64_t *shape, const int64_t *strides)
{
    int64_t offset = 0;
    int operand_batch = ndim - 2;
    for (int d = batch_ndim - 1; d >= 0; d--) {
        int64_t i = index % batch_shape[d];
        index /= batch_shape[d];
        int od = operand_batch - (batch_ndim - d);
        if (od >= 0 && shape[od] != 1)
            offset += i * strides[od];
    }
    return offset;
}

static int64_t product(const int64_t *v, int n)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        p *= v[i];
    return p;
}

static an_status gemm_or_fail(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                              int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                              int64_t ldc, const char *op)
{
    if (an_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != 0)
        return an_set_error(AN_ERR_MEMORY, "%s: out of memory for the GEMM packing workspace", op);
    return AN_OK;
}

/* -------------------------------------------------------------- matmul */

/* Geometry of a matmul: broadcast batch shape and M, N, K. */
typedef struct {
    int batch_ndim;
    int64_t batch[AN_MAX_DIMS];
    int64_t n_batch, M, N, K;
} matmul_geometry;

static an_status matmul_geometry_of(const an_tensor *a, const an_tensor *b, matmul_geometry *g)
{
    char sa[AN_SHAPE_BUF], sb[AN_SHAPE_BUF];
    int64_t ka = a->shape[a->ndim - 1];
    int64_t kb = b->ndim == 1 ? b->shape[0] : b->shape[b->ndim - 2];
    if (ka != kb)
        return an_set_error(AN_ERR_VALUE,
                            "matmul: shapes %s and %s cannot be multiplied (inner dimensions %lld and %lld differ)",
                            an_shape_str(a->ndim, a->shape, sa, sizeof sa),
                            an_shape_str(b->ndim, b->shape, sb, sizeof sb), (long long)ka,
                            (long long)kb);
    int nba = a->ndim > 2 ? a->ndim - 2 : 0, nbb = b->ndim > 2 ? b->ndim - 2 : 0;
    int nb = nba > nbb ? nba : nbb;
    for (int i = 0; i < nb; i++) {
        int ia = nba - nb + i, ib = nbb - nb + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return an_set_error(AN_ERR_VALUE,
                                "matmul: batch dimensions of %s and %s cannot be broadcast (%lld vs %lld)",
                                an_shape_str(a->ndim, a->shape, sa, sizeof sa),
                                an_shape_str(b->ndim, b->shape, sb, sizeof sb), (long long)da,
                                (long long)db);
        g->batch[i] = da == 1 ? db : da;
    }
    g->batch_ndim = nb;
    g->n_batch = product(g->batch, nb);
    g->M = a->ndim == 1 ? 1 : a->shape[a->ndim - 2];
    g->N = b->ndim == 1 ? 1 : b->shape[b->ndim - 1];
    g->K = ka;
    return AN_OK;
}

/* Output shape: batch, then M unless a is 1-D, then N unless b is 1-D. */
static int matmul_out_shape(const an_tensor *a, const an_tensor *b, const matmul_geometry *g,
                            int64_t *shape)
{
    int nd = g->batch_ndim;
    memcpy(shape, g->batch, sizeof(int64_t) * (size_t)nd);
    if (a->ndim != 1)
        shape[nd++] = g->M;
    if (b->ndim != 1)
        shape[nd++] = g->N;
    return nd;
}

/* True when b has no real batch (every batch dim 1) and a's batch rows are
   one row-major block: then the whole product is ONE GEMM with M*n_batch rows. */
static int can_fold_batch(const matrix_operand *a, const matrix_operand *b, const matmul_geometry *g)
{
    if (g->n_batch <= 1 || product(b->shape, b->ndim - 2) != 1 || a->trans)
        return 0;
    if (product(a->shape, a->ndim - 2) != g->n_batch)
        return 0;
    /* a's batch dims must step by exactly M*ld (a packed row-major block) */
    int64_t expected = g->M * a->ld;
    for (int d = a->ndim - 3; d >= 0; d--) {
        if (a->shape[d] != 1 && a->strides[d] != expected)
            return 0;
        expected *= a->shape[d];
    }
    return 1;
}

/* C[batch, M, N] = A @ B over the broadcast batch (C contiguous). */
static an_status matmul_compute(const matrix_operand *a, const matrix_operand *b,
                                const matmul_geometry *g, float *c)
{
    if (can_fold_batch(a, b, g))
        return gemm_or_fail(0, b->trans, g->M * g->n_batch, g->N, g->K, a->data, a->ld, b->data,
                            b->ld, 0.0f, c, g->N, "matmul");
    for (int64_t i = 0; i < g->n_batch; i++) {
        int64_t oa = batch_offset(g->batch, g->batch_ndim, i, a->ndim, a->shape, a->strides);
        int64_t ob = batch_offset(g->batch, g->batch_ndim, i, b->ndim, b->shape, b->strides);
        an_status st = gemm_or_fail(a->trans, b->trans, g->M, g->N, g->K, a->data + oa, a->ld,
                                    b->data + ob, b->ld, 0.0f, c + i * g->M * g->N, g->N, "matmul");
        if (st)
            return st;
    }
    return AN_OK;
}

/* The gradient of an operand has the operand's own (unbroadcast) shape;
   its batch strides are the contiguous ones of that shape. */
static void contiguous_operand_strides(const matrix_operand *m, int64_t *strides)
{
    an_contiguous_strides(m->ndim, m->shape, strides);
}

/* saved[0] = a, saved[1] = b (detached aliases of the inputs). */
static an_status matmul_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    an_tensor *a = node->saved[0], *b = node->saved[1];
    int need_a = an_node_input_needs_grad(node, 0), need_b = an_node_input_needs_grad(node, 1);
    matmul_geometry g;
    if (matmul_geometry_of(a, b, &g))
        return an_last_status();
    an_tensor *gc = an_contiguous(grad), *owned_a = NULL, *owned_b = NULL;
    an_tensor *da = NULL, *db = NULL;
    matrix_operand ma, mb;
    an_status st = AN_OK;
    if (!gc) {
        return an_last_status();
    }
    if ((st = make_operand(a, 1, &ma, &owned_a)) || (st = make_operand(b, 0, &mb, &owned_b)))
        goto done;
    const float *dy = an_data_ptr(gc);
    int64_t MN = g.M * g.N;
    int fold = can_fold_batch(&ma, &mb, &g);
    if (need_a) {
        /* dA[.., M, K] = dY @ B^T, summed over the batch dims a was broadcast along */
        if (!(da = an_zeros(a->ndim, a->shape))) {
            st = an_last_status();
            goto done;
        }
        float *pda = an_data_ptr(da);
        if (fold) {
            st = gemm_or_fail(0, !mb.trans, g.M * g.n_batch, g.K, g.N, dy, g.N, mb.data, mb.ld, 0.0f,
                              pda, g.K, "matmul backward");
        } else {
            int64_t cs[AN_MAX_DIMS];
            contiguous_operand_strides(&ma, cs);
            for (int64_t i = 0; i < g.n_batch && !st; i++) {
                int64_t oda = batch_offset(g.batch, g.batch_ndim, i, ma.ndim, ma.shape, cs);
                int64_t ob = batch_offset(g.batch, g.batch_ndim, i, mb.ndim, mb.shape, mb.strides);
                st = gemm_or_fail(0, !mb.trans, g.M, g.K, g.N, dy + i * MN, g.N, mb.data + ob, mb.ld,
                                  1.0f, pda + oda, g.K, "matmul backward");
            }
        }
        if (st)
            goto done;
    }
    if (need_b) {
        /* dB[.., K, N] = A^T @ dY, summed over the batch dims b was broadcast along */
        if (!(db = an_zeros(b->ndim, b->shape))) {
            st = an_last_status();
            goto done;
        }
        float *pdb = an_data_ptr(db);
        if (fold) {
            st = gemm_or_fail(1, 0, g.K, g.N, g.M * g.n_batch, ma.data, ma.ld, dy, g.N, 0.0f, pdb,
                              g.N, "matmul backward");
        } else {
            int64_t cs[AN_MAX_DIMS];
            contiguous_operand_strides(&mb, cs);
            for (int64_t i = 0; i < g.n_batch && !st; i++) {
                int64_t odb = batch_offset(g.batch, g.batch_ndim, i, mb.ndim, mb.shape, cs);
                int64_t oa = batch_offset(g.batch, g.batch_ndim, i, ma.ndim, ma.shape, ma.strides);
                st = gemm_or_fail(!ma.trans, 0, g.K, g.N, g.M, ma.data + oa, ma.ld, dy + i * MN, g.N,
                                  1.0f, pdb + odb, g.N, "matmul backward");
            }
        }
    }
done:
    an_release(gc);
    an_release(owned_a);
    an_release(owned_b);
    if (st) {
        an_release(da);
        an_release(db);
        return st;
    }
    grad_inputs[0] = da;
    grad_inputs[1] = db;
    return AN_OK;
}

an_tensor *an_matmul(an_tensor *a, an_tensor *b)
{
    if (an_check_not_null(a, "matmul", "input") || an_check_not_null(b, "matmul", "other"))
        return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        char sa[AN_SHAPE_BUF], sb[AN_SHAPE_BUF];
        an_set_error(AN_ERR_VALUE, "matmul: both arguments need at least 1 dimension, got %s and %s",
                     an_shape_str(a->ndim, a->shape, sa, sizeof sa),
                     an_shape_str(b->ndim, b->shape, sb, sizeof sb));
        return NULL;
    }
    matmul_geometry g;
    if (matmul_geometry_of(a, b, &g))
        return NULL;
    int64_t shape[AN_MAX_DIMS];
    int nd = matmul_out_shape(a, b, &g, shape);
    an_tensor *out = g.K == 0 ? an_zeros(nd, shape) : an_empty(nd, shape);
    if (!out)
        return NULL;
    if (g.K > 0 && an_numel(out) > 0) {
        matrix_operand ma, mb;
        an_tensor *owned_a = NULL, *owned_b = NULL;
        an_status st = make_operand(a, 1, &ma, &owned_a);
        if (!st)
            st = make_operand(b, 0, &mb, &owned_b);
        if (!st)
            st = matmul_compute(&ma, &mb, &g, an_data_ptr(out));
        an_release(owned_a);
        an_release(owned_b);
        if (st) {
            an_release(out);
            return NULL;
        }
    }
    an_tensor *inputs[2] = {a, b};
    if (!an_needs_grad(2, inputs))
        return out;
    an_node *node = an_record(out, "MatmulBackward", matmul_backward, 2, inputs);
    if (!node) {
        an_release(out);
        return NULL;
    }
    /* detached aliases: the backward needs the values, not the graph */
    an_tensor *sa = an_detach(a), *sb = an_detach(b);
    an_node_save(node, 0, sa);
    an_node_save(node, 1, sb);
    an_release(sa);
    an_release(sb);
    if (!sa || !sb) {
        an_release(out);
        return NULL;
    }
    return out;
}

/* -------------------------------------------------------------- linear */

/* db[j] = sum over rows of dy[r, j], rows in increasing order; threads own
   disjoint column blocks so the order never depends on the thread count. */
static void column_sums(const float *dy, int64_t rows, int64_t cols, float *db)
{
    enum { BLOCK = 64 };
    int64_t n_blocks = (cols + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (rows * cols > AN_PARALLEL_GRAIN)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t j0 = blk * BLOCK, j1 = j0 + BLOCK < cols ? j0 + BLOCK : cols;
        double acc[BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *row = dy + r * cols;
            for (int64_t j = j0; j < j1; j++)
                acc[j - j0] += row[j];
        }
        for (int64_t j = j0; j < j1; j++)
            db[j] = (float)acc[j - j0];
    }
}

/* saved[0] = x (contiguous), saved[1] = weight; input order x, weight, bias. */
static an_status linear_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    an_tensor *x = node->saved[0], *w = node->saved[1];
    int64_t out_f = w->shape[0], in_f = w->shape[1];
    int64_t rows = in_f ? an_numel(x) / in_f : product(x->shape, x->ndim - 1);
    an_tensor *gc = an_contiguous(grad), *owned_w = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    if (!gc)
        return an_last_status();
    const float *dy = an_data_ptr(gc);
    matrix_operand mw;
    an_status st = make_operand(w, 1, &mw, &owned_w);
    if (!st && an_node_input_needs_grad(node, 0)) {
        /* dX[rows, in] = dY[rows, out] @ W[out, in] */
        if (!(dx = an_zeros(x->ndim, x->shape)))
            st = an_last_status();
        else
            st = gemm_or_fail(0, mw.trans, rows, in_f, out_f, dy, out_f, mw.data, mw.ld, 0.0f,
                              an_data_ptr(dx), in_f, "linear backward");
    }
    if (!st && an_node_input_needs_grad(node, 1)) {
        /* dW[out, in] = dY^T @ X: one GEMM over all rows */
        if (!(dw = an_zeros(2, w->shape)))
            st = an_last_status();
        else
            st = gemm_or_fail(1, 0, out_f, in_f, rows, dy, out_f, an_data_ptr(x), in_f, 0.0f,
                              an_data_ptr(dw), in_f, "linear backward");
    }
    if (!st && an_node_input_needs_grad(node, 2)) {
        int64_t shape[1] = {out_f};
        if (!(db = an_empty(1, shape)))
            st = an_last_status();
        else
            column_sums(dy, rows, out_f, an_data_ptr(db));
    }
    an_release(gc);
    an_release(owned_w);
    return an_finish_backward3(st, grad_inputs, dx, dw, db);
}

static an_status linear_check(const an_tensor *x, const an_tensor *w, const an_tensor *bias)
{
    char sx[AN_SHAPE_BUF], sw[AN_SHAPE_BUF];
    if (an_check_not_null(x, "linear", "input") || an_check_not_null(w, "linear", "weight"))
        return AN_ERR_TYPE;
    if (w->ndim != 2)
        return an_set_error(AN_ERR_VALUE, "linear: expected weight of shape [out_features, in_features], got %s",
                            an_shape_str(w->ndim, w->shape, sw, sizeof sw));
    if (x->ndim == 0)
        return an_set_error(AN_ERR_VALUE, "linear: expected input of shape [..., %lld], got a 0-D tensor",
                            (long long)w->shape[1]);
    if (x->shape[x->ndim - 1] != w->shape[1])
        return an_set_error(AN_ERR_VALUE,
                            "linear: input %s and weight %s cannot be multiplied (in_features %lld != %lld)",
                            an_shape_str(x->ndim, x->shape, sx, sizeof sx),
                            an_shape_str(w->ndim, w->shape, sw, sizeof sw),
                            (long long)x->shape[x->ndim - 1], (long long)w->shape[1]);
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))
        return an_set_error(AN_ERR_VALUE, "linear: expected bias of shape [%lld] for weight %s, got %s",
                            (long long)w->shape[0], an_shape_str(w->ndim, w->shape, sw, sizeof sw),
                            an_shape_str(bias->ndim, bias->shape, sx, sizeof sx));
    return AN_OK;
}

an_tensor *an_linear(an_tensor *x, an_tensor *weight, an_tensor *bias)
{
    if (linear_check(x, weight, bias))
        return NULL;
    int64_t out_f = weight->shape[0], in_f = weight->shape[1];
    int64_t shape[AN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = out_f;
    int64_t rows = product(x->shape, x->ndim - 1);
    an_tensor *xc = an_contiguous(x);
    an_tensor *bc = bias ? an_contiguous(bias) : NULL;
    an_tensor *out = (xc && (bc || !bias)) ? an_empty(x->ndim, shape) : NULL;
    an_tensor *owned_w = NULL;
    matrix_operand mw;
    an_status st = out ? make_operand(weight, 1, &mw, &owned_w) : an_last_status();
    if (!st && rows * out_f > 0) {
        float *y = an_data_ptr(out);
        /* the bias goes in first and the GEMM adds onto it (beta = 1) */
        if (bc) {
            const float *pb = an_data_ptr(bc);
#pragma omp parallel for schedule(static) if (rows * out_f > AN_PARALLEL_GRAIN)
            for (int64_t r = 0; r < rows; r++)
                memcpy(y + r * out_f, pb, sizeof(float) * (size_t)out_f);
        }
        st = gemm_or_fail(0, !mw.trans, rows, out_f, in_f, an_data_ptr(xc), in_f, mw.data, mw.ld,
                          bc ? 1.0f : 0.0f, y, out_f, "linear");
    }
    an_release(owned_w);
    an_release(bc);
    if (st) {
        an_release(xc);
        an_release(out);
        return NULL;
    }
    an_tensor *inputs[3] = {x, weight, bias};
    if (an_needs_grad(3, inputs)) {
        an_node *node = an_record(out, "LinearBackward", linear_backward, 3, inputs);
        an_tensor *sx = node ? an_detach(xc) : NULL, *sw = node ? an_detach(weight) : NULL;
        if (sx && sw) {
            an_node_save(node, 0, sx);
            an_node_save(node, 1, sw);
        }
        an_release(sx);
        an_release(sw);
        if (!sx || !sw) {
            an_release(xc);
            an_release(out);
            return NULL;
        }
    }
    an_release(xc);
    return out;
}
