/* loss.c — cross_entropy, binary_cross_entropy_with_logits, mse_loss.
 *
 * Each loss computes one double per element (or per labelled position) in
 * parallel, then reduces them in fixed chunks summed in chunk order, so the
 * loss is bit-identical for any thread count.  Backward rules are closed
 * forms: softmax minus the (smoothed) one-hot target; for BCE, softplus and
 * sigmoid terms arranged so that no two large numbers cancel (|x| = 100 stays
 * finite and keeps its e^-100 tail); 2(x - t) for MSE.
 */
#include "../core/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LOSS_CHUNK 4096

/* -------------------------------------------------------- shared machinery */

static an_status check_reduction(an_reduction reduction, const char *op)
{
    if (reduction != AN_REDUCTION_NONE && reduction != AN_REDUCTION_MEAN &&
        reduction != AN_REDUCTION_SUM)
        return an_set_error(AN_ERR_VALUE, "%s: reduction must be none, mean or sum, got code %d", op,
                            (int)reduction);
    return AN_OK;
}

/* Sum of v[0..n) in fixed chunks; partials has room for ceil(n/LOSS_CHUNK). */
static double fixed_order_sum(const double *v, int64_t n, double *partials)
{
    int64_t chunks = (n + LOSS_CHUNK - 1) / LOSS_CHUNK;
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t end = (c + 1) * LOSS_CHUNK < n ? (c + 1) * LOSS_CHUNK : n;
        double acc = 0.0;
        for (int64_t i = c * LOSS_CHUNK; i < end; i++)
            acc += v[i];
        partials[c] = acc;
    }
    double total = 0.0;
    for (int64_t c = 0; c < chunks; c++)
        total += partials[c];
    return total;
}

/* The loss tensor from per-element values: [shape] for none, else a 0-d
   sum or sum/divisor (0/0 = NaN for an empty mean, as in PyTorch). */
static an_tensor *reduce_losses(const double *losses, int64_t n, an_reduction reduction,
                                double divisor, int ndim, const int64_t *shape)
{
    if (reduction == AN_REDUCTION_NONE) {
        an_tensor *out = an_empty(ndim, shape);
        if (!out)
            return NULL;
        float *po = an_data_ptr(out);
        for (int64_t i = 0; i < n; i++)
            po[i] = (float)losses[i];
        return out;
    }
    double *partials = an_alloc((size_t)((n + LOSS_CHUNK - 1) / LOSS_CHUNK + 1) * sizeof *partials);
    if (!partials)
        return NULL;
    double total = fixed_order_sum(losses, n, partials);
    an_free(partials);
    if (reduction == AN_REDUCTION_MEAN)
        total /= divisor;
    return an_full(0, NULL, (float)total);
}

/* d(loss)/d(element i) scale: grad[i] for none, else one scalar. */
typedef struct {
    const float *per_element; /* NULL unless reduction is none */
    float scalar;
} upstream_grad;

static inline float upstream_at(const upstream_grad *u, int64_t i)
{
    return u->per_element ? u->per_element[i] : u->scalar;
}

static upstream_grad make_upstream(const an_tensor *grad, an_reduction reduction, double divisor)
{
    upstream_grad u = {NULL, 0.0f};
    const float *pg = an_data_ptr(grad);
    if (reduction == AN_REDUCTION_NONE)
        u.per_element = pg;
    else
        u.scalar = reduction == AN_REDUCTION_MEAN ? (float)(pg[0] / divisor) : pg[0];
    return u;
}

/* Checks that `t` broadcasts to exactly ref's shape; names both shapes. */
static an_status check_broadcasts_to(const an_tensor *t, const an_tensor *ref, const char *op,
                                     const char *arg, const char *ref_name)
{
    int nd;
    int64_t shape[AN_MAX_DIMS];
    int ok = t->ndim <= ref->ndim && an_broadcast_shapes(t, ref, op, &nd, shape) == AN_OK &&
             nd == ref->ndim && memcmp(shape, ref->shape, sizeof(int64_t) * (size_t)nd) == 0;
    if (ok)
        return AN_OK;
    char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
    return an_set_error(AN_ERR_VALUE,
                        "%s: %s of shape %s does not match %s of shape %s (it must have that shape "
                        "or broadcast to it)",
                        op, arg, an_shape_str(t->ndim, t->shape, a, sizeof a), ref_name,
                        an_shape_str(ref->ndim, ref->shape, b, sizeof b));
}

