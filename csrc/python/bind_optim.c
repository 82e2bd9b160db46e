/* bind_optim.c — Python bindings of the optimizer update loops. */
#include "bindings.h"

/* sgd_step(param, grad, momentum_buffer|None, lr, momentum, dampening,
            weight_decay, nesterov, first_step) -> None */
static PyObject *py_sgd_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *param_obj, *grad_obj, *buf_obj;
    double lr, momentum, dampening, weight_decay;
    int nesterov, first_step;
    if (!PyArg_ParseTuple(args, "OOOddddpp:sgd_step", &param_obj, &grad_obj, &buf_obj, &lr,
                          &momentum, &dampening, &weight_decay, &nesterov, &first_step))
        return NULL;
    an_tensor *param = an_py_unwrap(param_obj, "sgd_step", "param");
    if (!param)
        return NULL;
    an_tensor *grad = an_py_unwrap(grad_obj, "sgd_step", "grad");
    if (!grad)
        return NULL;
    int ok = 1;
    an_tensor *buf = an_py_unwrap_optional(buf_obj, "sgd_step", "momentum_buffer", &ok);
    if (!ok)
        return NULL;
    an_status status;
    AN_NOGIL(status = an_sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay,
                                  nesterov, first_step));
    if (status != AN_OK)
        return an_py_raise();
    Py_RETURN_NONE;
}

/* adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
             weight_decay, decoupled) -> None */
static PyObject *py_adam_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *param_obj, *grad_obj, *avg_obj, *avg_sq_obj;
    long long step;
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled;
    if (!PyArg_ParseTuple(args, "OOOOLdddddp:adam_step", &param_obj, &grad_obj, &avg_obj,
                          &avg_sq_obj, &step, &lr, &beta1, &beta2, &eps, &weight_decay, &decoupled))
        return NULL;
    an_tensor *param = an_py_unwrap(param_obj, "adam_step", "param");
    if (!param)
        return NULL;
    an_tensor *grad = an_py_unwrap(grad_obj, "adam_step", "grad");
    if (!grad)
        return NULL;
    an_tensor *exp_avg = an_py_unwrap(avg_obj, "adam_step", "exp_avg");
    if (!exp_avg)
        return NULL;
    an_tensor *exp_avg_sq = an_py_unwrap(avg_sq_obj, "adam_step", "exp_avg_sq");
    if (!exp_avg_sq)
        return NULL;
    an_status status;
    AN_NOGIL(status = an_adam_step(param, grad, exp_avg, exp_avg_sq, (int64_t)step, lr, beta1,
                                   beta2, eps, weight_decay, decoupled));
    if (status != AN_OK)
        return an_py_raise();
    Py_RETURN_NONE;
}

PyMethodDef an_py_optim_methods[] = {
    {"sgd_step", py_sgd_step, METH_VARARGS,
     "sgd_step(param, grad, momentum_buffer|None, lr, momentum, dampening, weight_decay, "
     "nesterov, first_step): in-place SGD update (not recorded)."},
    {"adam_step", py_adam_step, METH_VARARGS,
     "adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, "
     "decoupled): in-place Adam/AdamW update (not recorded)."},
    {NULL, NULL, 0, NULL},
};
