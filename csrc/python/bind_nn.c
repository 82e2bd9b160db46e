/* bind_nn.c — Python bindings of the nn ops: convolution, batch norm,
   pooling, dropout.  Argument orders match appealnet/nn/functional.py. */
#include "bindings.h"

/* None, "relu" or "relu6" -> *act; anything else is a ValueError (returns -1). */
static int parse_activation(const char *activation, const char *op, an_activation *act)
{
    *act = AN_ACTIVATION_NONE;
    if (!activation)
        return 0;
    if (strcmp(activation, "relu") == 0) {
        *act = AN_ACTIVATION_RELU;
        return 0;
    }
    if (strcmp(activation, "relu6") == 0) {
        *act = AN_ACTIVATION_RELU6;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "%s: unknown activation '%s' (expected None, 'relu' or 'relu6')", op,
                 activation);
    return -1;
}

/* conv2d(x, weight, bias | None, stride, padding, dilation, groups,
          activation=None, residual=None, packed_weight=None): activation
   None, "relu" or "relu6", and a residual of the output's shape added
   before it, applied in the same call (inference only: refused when an
   input requires grad); packed_weight from conv2d_pack_weight(weight). */
static PyObject *py_conv2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *w_obj, *b_obj, *stride_obj, *padding_obj, *dilation_obj;
    long long groups;
    const char *activation = NULL;
    PyObject *residual_obj = Py_None, *packed_obj = Py_None;
    if (!PyArg_ParseTuple(args, "OOOOOOL|zOO:conv2d", &x_obj, &w_obj, &b_obj, &stride_obj,
                          &padding_obj, &dilation_obj, &groups, &activation, &residual_obj,
                          &packed_obj))
        return NULL;
    an_activation act;
    if (parse_activation(activation, "conv2d", &act))
        return NULL;
    int64_t stride[2], padding[2], dilation[2];
    if (an_py_pair(stride_obj, "conv2d", "stride", stride) ||
        an_py_pair(padding_obj, "conv2d", "padding", padding) ||
        an_py_pair(dilation_obj, "conv2d", "dilation", dilation))
        return NULL;
    int ok = 1;
    an_tensor *x = an_py_unwrap(x_obj, "conv2d", "input");
    an_tensor *w = x ? an_py_unwrap(w_obj, "conv2d", "weight") : NULL;
    an_tensor *b = w ? an_py_unwrap_optional(b_obj, "conv2d", "bias", &ok) : NULL;
    an_tensor *r = w && ok ? an_py_unwrap_optional(residual_obj, "conv2d", "residual", &ok) : NULL;
    an_tensor *pk = w && ok ? an_py_unwrap_optional(packed_obj, "conv2d", "packed_weight", &ok) : NULL;
    if (!x || !w || !ok)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_conv2d_fused_prepacked(x, w, pk, b, stride, padding, dilation,
                                             (int64_t)groups, r, act));
    return an_py_wrap(out);
}

/* conv_pw_dw_pw(x, w1 | None, p1 | None, b1 | None, act1, wd, bd | None, stride,
                 actd, w2, p2 | None, b2 | None, residual | None, act2
                 [, ws | None, ps | None, bs | None]): activations None, "relu" or
   "relu6"; ws (with its packed copy ps and bias bs) the shortcut convolution
   whose output is the residual (see an_conv_pw_dw_pw_shortcut). */