/* A contiguous tensor of ref's shape holding t broadcast (no autograd). */
static an_tensor *expand_contiguous(an_tensor *t, const an_tensor *ref)
{
    int64_t strides[AN_MAX_DIMS];
    for (int i = 0; i < ref->ndim; i++) {
        int j = t->ndim - ref->ndim + i;
        strides[i] = (j >= 0 && t->shape[j] == ref->shape[i]) ? t->strides[j] : 0;
    }
    an_tensor *view = an_make_view(t, ref->ndim, ref->shape, strides, t->offset);
    if (!view)
        return NULL;
    an_tensor *out = an_contiguous(view);
    an_release(view);
    return out;
}

/* Node bookkeeping shared by BCE and MSE: the original shapes of the
   broadcast arguments live in extra, their ndims in ints[1 + k]. */
static int64_t *save_shapes(an_node *node, an_tensor *const *args, int n)
{
    int64_t *shapes = calloc((size_t)n * AN_MAX_DIMS, sizeof *shapes);
    if (!shapes)
        return NULL;
    for (int k = 0; k < n; k++) {
        if (!args[k])
            continue;
        memcpy(shapes + k * AN_MAX_DIMS, args[k]->shape, sizeof(int64_t) * (size_t)args[k]->ndim);
        node->ints[1 + k] = args[k]->ndim;
    }
    node->extra = shapes;
    return shapes;
}

/* grad_inputs[k] = full summed back to argument k's original shape. */
static an_status reduce_to_argument(an_node *node, int k, an_tensor *full, an_tensor **grad_inputs)
{
    const int64_t *shapes = (const int64_t *)node->extra;
    grad_inputs[k] = an_sum_to_shape(full, (int)node->ints[1 + k], shapes + k * AN_MAX_DIMS);
    return grad_inputs[k] ? AN_OK : an_last_status();
}

static an_status record_failed(an_tensor *out, const char *op)
{
    if (!an_last_status())
        an_set_error(AN_ERR_MEMORY, "out of memory recording %s", op);
    an_release(out);
    return an_last_status();
}

/* ------------------------------------------------------------ cross entropy */

/* Logits [N, C, S...] seen as positions p = n*S + s, each a row of C
   log-probabilities at stride S. */
typedef struct {
    int64_t batch, classes, spatial;
} ce_layout;

static inline int64_t ce_row_base(const ce_layout *l, int64_t p)
{
    return (p / l->spatial) * l->classes * l->spatial + p % l->spatial;
}

/* Pure kernel: per-position loss, 0 for ignored labels.
   loss = -(1-eps) logp[y] - eps/C sum_c logp[c]  (PyTorch's label smoothing). */
static void cross_entropy_kernel(const float *logp, const int64_t *labels, const ce_layout *l,
                                 double smoothing, int64_t ignore_index, double *losses)
{
    int64_t positions = l->batch * l->spatial, C = l->classes, S = l->spatial;
#pragma omp parallel for schedule(static) if (positions * C > AN_PARALLEL_GRAIN)
    for (int64_t p = 0; p < positions; p++) {
        if (labels[p] == ignore_index) {
            losses[p] = 0.0;
            continue;
        }
        const float *row = logp + ce_row_base(l, p);
        double loss = -(1.0 - smoothing) * row[labels[p] * S];
        if (smoothing > 0.0) {
            double sum = 0.0;
            for (int64_t c = 0; c < C; c++)
                sum += row[c * S];
            loss -= smoothing / (double)C * sum;
        }
        losses[p] = loss;
    }
}

/* saved[0] = log-probabilities; extra = labels; ints[0] reduction,
   ints[1] ignore_index; reals[0] smoothing, reals[1] mean divisor. */
