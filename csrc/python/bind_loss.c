/* bind_loss.c — Python bindings of the loss ops. */
#include "bindings.h"

#include <string.h>

/* "none" / "mean" / "sum" -> enum; -1 with ValueError otherwise. */
static int parse_reduction(const char *text, const char *op, an_reduction *out)
{
    if (!strcmp(text, "none"))
        *out = AN_REDUCTION_NONE;
    else if (!strcmp(text, "mean"))
        *out = AN_REDUCTION_MEAN;
    else if (!strcmp(text, "sum"))
        *out = AN_REDUCTION_SUM;
    else {
        PyErr_Format(PyExc_ValueError, "%s: reduction must be 'none', 'mean' or 'sum', got '%s'", op,
                     text);
        return -1;
    }
    return 0;
}

static PyObject *py_cross_entropy(PyObject *self, PyObject *args)
{
    (void)self;
    const char *op = "cross_entropy";
    PyObject *ologits, *olabels;
    const char *reduction_text;
    double smoothing;
    long long ignore_index;
    an_reduction reduction;
    if (!PyArg_ParseTuple(args, "OOsdL", &ologits, &olabels, &reduction_text, &smoothing,
                          &ignore_index) ||
        parse_reduction(reduction_text, op, &reduction))
        return NULL;
    an_tensor *logits = an_py_unwrap(ologits, op, "logits"), *out;
    if (!logits)
        return NULL;
    PyArrayObject *labels = an_py_int64_array(olabels, op, "labels");
    if (!labels)
        return NULL;
    const int64_t *pl = (const int64_t *)PyArray_DATA(labels);
    int64_t n = (int64_t)PyArray_SIZE(labels);
    AN_NOGIL(out = an_cross_entropy(logits, pl, n, reduction, smoothing, (int64_t)ignore_index));
    Py_DECREF(labels);
    return an_py_wrap(out);
}

static PyObject *py_bce_with_logits(PyObject *self, PyObject *args)
{
    (void)self;
    const char *op = "binary_cross_entropy_with_logits";
    PyObject *ologits, *otarget, *oweight, *opos;
    const char *reduction_text;
    an_reduction reduction;
    if (!PyArg_ParseTuple(args, "OOOOs", &ologits, &otarget, &oweight, &opos, &reduction_text) ||
        parse_reduction(reduction_text, op, &reduction))
        return NULL;
    int ok = 1;
    an_tensor *logits = an_py_unwrap(ologits, op, "logits"), *target, *weight, *pos_weight, *out;
    if (!logits || !(target = an_py_unwrap(otarget, op, "target")))
        return NULL;
    weight = an_py_unwrap_optional(oweight, op, "weight", &ok);
    if (!ok)
        return NULL;
    pos_weight = an_py_unwrap_optional(opos, op, "pos_weight", &ok);
    if (!ok)
        return NULL;
    AN_NOGIL(out = an_binary_cross_entropy_with_logits(logits, target, weight, pos_weight, reduction));
    return an_py_wrap(out);
}

static PyObject *py_mse_loss(PyObject *self, PyObject *args)
{
    (void)self;
    const char *op = "mse_loss";
    PyObject *oinput, *otarget;
    const char *reduction_text;
    an_reduction reduction;
    if (!PyArg_ParseTuple(args, "OOs", &oinput, &otarget, &reduction_text) ||
        parse_reduction(reduction_text, op, &reduction))
        return NULL;
    an_tensor *input = an_py_unwrap(oinput, op, "input"), *target, *out;
    if (!input || !(target = an_py_unwrap(otarget, op, "target")))
        return NULL;
    AN_NOGIL(out = an_mse_loss(input, target, reduction));
    return an_py_wrap(out);
}

PyMethodDef an_py_loss_methods[] = {
    {"cross_entropy", py_cross_entropy, METH_VARARGS,
     "cross_entropy(logits [N, C, ...], labels (ints, N*d...), reduction, label_smoothing, ignore_index)"},
    {"binary_cross_entropy_with_logits", py_bce_with_logits, METH_VARARGS,
     "binary_cross_entropy_with_logits(logits, target, weight|None, pos_weight|None, reduction)"},
    {"mse_loss", py_mse_loss, METH_VARARGS, "mse_loss(input, target, reduction)"},
    {NULL, NULL, 0, NULL},
};