static PyObject *py_conv_pw_dw_pw(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *objs[13] = {NULL};
    const char *act_names[3];
    long long stride;
    if (!PyArg_ParseTuple(args, "OOOOzOOLzOOOOz|OOO:conv_pw_dw_pw", &objs[0], &objs[1], &objs[2],
                          &objs[3], &act_names[0], &objs[4], &objs[5], &stride, &act_names[1],
                          &objs[6], &objs[7], &objs[8], &objs[9], &act_names[2], &objs[10],
                          &objs[11], &objs[12]))
        return NULL;
    an_activation acts[3];
    for (int i = 0; i < 3; i++)
        if (parse_activation(act_names[i], "conv_pw_dw_pw", &acts[i]))
            return NULL;
    static const char *const names[13] = {"input", "expansion weight", "packed expansion weight",
                                          "expansion bias", "depthwise weight", "depthwise bias",
                                          "projection weight", "packed projection weight",
                                          "projection bias", "residual", "shortcut weight",
                                          "packed shortcut weight", "shortcut bias"};
    static const int required[13] = {1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0};
    an_tensor *t[13];
    for (int i = 0; i < 13; i++) {
        int ok = 1;
        if (!objs[i]) {
            t[i] = NULL;
            continue;
        }
        t[i] = required[i] ? an_py_unwrap(objs[i], "conv_pw_dw_pw", names[i])
                           : an_py_unwrap_optional(objs[i], "conv_pw_dw_pw", names[i], &ok);
        if ((required[i] && !t[i]) || !ok)
            return NULL;
    }
    if (t[10] && t[9]) {
        PyErr_SetString(PyExc_ValueError, "conv_pw_dw_pw: pass a residual or a shortcut "
                                          "convolution, not both");
        return NULL;
    }
    if (!t[10] && (t[11] || t[12])) {
        PyErr_SetString(PyExc_ValueError, "conv_pw_dw_pw: a packed shortcut weight or a shortcut "
                                          "bias without the shortcut weight");
        return NULL;
    }
    an_tensor *out;
    if (t[10])
        AN_NOGIL(out = an_conv_pw_dw_pw_shortcut(t[0], t[1], t[2], t[3], acts[0], t[4], t[5],
                                                 (int64_t)stride, acts[1], t[6], t[7], t[8], t[10],
                                                 t[11], t[12], acts[2]));
    else
        AN_NOGIL(out = an_conv_pw_dw_pw(t[0], t[1], t[2], t[3], acts[0], t[4], t[5],
                                        (int64_t)stride, acts[1], t[6], t[7], t[8], t[9], acts[2]));
    return an_py_wrap(out);
}

static PyObject *py_conv2d_pack_weight(PyObject *self, PyObject *arg)
{
    (void)self;
    an_tensor *w = an_py_unwrap(arg, "conv2d_pack_weight", "weight");
    if (!w)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_conv2d_pack_weight(w));
    return an_py_wrap(out);
}

/* batch_norm(x, running_mean | None, running_var | None, weight | None,
              bias | None, training, momentum, eps, activation=None)
   activation: None, "relu" or "relu6", fused into the output pass. */
static PyObject *py_batch_norm(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *rm_obj, *rv_obj, *w_obj, *b_obj;
    int training;
    double momentum, eps;
    const char *activation = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOpdd|z:batch_norm", &x_obj, &rm_obj, &rv_obj, &w_obj, &b_obj,
                          &training, &momentum, &eps, &activation))
        return NULL;
    an_activation act;
    if (parse_activation(activation, "batch_norm", &act))
        return NULL;
    int ok = 1;
    an_tensor *x = an_py_unwrap(x_obj, "batch_norm", "input");
    if (!x)
        return NULL;
    an_tensor *rm = an_py_unwrap_optional(rm_obj, "batch_norm", "running_mean", &ok);
    an_tensor *rv = ok ? an_py_unwrap_optional(rv_obj, "batch_norm", "running_var", &ok) : NULL;
    an_tensor *w = ok ? an_py_unwrap_optional(w_obj, "batch_norm", "weight", &ok) : NULL;
    an_tensor *b = ok ? an_py_unwrap_optional(b_obj, "batch_norm", "bias", &ok) : NULL;
    if (!ok)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_batch_norm_act(x, rm, rv, w, b, training, momentum, eps, act));
    return an_py_wrap(out);
}