static an_status cross_entropy_backward(an_node *node, an_tensor *grad_output, an_tensor **grad_inputs)
{
    an_tensor *logp = node->saved[0];
    const int64_t *labels = (const int64_t *)node->extra;
    an_reduction reduction = (an_reduction)node->ints[0];
    int64_t ignore_index = node->ints[1];
    double smoothing = node->reals[0];
    ce_layout l = {logp->shape[0], logp->shape[1], 1};
    for (int d = 2; d < logp->ndim; d++)
        l.spatial *= logp->shape[d];
    an_tensor *g = an_contiguous(grad_output);
    an_tensor *dx = g ? an_empty_like(logp) : NULL;
    if (!dx) {
        an_release(g);
        return an_last_status();
    }
    upstream_grad u = make_upstream(g, reduction, node->reals[1]);
    const float *pl = an_data_ptr(logp);
    float *pd = an_data_ptr(dx);
    int64_t positions = l.batch * l.spatial, C = l.classes, S = l.spatial;
    float off_target = (float)(smoothing / (double)C);
#pragma omp parallel for schedule(static) if (positions * C > AN_PARALLEL_GRAIN)
    for (int64_t p = 0; p < positions; p++) {
        int64_t base = ce_row_base(&l, p);
        if (labels[p] == ignore_index) {
            for (int64_t c = 0; c < C; c++)
                pd[base + c * S] = 0.0f;
            continue;
        }
        /* softmax minus the smoothed one-hot target */
        float w = upstream_at(&u, p);
        for (int64_t c = 0; c < C; c++) {
            float target = off_target + (c == labels[p] ? (float)(1.0 - smoothing) : 0.0f);
            pd[base + c * S] = w * (expf(pl[base + c * S]) - target);
        }
    }
    an_release(g);
    grad_inputs[0] = dx;
    return AN_OK;
}

an_tensor *an_cross_entropy(an_tensor *logits, const int64_t *labels, int64_t n_labels,
                            an_reduction reduction, double label_smoothing, int64_t ignore_index)
{
    const char *op = "cross_entropy";
    char sbuf[AN_SHAPE_BUF];
    if (an_check_not_null(logits, op, "logits") || check_reduction(reduction, op))
        return NULL;
    if (logits->ndim < 2) {
        an_set_error(AN_ERR_VALUE, "%s: expected logits of shape [N, C] or [N, C, d1, ...], got %s",
                     op, an_shape_str(logits->ndim, logits->shape, sbuf, sizeof sbuf));
        return NULL;
    }
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0)) {
        an_set_error(AN_ERR_VALUE, "%s: label_smoothing must be in [0, 1], got %g", op, label_smoothing);
        return NULL;
    }
    ce_layout l = {logits->shape[0], logits->shape[1], 1};
    for (int d = 2; d < logits->ndim; d++)
        l.spatial *= logits->shape[d];
    int64_t positions = l.batch * l.spatial;
    if (n_labels != positions) {
        an_set_error(AN_ERR_VALUE,
                     "%s: got %lld labels but logits of shape %s need %lld (one per N*d1*... position)",
                     op, (long long)n_labels,
                     an_shape_str(logits->ndim, logits->shape, sbuf, sizeof sbuf), (long long)positions);
        return NULL;
    }
    if (positions > 0 && !labels) {
        an_set_error(AN_ERR_TYPE, "%s: labels must not be NULL", op);
        return NULL;
    }
    for (int64_t p = 0; p < positions; p++) {
        if (labels[p] != ignore_index && (labels[p] < 0 || labels[p] >= l.classes)) {
            an_set_error(AN_ERR_INDEX, "%s: label %lld at position %lld is out of range for %lld classes",
                         op, (long long)labels[p], (long long)p, (long long)l.classes);
            return NULL;
        }
    }

    /* log-probabilities from the public op, on a detached alias so that
       nothing is recorded for this intermediate */
    an_tensor *detached = an_detach(logits);
    an_tensor *logp = detached ? an_log_softmax(detached, 1) : NULL;
    an_release(detached);
    double *losses = logp ? an_alloc((size_t)(positions ? positions : 1) * sizeof *losses) : NULL;
    if (!losses) {
        an_release(logp);
        return NULL;
    }
    cross_entropy_kernel(an_data_ptr(logp), labels, &l, label_smoothing, ignore_index, losses);
    int64_t counted = 0;
    for (int64_t p = 0; p < positions; p++)
        counted += labels[p] != ignore_index;
    /* the unreduced loss has the logits' shape without the class dim */
    int64_t out_shape[AN_MAX_DIMS];
    out_shape[0] = l.batch;
    for (int d = 2; d < logits->ndim; d++)
        out_shape[d - 1] = logits->shape[d];
    an_tensor *out = reduce_losses(losses, positions, reduction, (double)counted, logits->ndim - 1,
                                   out_shape);
    an_free(losses);
    if (!out || !an_needs_grad(1, &logits)) {
        an_release(logp);
        return out;
    }
    int64_t *label_copy = malloc((size_t)(positions ? positions : 1) * sizeof *label_copy);
    an_node *node = label_copy ? an_record(out, "CrossEntropyBackward", cross_entropy_backward, 1,
                                           &logits)
                               : NULL;
    if (!node) {
        free(label_copy);
        an_release(logp);
        record_failed(out, op);
        return NULL;
    }
    if (positions)
        memcpy(label_copy, labels, (size_t)positions * sizeof *label_copy);
    node->extra = label_copy;
    node->ints[0] = reduction;
    node->ints[1] = ignore_index;
    node->reals[0] = label_smoothing;
    node->reals[1] = (double)counted;
    an_node_save(node, 0, logp);
    an_release(logp);
    return out;
}

