/* optim.c — in-place parameter updates of SGD and Adam/AdamW.
 *
 * The arithmetic follows torch.optim's single-tensor implementations step
 * by step (same order of operations, float32 state), so that a model
 * trained here and one trained in PyTorch stay numerically close.  Each
 * element's update is independent of every other element, so splitting the
 * loop over threads cannot change a single bit of the result.
 *
 * These updates are not recorded by autograd: they overwrite the data of a
 * leaf, which is what an optimizer step means.
 */
#include "../core/internal.h"

#include <math.h>

/* param, grad and every given buffer: same shape, contiguous (the kernels
   below walk flat arrays).  Non-contiguous tensors are refused rather than
   silently copied, because a copy would receive the update instead of the
   tensor the caller holds. */
static an_status check_update_operand(const an_tensor *param, const an_tensor *t, const char *op,
                                      const char *arg)
{
    if (an_check_not_null(t, op, arg))
        return an_last_status();
    if (!an_same_shape(param, t)) {
        char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE, "%s: %s has shape %s but param has shape %s", op, arg,
                            an_shape_str(t->ndim, t->shape, a, sizeof a),
                            an_shape_str(param->ndim, param->shape, b, sizeof b));
    }
    if (!an_is_contiguous(t)) {
        char a[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE, "%s: %s (shape %s) must be contiguous", op, arg,
                            an_shape_str(t->ndim, t->shape, a, sizeof a));
    }
    return AN_OK;
}

static an_status check_param(const an_tensor *param, const char *op)
{
    if (an_check_not_null(param, op, "param"))
        return an_last_status();
    return check_update_operand(param, param, op, "param");
}

/* ------------------------------------------------------------------ SGD */

/* d = grad + weight_decay * param;  buf = first ? d : momentum*buf + (1-dampening)*d;
   step = nesterov ? d + momentum*buf : buf;  param -= lr * step. */
static void sgd_momentum_kernel(float *param, const float *grad, float *buf, int64_t n, float lr,
                                float momentum, float dampening_keep, float weight_decay,
                                int nesterov, int first_step)
{
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float d = grad[i];
        if (weight_decay != 0.0f)
            d = d + weight_decay * param[i];
        float b = first_step ? d : buf[i] * momentum + dampening_keep * d;
        buf[i] = b;
        float step = nesterov ? d + momentum * b : b;
        param[i] = param[i] - lr * step;
    }
}

static void sgd_plain_kernel(float *param, const float *grad, int64_t n, float lr,
                             float weight_decay)
{
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float d = grad[i];
        if (weight_decay != 0.0f)
            d = d + weight_decay * param[i];
        param[i] = param[i] - lr * d;
    }
}

