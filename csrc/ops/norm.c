/* norm.c — batch normalisation over dim 1 of [N, C, ...] with autograd.

   Training normalises with the batch statistics and updates the running
   statistics in place (momentum, unbiased variance); eval normalises with
   the running statistics, which the backward then treats as constants.

   An optional ReLU / ReLU6 is fused in (an_batch_norm_act): the pass that
   normalises also activates, and one backward node masks the incoming
   gradient with the saved output inside batch norm's own passes, so the
   pre-activation tensor and its gradient never exist.  Gradients are
   written into uninitialised tensors (the kernels overwrite), not added to
   zeroed ones. */
#include "../core/internal.h"
#include "../kernels/batchnorm.h"
#include <stdlib.h>
#include <string.h>

/* Input viewed as [N, C, HW]. */
typedef struct {
    int64_t N, C, HW;
} bn_geometry;

/* A per-channel vector argument must be 1-D of length C. */
static an_status check_channel_vector(const an_tensor *t, const an_tensor *x, int64_t C, const char *arg)
{
    if (!t)
        return AN_OK;
    if (t->ndim != 1 || t->shape[0] != C) {
        char st[AN_SHAPE_BUF], sx[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE,
                            "batch_norm: expected %s of shape [%lld] (the channels of input %s), got %s",
                            arg, (long long)C, an_shape_str(x->ndim, x->shape, sx, sizeof sx),
                            an_shape_str(t->ndim, t->shape, st, sizeof st));
    }
    return AN_OK;
}

/* Writes values[C] into the running-statistics tensor t (any strides). */
static an_status store_channel_vector(an_tensor *t, const float *values)
{
    if (an_is_contiguous(t)) {
        memcpy(an_data_ptr(t), values, sizeof(float) * (size_t)t->shape[0]);
        return AN_OK;
    }
    an_tensor *tmp = an_from_data(1, values, t->shape);
    if (!tmp)
        return an_last_status();
    an_status st = an_copy_(t, tmp);
    an_release(tmp);
    return st;
}

/* running = (1 - m) * running + m * batch_stat; the variance is made
   unbiased (M / (M - 1)) first, as PyTorch does. */
static an_status update_running_stats(an_tensor *running_mean, an_tensor *running_var,
                                      const float *mean, const float *var_biased, int64_t C,
                                      int64_t M, double momentum)
{
    an_tensor *rm = an_contiguous(running_mean), *rv = rm ? an_contiguous(running_var) : NULL;
    float *new_mean = malloc(sizeof(float) * (size_t)(2 * C + 1));
    an_status st = AN_OK;
    if (!rm || !rv || !new_mean) {
        st = new_mean ? an_last_status()
                      : an_set_error(AN_ERR_MEMORY, "batch_norm: out of memory updating running stats");
    } else {
        float *new_var = new_mean + C;
        const float *pm = an_data_ptr(rm), *pv = an_data_ptr(rv);
        double unbias = (double)M / (double)(M - 1);
        for (int64_t c = 0; c < C; c++) {
            new_mean[c] = (float)((1.0 - momentum) * pm[c] + momentum * mean[c]);
            new_var[c] = (float)((1.0 - momentum) * pv[c] + momentum * var_biased[c] * unbias);
        }
        st = store_channel_vector(running_mean, new_mean);
        if (!st)
            st = store_channel_vector(running_var, new_var);
    }
    free(new_mean);
    an_release(rm);
    an_release(rv);
    return st;
}

/* The op's grad_fn names, by an_activation. */
static const char *const NODE_NAMES[] = {"NativeBatchNormBackward", "NativeBatchNormReluBackward",
                                         "NativeBatchNormRelu6Backward"};

/* inputs: x, weight, bias.  saved[0] = x (contiguous), saved[1] = weight,
   saved[2] = mean [C], saved[3] = invstd [C] (training) or the running
   variance [C] (eval, with eps in reals[0]); with an activation, saved[4] =
   the output (eval: a detached alias, for the mask) or saved[5] = the bias
   (training: the mask is recomputed from x, NULL bias means 0).
   ints: training, N, C, HW, kernel activation. */