/* ------------------------------------------------- BCE with logits */

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for any x. */
static inline double softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

/* sigmoid(x) with exp only of non-positive numbers. */
static inline double stable_sigmoid(double x)
{
    if (x >= 0.0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* Pure kernel.  With w the weight and p the pos_weight (1 when absent):
   loss = w [(1-t) softplus(x) + p t softplus(-x)]
   which is PyTorch's -w [p t log s(x) + (1-t) log(1 - s(x))], written so
   that no two large terms cancel (x = -100, t = 0 gives e^-100, not 0). */
static void bce_kernel(const float *x, const float *t, const float *w, const float *pw, int64_t n,
                       double *losses)
{
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        double xi = x[i], ti = t[i], wi = w ? w[i] : 1.0, pi = pw ? pw[i] : 1.0;
        losses[i] = wi * ((1.0 - ti) * softplus(xi) + pi * ti * softplus(-xi));
    }
}

/* saved: 0 logits, 1 target, 2 weight, 3 pos_weight (all of the logits'
   shape, contiguous; 2 and 3 may be NULL); ints[0] reduction,
   ints[1..4] argument ndims; reals[0] mean divisor. */
static an_status bce_backward(an_node *node, an_tensor *grad_output, an_tensor **grad_inputs)
{
    an_tensor *logits = node->saved[0];
    const float *x = an_data_ptr(logits), *t = an_data_ptr(node->saved[1]);
    const float *w = node->saved[2] ? an_data_ptr(node->saved[2]) : NULL;
    const float *pw = node->saved[3] ? an_data_ptr(node->saved[3]) : NULL;
    int64_t n = an_numel(logits);
    an_tensor *g = an_contiguous(grad_output);
    if (!g)
        return an_last_status();
    upstream_grad u = make_upstream(g, (an_reduction)node->ints[0], node->reals[0]);
    an_tensor *full[4] = {NULL, NULL, NULL, NULL};
    an_status status = AN_OK;
    for (int k = 0; k < 4 && status == AN_OK; k++)
        if (an_node_input_needs_grad(node, k) && !(full[k] = an_empty_like(logits)))
            status = an_last_status();
    if (status == AN_OK) {
        float *dx = full[0] ? an_data_ptr(full[0]) : NULL, *dt = full[1] ? an_data_ptr(full[1]) : NULL;
        float *dw = full[2] ? an_data_ptr(full[2]) : NULL, *dp = full[3] ? an_data_ptr(full[3]) : NULL;
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            double xi = x[i], ti = t[i], wi = w ? w[i] : 1.0, pi = pw ? pw[i] : 1.0;
            double up = upstream_at(&u, i);
            double sp_pos = softplus(xi), sp_neg = softplus(-xi);
            if (dx) /* (1-t) s(x) - p t s(-x) */
                dx[i] = (float)(up * wi * ((1.0 - ti) * stable_sigmoid(xi) - pi * ti * stable_sigmoid(-xi)));
            if (dt)
                dt[i] = (float)(up * wi * (pi * sp_neg - sp_pos));
            if (dw)
                dw[i] = (float)(up * ((1.0 - ti) * sp_pos + pi * ti * sp_neg));
            if (dp)
                dp[i] = (float)(up * wi * ti * sp_neg);
        }
        for (int k = 0; k < 4 && status == AN_OK; k++)
            if (full[k])
                status = reduce_to_argument(node, k, full[k], grad_inputs);
    }
    for (int k = 0; k < 4; k++)
        an_release(full[k]);
    an_release(g);
    return status;
}