/* max_pool2d(x, kernel, stride, padding, dilation, ceil_mode) */
static PyObject *py_max_pool2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *k_obj, *s_obj, *p_obj, *d_obj;
    int ceil_mode;
    if (!PyArg_ParseTuple(args, "OOOOOp:max_pool2d", &x_obj, &k_obj, &s_obj, &p_obj, &d_obj, &ceil_mode))
        return NULL;
    int64_t kernel[2], stride[2], padding[2], dilation[2];
    if (an_py_pair(k_obj, "max_pool2d", "kernel_size", kernel) ||
        an_py_pair(s_obj, "max_pool2d", "stride", stride) ||
        an_py_pair(p_obj, "max_pool2d", "padding", padding) ||
        an_py_pair(d_obj, "max_pool2d", "dilation", dilation))
        return NULL;
    an_tensor *x = an_py_unwrap(x_obj, "max_pool2d", "input");
    if (!x)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_max_pool2d(x, kernel, stride, padding, dilation, ceil_mode));
    return an_py_wrap(out);
}

/* avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad) */
static PyObject *py_avg_pool2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *k_obj, *s_obj, *p_obj;
    int ceil_mode, count_include_pad;
    if (!PyArg_ParseTuple(args, "OOOOpp:avg_pool2d", &x_obj, &k_obj, &s_obj, &p_obj, &ceil_mode,
                          &count_include_pad))
        return NULL;
    int64_t kernel[2], stride[2], padding[2];
    if (an_py_pair(k_obj, "avg_pool2d", "kernel_size", kernel) ||
        an_py_pair(s_obj, "avg_pool2d", "stride", stride) ||
        an_py_pair(p_obj, "avg_pool2d", "padding", padding))
        return NULL;
    an_tensor *x = an_py_unwrap(x_obj, "avg_pool2d", "input");
    if (!x)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad));
    return an_py_wrap(out);
}

/* adaptive_avg_pool2d(x, (out_h, out_w)) */
static PyObject *py_adaptive_avg_pool2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *size_obj;
    if (!PyArg_ParseTuple(args, "OO:adaptive_avg_pool2d", &x_obj, &size_obj))
        return NULL;
    int64_t size[2];
    if (an_py_pair(size_obj, "adaptive_avg_pool2d", "output_size", size))
        return NULL;
    an_tensor *x = an_py_unwrap(x_obj, "adaptive_avg_pool2d", "input");
    if (!x)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_adaptive_avg_pool2d(x, size[0], size[1]));
    return an_py_wrap(out);
}

/* dropout(x, p, training) */
static PyObject *py_dropout(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj;
    double p;
    int training;
    if (!PyArg_ParseTuple(args, "Odp:dropout", &x_obj, &p, &training))
        return NULL;
    an_tensor *x = an_py_unwrap(x_obj, "dropout", "input");
    if (!x)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_dropout(x, p, training));
    return an_py_wrap(out);
}

PyMethodDef an_py_nn_methods[] = {
    {"conv2d", py_conv2d, METH_VARARGS,
     "conv2d(x, weight, bias, stride, padding, dilation, groups, activation=None, residual=None, "
     "packed_weight=None): NCHW convolution"},
    {"conv_pw_dw_pw", py_conv_pw_dw_pw, METH_VARARGS,
     "conv_pw_dw_pw(x, w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, residual, act2, "
     "[ws, ps, bs]): "
     "an inverted-residual block (1x1, depthwise 3x3, 1x1) in one call, for inference"},
    {"conv2d_pack_weight", py_conv2d_pack_weight, METH_O,
     "conv2d_pack_weight(weight): a 1x1 convolution's weight packed for inference "
     "(pass it to conv2d as packed_weight)"},
    {"batch_norm", py_batch_norm, METH_VARARGS,
     "batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, activation=None)"},
    {"max_pool2d", py_max_pool2d, METH_VARARGS,
     "max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)"},
    {"avg_pool2d", py_avg_pool2d, METH_VARARGS,
     "avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)"},
    {"adaptive_avg_pool2d", py_adaptive_avg_pool2d, METH_VARARGS,
     "adaptive_avg_pool2d(x, (out_h, out_w))"},
    {"dropout", py_dropout, METH_VARARGS, "dropout(x, p, training): inverted dropout"},
    {NULL, NULL, 0, NULL},
};