static an_status batch_norm_backward(an_node *node, an_tensor *grad, an_tensor **grad_inputs)
{
    an_tensor *x = node->saved[0], *w = node->saved[1];
    an_tensor *mean = node->saved[2], *stat = node->saved[3], *y = node->saved[4];
    an_tensor *b = node->saved[5];
    int training = (int)node->ints[0];
    bn_geometry g = {node->ints[1], node->ints[2], node->ints[3]};
    an_bn_activation act = (an_bn_activation)node->ints[4];
    an_tensor *gc = an_contiguous(grad), *dx = NULL, *dw = NULL, *db = NULL;
    an_status st = gc ? AN_OK : an_last_status();
    int64_t cshape[1] = {g.C};
    if (!st && an_node_input_needs_grad(node, 0) && !(dx = an_empty(x->ndim, x->shape)))
        st = an_last_status();
    if (!st && an_node_input_needs_grad(node, 1) && !(dw = an_empty(1, cshape)))
        st = an_last_status();
    if (!st && an_node_input_needs_grad(node, 2) && !(db = an_empty(1, cshape)))
        st = an_last_status();
    if (!st && (dx || dw || db)) {
        const float *gamma = w ? an_data_ptr(w) : NULL, *py = y ? an_data_ptr(y) : NULL;
        const float *beta = b ? an_data_ptr(b) : NULL;
        float *pdx = dx ? an_data_ptr(dx) : NULL, *pdw = dw ? an_data_ptr(dw) : NULL;
        float *pdb = db ? an_data_ptr(db) : NULL;
        if (training) {
            double *work = an_alloc(sizeof(double) *
                                    (size_t)an_batchnorm_backward_train_workspace(g.N, g.C));
            if (!work)
                st = an_set_error(AN_ERR_MEMORY, "batch_norm backward: out of memory");
            else
                an_batchnorm_backward_train_f32(an_data_ptr(gc), act, an_data_ptr(x),
                                                an_data_ptr(mean), an_data_ptr(stat), gamma, beta,
                                                g.N, g.C, g.HW, pdx, pdw, pdb, work);
            an_free(work);
        } else
            an_batchnorm_backward_eval_f32(an_data_ptr(gc), py, act, an_data_ptr(x),
                                           an_data_ptr(mean), an_data_ptr(stat), gamma,
                                           (float)node->reals[0], g.N, g.C, g.HW, pdx, pdw, pdb);
    }
    an_release(gc);
    return an_finish_backward3(st, grad_inputs, dx, dw, db);
}

/* The kernels' activation for a public one; an error for a value outside the enum
   (a C caller may pass any int). */
static an_status kernel_activation(an_activation act, an_bn_activation *out)
{
    switch (act) {
    case AN_ACTIVATION_NONE:
        *out = AN_BN_IDENTITY;
        return AN_OK;
    case AN_ACTIVATION_RELU:
        *out = AN_BN_RELU;
        return AN_OK;
    case AN_ACTIVATION_RELU6:
        *out = AN_BN_RELU6;
        return AN_OK;
    }
    return an_set_error(AN_ERR_VALUE, "batch_norm: unknown activation %d (expected none, relu or relu6)",
                        (int)act);
}

static an_status batch_norm_check(const an_tensor *x, const an_tensor *running_mean,
                                  const an_tensor *running_var, const an_tensor *weight,
                                  const an_tensor *bias, int training, double momentum, double eps,
                                  bn_geometry *g)
{
    char sx[AN_SHAPE_BUF];
    if (an_check_not_null(x, "batch_norm", "input"))
        return AN_ERR_TYPE;
    if (x->ndim < 2)
        return an_set_error(AN_ERR_VALUE, "batch_norm: expected input of shape [N, C, ...] (at least 2-D), got %s",
                            an_shape_str(x->ndim, x->shape, sx, sizeof sx));
    g->N = x->shape[0];
    g->C = x->shape[1];
    g->HW = 1;
    for (int d = 2; d < x->ndim; d++)
        g->HW *= x->shape[d];
    if (check_channel_vector(weight, x, g->C, "weight") || check_channel_vector(bias, x, g->C, "bias") ||
        check_channel_vector(running_mean, x, g->C, "running_mean") ||
        check_channel_vector(running_var, x, g->C, "running_var"))
        return AN_ERR_VALUE;
    if (!running_mean != !running_var)
        return an_set_error(AN_ERR_VALUE, "batch_norm: running_mean and running_var must be given together");
    if (!training && !running_mean)
        return an_set_error(AN_ERR_VALUE,
                            "batch_norm: running_mean and running_var are required in eval mode (training=False)");
    if (!(eps >= 0.0))
        return an_set_error(AN_ERR_VALUE, "batch_norm: eps must be >= 0, got %g", eps);
    if (training && !(momentum >= 0.0 && momentum <= 1.0))
        return an_set_error(AN_ERR_VALUE, "batch_norm: momentum must be in [0, 1], got %g", momentum);
    int64_t per_channel = g->N * g->HW;
    if (training && per_channel == 1)
        return an_set_error(AN_ERR_VALUE,
                            "batch_norm: expected more than 1 value per channel when training, got input of shape %s",
                            an_shape_str(x->ndim, x->shape, sx, sizeof sx));
    return AN_OK;
}

an_tensor *an_batch_norm(an_tensor *x, an_tensor *running_mean, an_tensor *running_var,
                         an_tensor *weight, an_tensor *bias, int training, double momentum, double eps)
{
    return an_batch_norm_act(x, running_mean, running_var, weight, bias, training, momentum, eps,
                             AN_ACTIVATION_NONE);
}

/* an_batch_norm_act; in training with `moments` (x's plane moments, from
   the convolution that wrote x) the statistics come from them instead of
   a pass over x: the same bits either way. */