an_tensor *an_binary_cross_entropy_with_logits(an_tensor *logits, an_tensor *target,
                                               an_tensor *weight, an_tensor *pos_weight,
                                               an_reduction reduction)
{
    const char *op = "binary_cross_entropy_with_logits";
    if (an_check_not_null(logits, op, "logits") || an_check_not_null(target, op, "target") ||
        check_reduction(reduction, op) || check_broadcasts_to(target, logits, op, "target", "logits") ||
        (weight && check_broadcasts_to(weight, logits, op, "weight", "logits")) ||
        (pos_weight && check_broadcasts_to(pos_weight, logits, op, "pos_weight", "logits")))
        return NULL;
    an_tensor *args[4] = {logits, target, weight, pos_weight};
    an_tensor *dense[4] = {NULL, NULL, NULL, NULL}; /* contiguous, logits-shaped, no autograd */
    an_tensor *out = NULL;
    double *losses = NULL;
    int64_t n = an_numel(logits);
    int ok = 1;
    for (int k = 0; k < 4 && ok; k++)
        if (args[k] && !(dense[k] = expand_contiguous(args[k], logits)))
            ok = 0;
    if (ok && (losses = an_alloc((size_t)(n ? n : 1) * sizeof *losses))) {
        bce_kernel(an_data_ptr(dense[0]), an_data_ptr(dense[1]),
                   dense[2] ? an_data_ptr(dense[2]) : NULL, dense[3] ? an_data_ptr(dense[3]) : NULL, n,
                   losses);
        out = reduce_losses(losses, n, reduction, (double)n, logits->ndim, logits->shape);
    }
    an_free(losses);
    if (out && an_needs_grad(4, args)) {
        an_node *node = an_record(out, "BinaryCrossEntropyWithLogitsBackward", bce_backward, 4, args);
        if (!node || !save_shapes(node, args, 4)) {
            record_failed(out, op);
            out = NULL;
        } else {
            node->ints[0] = reduction;
            node->reals[0] = (double)n;
            for (int k = 0; k < 4; k++)
                an_node_save(node, k, dense[k]);
        }
    }
    for (int k = 0; k < 4; k++)
        an_release(dense[k]);
    return out;
}

/* ------------------------------------------------------------------- MSE */

/* saved[0] = x - t (input's shape); ints[0] reduction, ints[1..2] ndims;
   reals[0] mean divisor.  d/dx = 2 (x - t), d/dt = -2 (x - t). */
static an_status mse_backward(an_node *node, an_tensor *grad_output, an_tensor **grad_inputs)
{
    an_tensor *diff = node->saved[0];
    const float *pd = an_data_ptr(diff);
    int64_t n = an_numel(diff);
    an_tensor *g = an_contiguous(grad_output);
    an_tensor *dx = g ? an_empty_like(diff) : NULL;
    if (!dx) {
        an_release(g);
        return an_last_status();
    }
    upstream_grad u = make_upstream(g, (an_reduction)node->ints[0], node->reals[0]);
    float *px = an_data_ptr(dx);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++)
        px[i] = 2.0f * pd[i] * upstream_at(&u, i);
    an_status status = AN_OK;
    if (an_node_input_needs_grad(node, 1)) {
        an_tensor *neg = an_neg(dx);
        status = neg ? reduce_to_argument(node, 1, neg, grad_inputs) : an_last_status();
        an_release(neg);
    }
    if (status == AN_OK && an_node_input_needs_grad(node, 0)) {
        grad_inputs[0] = dx;
        dx = NULL;
    }
    an_release(dx);
    an_release(g);
    return status;
}

an_tensor *an_mse_loss(an_tensor *input, an_tensor *target, an_reduction reduction)
{
    const char *op = "mse_loss";
    if (an_check_not_null(input, op, "input") || an_check_not_null(target, op, "target") ||
        check_reduction(reduction, op) || check_broadcasts_to(target, input, op, "target", "input"))
        return NULL;
    an_tensor *x = an_contiguous(input);
    an_tensor *t = x ? expand_contiguous(target, input) : NULL;
    an_tensor *diff = t ? an_empty_like(input) : NULL;
    int64_t n = an_numel(input);
    double *losses = diff ? an_alloc((size_t)(n ? n : 1) * sizeof *losses) : NULL;
    an_tensor *out = NULL;
    if (losses) {
        const float *px = an_data_ptr(x), *pt = an_data_ptr(t);
        float *pd = an_data_ptr(diff);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            pd[i] = px[i] - pt[i];
            losses[i] = (double)pd[i] * pd[i];
        }
        out = reduce_losses(losses, n, reduction, (double)n, input->ndim, input->shape);
    }
    an_free(losses);
    an_release(x);
    an_release(t);
    an_tensor *args[2] = {input, target};
    if (out && an_needs_grad(2, args)) {
        an_node *node = an_record(out, "MseLossBackward", mse_backward, 2, args);
        if (!node || !save_shapes(node, args, 2)) {
            record_failed(out, op);
            out = NULL;
        } else {
            node->ints[0] = reduction;
            node->reals[0] = (double)n;
            an_node_save(node, 0, diff);
        }
    }
    an_release(diff);
    return out;
}