an_status an_sgd_step(an_tensor *param, an_tensor *grad, an_tensor *momentum_buffer,
                      double lr, double momentum, double dampening, double weight_decay,
                      int nesterov, int first_step)
{
    const char *op = "sgd_step";
    if (check_param(param, op) || check_update_operand(param, grad, op, "grad"))
        return an_last_status();
    if (!(lr >= 0.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid learning rate %g (must be >= 0)", op, lr);
    if (!(momentum >= 0.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid momentum %g (must be >= 0)", op, momentum);
    if (!(weight_decay >= 0.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid weight_decay %g (must be >= 0)", op,
                            weight_decay);
    if (nesterov && (momentum <= 0.0 || dampening != 0.0))
        return an_set_error(AN_ERR_VALUE,
                            "%s: nesterov momentum requires a momentum > 0 and zero dampening "
                            "(got momentum %g, dampening %g)", op, momentum, dampening);
    if (momentum != 0.0) {
        if (!momentum_buffer)
            return an_set_error(AN_ERR_VALUE, "%s: momentum %g needs a momentum_buffer", op,
                                momentum);
        if (check_update_operand(param, momentum_buffer, op, "momentum_buffer"))
            return an_last_status();
    }
    int64_t n = an_numel(param);
    if (n == 0)
        return AN_OK;
    if (momentum != 0.0)
        sgd_momentum_kernel(an_data_ptr(param), an_data_ptr(grad), an_data_ptr(momentum_buffer), n,
                            (float)lr, (float)momentum, (float)(1.0 - dampening),
                            (float)weight_decay, nesterov != 0, first_step != 0);
    else
        sgd_plain_kernel(an_data_ptr(param), an_data_ptr(grad), n, (float)lr, (float)weight_decay);
    return AN_OK;
}

/* ----------------------------------------------------------------- Adam */

typedef struct {
    float one_minus_beta1;     /* exp_avg moves this far towards grad */
    float beta2, one_minus_beta2;
    float coupled_decay;       /* Adam: added to grad as decay * param */
    float decoupled_keep;      /* AdamW: param *= 1 - lr * decay first */
    float step_size;           /* lr / (1 - beta1^step) */
    float bias_correction2_sqrt;
    float eps;
} adam_coefficients;

/* Vectorises when the compiler may assume sqrtf never sets errno
   (-fno-math-errno); without it GCC keeps a scalar call path for negative
   inputs.  The update is memory bound either way (five streams). */
static void adam_kernel(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                        int64_t n, const adam_coefficients *c)
{
    const float one_minus_beta1 = c->one_minus_beta1, beta2 = c->beta2,
                one_minus_beta2 = c->one_minus_beta2, coupled_decay = c->coupled_decay,
                decoupled_keep = c->decoupled_keep, step_size = c->step_size,
                bias_correction2_sqrt = c->bias_correction2_sqrt, eps = c->eps;
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float p = param[i] * decoupled_keep;
        /* a select, not a branch; the decay term is skipped rather than
           multiplied by 0 so that an inf param does not make the gradient
           NaN (PyTorch skips it too) */
        float g = coupled_decay != 0.0f ? grad[i] + coupled_decay * p : grad[i];
        float m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i]);
        float v = exp_avg_sq[i] * beta2 + one_minus_beta2 * (g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        float denom = sqrtf(v) / bias_correction2_sqrt + eps;
        param[i] = p - step_size * (m / denom);
    }
}

an_status an_adam_step(an_tensor *param, an_tensor *grad, an_tensor *exp_avg,
                       an_tensor *exp_avg_sq, int64_t step, double lr, double beta1,
                       double beta2, double eps, double weight_decay,
                       int decoupled_weight_decay)
{
    const char *op = decoupled_weight_decay ? "adamw_step" : "adam_step";
    if (check_param(param, op) || check_update_operand(param, grad, op, "grad") ||
        check_update_operand(param, exp_avg, op, "exp_avg") ||
        check_update_operand(param, exp_avg_sq, op, "exp_avg_sq"))
        return an_last_status();
    if (step < 1)
        return an_set_error(AN_ERR_VALUE, "%s: step counts from 1, got %lld", op, (long long)step);
    if (!(lr >= 0.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid learning rate %g (must be >= 0)", op, lr);
    if (!(beta1 >= 0.0 && beta1 < 1.0) || !(beta2 >= 0.0 && beta2 < 1.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid betas (%g, %g) (each must be in [0, 1))",
                            op, beta1, beta2);
    if (!(eps >= 0.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid eps %g (must be >= 0)", op, eps);
    if (!(weight_decay >= 0.0))
        return an_set_error(AN_ERR_VALUE, "%s: invalid weight_decay %g (must be >= 0)", op,
                            weight_decay);
    int64_t n = an_numel(param);
    if (n == 0)
        return AN_OK;
    /* Scalars in double, as torch computes them in Python floats. */
    adam_coefficients c;
    c.one_minus_beta1 = (float)(1.0 - beta1);
    c.beta2 = (float)beta2;
    c.one_minus_beta2 = (float)(1.0 - beta2);
    c.coupled_decay = decoupled_weight_decay ? 0.0f : (float)weight_decay;
    c.decoupled_keep = decoupled_weight_decay ? (float)(1.0 - lr * weight_decay) : 1.0f;
    c.step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    c.bias_correction2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    c.eps = (float)eps;
    adam_kernel(an_data_ptr(param), an_data_ptr(grad), an_data_ptr(exp_avg), an_data_ptr(exp_avg_sq),
                n, &c);
    return AN_OK;
}