static an_tensor *batch_norm_core(an_tensor *x, an_tensor *running_mean, an_tensor *running_var,
                                  an_tensor *weight, an_tensor *bias, int training,
                                  double momentum, double eps, an_activation activation,
                                  const double *moments)
{
    bn_geometry g = {0, 0, 0};
    an_bn_activation act = AN_BN_IDENTITY;
    if (kernel_activation(activation, &act) ||
        batch_norm_check(x, running_mean, running_var, weight, bias, training, momentum, eps, &g))
        return NULL;
    int64_t cshape[1] = {g.C}, M = g.N * g.HW;
    an_tensor *xc = an_contiguous(x);
    an_tensor *wc = xc && weight ? an_contiguous(weight) : NULL;
    an_tensor *bc = xc && bias ? an_contiguous(bias) : NULL;
    /* training: batch mean and invstd; eval: copies of the running stats,
       taken now so later updates of the buffers cannot change the backward */
    an_tensor *mean = xc ? an_empty(1, cshape) : NULL;
    an_tensor *stat = mean ? an_empty(1, cshape) : NULL;
    an_tensor *out = stat ? an_empty(x->ndim, x->shape) : NULL;
    an_status st = (out && (wc || !weight) && (bc || !bias)) ? AN_OK : an_last_status();
    const float *gamma = wc ? an_data_ptr(wc) : NULL, *beta = bc ? an_data_ptr(bc) : NULL;
    if (!st && training && M > 0) {
        float *var = malloc(sizeof(float) * (size_t)(g.C + 1));
        double *own = var && !moments ? an_alloc(sizeof(double) * 2 * (size_t)(g.N * g.C)) : NULL;
        if (!var || (!moments && !own)) {
            free(var);
            var = NULL;
            st = an_set_error(AN_ERR_MEMORY, "batch_norm: out of memory");
        } else {
            if (moments)
                an_batchnorm_stats_from_moments(moments, g.N, g.C, g.HW, an_data_ptr(mean), var);
            else
                an_batchnorm_stats_f32(an_data_ptr(xc), g.N, g.C, g.HW, own, an_data_ptr(mean), var);
            an_free(own);
            an_batchnorm_forward_train_f32(an_data_ptr(xc), an_data_ptr(mean), var, gamma, beta, (float)eps,
                                           act, g.N, g.C, g.HW, an_data_ptr(out), an_data_ptr(stat));
            if (running_mean)
                st = update_running_stats(running_mean, running_var, an_data_ptr(mean), var, g.C, M,
                                          momentum);
            free(var);
        }
    } else if (!st && !training) {
        if (!(st = an_copy_(mean, running_mean)) && !(st = an_copy_(stat, running_var)))
            an_batchnorm_forward_eval_f32(an_data_ptr(xc), an_data_ptr(mean), an_data_ptr(stat), gamma,
                                          beta, (float)eps, act, g.N, g.C, g.HW, an_data_ptr(out));
    }
    /* (training on an empty batch: nothing to normalise, running stats untouched) */
    an_tensor *inputs[3] = {x, weight, bias};
    if (!st && an_needs_grad(3, inputs)) {
        an_node *node = an_record(out, NODE_NAMES[activation], batch_norm_backward, 3, inputs);
        an_tensor *sx = node ? an_detach(xc) : NULL;
        an_tensor *sw = sx && wc ? an_detach(wc) : NULL;
        /* The activation's mask: in training the backward recomputes the
           pre-activation from x and needs beta; in eval it reads the output
           (a detached alias: saving `out` itself would make a reference cycle). */
        int keep_y = act != AN_BN_IDENTITY && !training, keep_b = act != AN_BN_IDENTITY && training && bc;
        an_tensor *sy = sx && keep_y ? an_detach(out) : NULL;
        an_tensor *sb = sx && keep_b ? an_detach(bc) : NULL;
        if (!sx || (wc && !sw) || (keep_y && !sy) || (keep_b && !sb)) {
            st = an_last_status();
        } else {
            an_node_save(node, 0, sx);
            an_node_save(node, 1, sw);
            an_node_save(node, 2, mean);
            an_node_save(node, 3, stat);
            if (sy)
                an_node_save(node, 4, sy);
            if (sb)
                an_node_save(node, 5, sb);
            node->ints[0] = training;
            node->ints[1] = g.N, node->ints[2] = g.C, node->ints[3] = g.HW;
            node->ints[4] = act;
            node->reals[0] = eps;
        }
        an_release(sx);
        an_release(sw);
        an_release(sy);
        an_release(sb);
    }
    an_release(bc);
    an_release(xc);
    an_release(wc);
    an_release(mean);
    an_release(stat);
    if (st) {
        an_release(out);
        return NULL;
    }
    return out;
}

an_tensor *an_batch_norm_act(an_tensor *x, an_tensor *running_mean, an_tensor *running_var,
                             an_tensor *weight, an_tensor *bias, int training, double momentum,
                             double eps, an_activation activation)
{
    return batch_norm_core(x, running_mean, running_var, weight, bias, training, momentum, eps,
                           activation, NULL);
}

an_tensor *an_batch_norm_act_with_moments(an_tensor *x, an_tensor *running_mean,
                                          an_tensor *running_var, an_tensor *weight,
                                          an_tensor *bias, double momentum, double eps,
                                          an_activation activation, const double *moments)
{
    return batch_norm_core(x, running_mean, running_var, weight, bias, 1, momentum, eps,
                           activation, moments);
}
