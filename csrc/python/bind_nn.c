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

/* The convolution's tensors and pairs, as conv2d and conv2d_batch_norm take
   them; -1 with the exception set. */
static int conv_arguments(PyObject *x_obj, PyObject *w_obj, PyObject *b_obj, PyObject *stride_obj,
                          PyObject *padding_obj, PyObject *dilation_obj, an_tensor **x,
                          an_tensor **w, an_tensor **b, int64_t stride[2], int64_t padding[2],
                          int64_t dilation[2])
{
    if (an_py_pair(stride_obj, "conv2d", "stride", stride) ||
        an_py_pair(padding_obj, "conv2d", "padding", padding) ||
        an_py_pair(dilation_obj, "conv2d", "dilation", dilation))
        return -1;
    int ok = 1;
    *x = an_py_unwrap(x_obj, "conv2d", "input");
    *w = *x ? an_py_unwrap(w_obj, "conv2d", "weight") : NULL;
    *b = *w ? an_py_unwrap_optional(b_obj, "conv2d", "bias", &ok) : NULL;
    return *x && *w && ok ? 0 : -1;
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
    an_tensor *x, *w, *b;
    if (conv_arguments(x_obj, w_obj, b_obj, stride_obj, padding_obj, dilation_obj, &x, &w, &b,
                       stride, padding, dilation))
        return NULL;
    int ok = 1;
    an_tensor *r = an_py_unwrap_optional(residual_obj, "conv2d", "residual", &ok);
    an_tensor *pk = ok ? an_py_unwrap_optional(packed_obj, "conv2d", "packed_weight", &ok) : NULL;
    if (!ok)
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

/* block_chain(blocks): a chain of inverted-residual blocks (see
   an_block_chain_create), as a capsule for block_chain_run.  Each block is
   a tuple of conv_pw_dw_pw's arguments but the input, with the residual
   replaced by whether the block's input is its residual:
   (w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, residual_from_input,
    act2[, ws, ps, bs]). */
static const char *const block_chain_capsule = "appealnet.block_chain";

static void free_block_chain(PyObject *capsule)
{
    an_block_chain_free(PyCapsule_GetPointer(capsule, block_chain_capsule));
}

static PyObject *py_block_chain(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "block_chain: expected a sequence of block tuples");
    if (!seq)
        return NULL;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    an_pw_dw_pw_block *blocks = PyMem_Calloc(count ? (size_t)count : 1, sizeof *blocks);
    if (!blocks) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    static const char *const names[11] = {"expansion weight", "packed expansion weight",
                                          "expansion bias", "depthwise weight", "depthwise bias",
                                          "projection weight", "packed projection weight",
                                          "projection bias", "shortcut weight",
                                          "packed shortcut weight", "shortcut bias"};
    static const int required[11] = {0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0};
    int ok = 1;
    for (Py_ssize_t i = 0; i < count && ok; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *objs[11] = {NULL};
        const char *act_names[3];
        long long stride;
        int from_input;
        ok = PyTuple_Check(item) &&
             PyArg_ParseTuple(item, "OOOzOOLzOOOpz|OOO:block_chain", &objs[0], &objs[1],
                              &objs[2], &act_names[0], &objs[3], &objs[4], &stride,
                              &act_names[1], &objs[5], &objs[6], &objs[7], &from_input,
                              &act_names[2], &objs[8], &objs[9], &objs[10]);
        if (!ok) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "block_chain: block %zd is not a tuple", i);
            break;
        }
        an_activation acts[3];
        for (int a = 0; a < 3 && ok; a++)
            ok = parse_activation(act_names[a], "block_chain", &acts[a]) == 0;
        an_tensor *t[11] = {NULL};
        for (int j = 0; j < 11 && ok; j++) {
            if (!objs[j])
                continue;
            t[j] = required[j] ? an_py_unwrap(objs[j], "block_chain", names[j])
                               : an_py_unwrap_optional(objs[j], "block_chain", names[j], &ok);
            ok = ok && (!required[j] || t[j]);
        }
        if (!ok)
            break;
        const an_pw_dw_pw_block block = {t[0], t[1], t[2], acts[0], t[3], t[4], (int64_t)stride,
                                         acts[1], t[5], t[6], t[7], from_input, t[8], t[9], t[10],
                                         acts[2]};
        blocks[i] = block;
    }
    an_block_chain *chain = NULL;
    if (ok)
        chain = an_block_chain_create((int64_t)count, blocks);
    PyMem_Free(blocks);
    Py_DECREF(seq);
    if (!ok)
        return NULL;
    if (!chain)
        return an_py_raise();
    PyObject *capsule = PyCapsule_New(chain, block_chain_capsule, free_block_chain);
    if (!capsule)
        an_block_chain_free(chain);
    return capsule;
}

static an_block_chain *unwrap_block_chain(PyObject *obj)
{
    an_block_chain *chain = PyCapsule_IsValid(obj, block_chain_capsule)
                                ? PyCapsule_GetPointer(obj, block_chain_capsule)
                                : NULL;
    if (!chain)
        PyErr_Format(PyExc_TypeError, "block_chain_run: expected a chain from block_chain, got %s",
                     Py_TYPE(obj)->tp_name);
    return chain;
}

/* block_chain_run(chain, x): the chain's blocks on x, one after another. */
static PyObject *py_block_chain_run(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *chain_obj, *x_obj;
    if (!PyArg_ParseTuple(args, "OO:block_chain_run", &chain_obj, &x_obj))
        return NULL;
    an_block_chain *chain = unwrap_block_chain(chain_obj);
    an_tensor *x = chain ? an_py_unwrap(x_obj, "block_chain_run", "input") : NULL;
    if (!x)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_block_chain_run(chain, x));
    return an_py_wrap(out);
}

/* block_chain_in_one_region(chain, shape): whether block_chain_run on an
   input of this shape runs every block in one parallel region. */
static PyObject *py_block_chain_in_one_region(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *chain_obj;
    long long n, c, h, w;
    if (!PyArg_ParseTuple(args, "O(LLLL):block_chain_in_one_region", &chain_obj, &n, &c, &h, &w))
        return NULL;
    an_block_chain *chain = unwrap_block_chain(chain_obj);
    if (!chain)
        return NULL;
    const int64_t shape[4] = {n, c, h, w};
    return PyBool_FromLong(an_block_chain_in_one_region(chain, 4, shape));
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

/* conv2d_batch_norm(x, weight, bias | None, stride, padding, dilation, groups,
                     running_mean | None, running_var | None, gamma | None,
                     beta | None, training, momentum, eps, activation=None):
   batch_norm(conv2d(x, ...), ...) with the statistics from the moments the
   convolution computes as it writes its output (an_conv2d_batch_norm_act). */
static PyObject *py_conv2d_batch_norm(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *w_obj, *b_obj, *stride_obj, *padding_obj, *dilation_obj;
    PyObject *rm_obj, *rv_obj, *g_obj, *beta_obj;
    long long groups;
    int training;
    double momentum, eps;
    const char *activation = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOLOOOOpdd|z:conv2d_batch_norm", &x_obj, &w_obj, &b_obj,
                          &stride_obj, &padding_obj, &dilation_obj, &groups, &rm_obj, &rv_obj,
                          &g_obj, &beta_obj, &training, &momentum, &eps, &activation))
        return NULL;
    an_activation act;
    if (parse_activation(activation, "batch_norm", &act))
        return NULL;
    int64_t stride[2], padding[2], dilation[2];
    an_tensor *x, *w, *b;
    if (conv_arguments(x_obj, w_obj, b_obj, stride_obj, padding_obj, dilation_obj, &x, &w, &b,
                       stride, padding, dilation))
        return NULL;
    int ok = 1;
    an_tensor *rm = an_py_unwrap_optional(rm_obj, "batch_norm", "running_mean", &ok);
    an_tensor *rv = ok ? an_py_unwrap_optional(rv_obj, "batch_norm", "running_var", &ok) : NULL;
    an_tensor *g = ok ? an_py_unwrap_optional(g_obj, "batch_norm", "weight", &ok) : NULL;
    an_tensor *beta = ok ? an_py_unwrap_optional(beta_obj, "batch_norm", "bias", &ok) : NULL;
    if (!ok)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_conv2d_batch_norm_act(x, w, b, stride, padding, dilation, (int64_t)groups, rm,
                                            rv, g, beta, training, momentum, eps, act));
    return an_py_wrap(out);
}

/* conv2d_algorithm(input_shape, weight_shape, stride, padding, dilation, groups) */
static PyObject *py_conv2d_algorithm(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *xs_obj, *ws_obj, *stride_obj, *padding_obj, *dilation_obj;
    long long groups;
    if (!PyArg_ParseTuple(args, "OOOOOL:conv2d_algorithm", &xs_obj, &ws_obj, &stride_obj,
                          &padding_obj, &dilation_obj, &groups))
        return NULL;
    int64_t xs[4], ws[4], stride[2], padding[2], dilation[2];
    PyObject *shapes[2] = {xs_obj, ws_obj};
    int64_t *outs[2] = {xs, ws};
    for (int t = 0; t < 2; t++) {
        PyObject *seq = PySequence_Fast(shapes[t], "conv2d_algorithm: a shape must be a sequence");
        if (!seq)
            return NULL;
        if (PySequence_Fast_GET_SIZE(seq) != 4) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "conv2d_algorithm: the %s shape must have 4 "
                                "dimensions", t ? "weight" : "input");
        }
        for (int d = 0; d < 4; d++) {
            long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, d));
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return NULL;
            }
            outs[t][d] = (int64_t)v;
        }
        Py_DECREF(seq);
    }
    if (an_py_pair(stride_obj, "conv2d", "stride", stride) ||
        an_py_pair(padding_obj, "conv2d", "padding", padding) ||
        an_py_pair(dilation_obj, "conv2d", "dilation", dilation))
        return NULL;
    const char *name = an_conv2d_algorithm(xs, ws, stride, padding, dilation, (int64_t)groups);
    if (!name)
        return an_py_raise();
    return PyUnicode_FromString(name);
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
    {"conv2d_algorithm", py_conv2d_algorithm, METH_VARARGS,
     "conv2d_algorithm(input_shape, weight_shape, stride, padding, dilation, groups): the "
     "implementation conv2d runs for these shapes"},
    {"conv2d_batch_norm", py_conv2d_batch_norm, METH_VARARGS,
     "conv2d_batch_norm(x, weight, bias, stride, padding, dilation, groups, running_mean, "
     "running_var, gamma, beta, training, momentum, eps, activation=None): batch_norm(conv2d(x)) "
     "with the statistics from moments the convolution computes as it writes its output"},
    {"conv_pw_dw_pw", py_conv_pw_dw_pw, METH_VARARGS,
     "conv_pw_dw_pw(x, w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, residual, act2, "
     "[ws, ps, bs]): "
     "an inverted-residual block (1x1, depthwise 3x3, 1x1) in one call, for inference"},
    {"block_chain", py_block_chain, METH_O,
     "block_chain(blocks): inverted-residual blocks, each reading the one before's output, "
     "for block_chain_run; each block (w1, p1, b1, act1, wd, bd, stride, actd, w2, p2, b2, "
     "residual_from_input, act2[, ws, ps, bs])"},
    {"block_chain_run", py_block_chain_run, METH_VARARGS,
     "block_chain_run(chain, x): the chain's blocks on x in one parallel region, for inference"},
    {"block_chain_in_one_region", py_block_chain_in_one_region, METH_VARARGS,
     "block_chain_in_one_region(chain, shape): whether block_chain_run on this input shape "
     "runs every block in one parallel region"},
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
