/* bind_shape.c — Python bindings of the shape ops (reshape, views,
   index_select, concat, channel_shuffle, pad). */
#include "bindings.h"
#include <string.h>

/* Reads a tuple/list of at most `max` ints into out; returns the count or -1. */
static Py_ssize_t parse_int_sequence(PyObject *obj, const char *op, const char *arg, Py_ssize_t max,
                                     int64_t *out)
{
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be a sequence of ints, got %s", op, arg,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > max) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%s: %s may have at most %zd entries, got %zd", op, arg, max, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyLong_Check(item) && !PyIndex_Check(item)) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_TypeError, "%s: %s entries must be ints, got %s", op, arg, Py_TYPE(item)->tp_name);
            return -1;
        }
        out[i] = PyLong_AsLongLong(item);
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return n;
}

typedef an_tensor *(*shape_fn)(an_tensor *, int, const int64_t *);

static PyObject *reshape_like(PyObject *args, shape_fn fn, const char *op)
{
    PyObject *ox, *oshape;
    if (!PyArg_ParseTuple(args, "OO", &ox, &oshape))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, op, "input"), *out;
    if (!x)
        return NULL;
    int64_t shape[AN_MAX_DIMS];
    Py_ssize_t ndim = parse_int_sequence(oshape, op, "shape", AN_MAX_DIMS, shape);
    if (ndim < 0)
        return NULL;
    AN_NOGIL(out = fn(x, (int)ndim, shape));
    return an_py_wrap(out);
}

/* reshape(x, shape) */
static PyObject *py_reshape(PyObject *self, PyObject *args)
{
    (void)self;
    return reshape_like(args, an_reshape, "reshape");
}

/* view(x, shape) */
static PyObject *py_view(PyObject *self, PyObject *args)
{
    (void)self;
    return reshape_like(args, an_view, "view");
}

/* flatten(x, start_dim, end_dim) */
static PyObject *py_flatten(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    int start, end;
    if (!PyArg_ParseTuple(args, "Oii", &ox, &start, &end))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "flatten", "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = an_flatten(x, start, end));
    return an_py_wrap(out);
}

/* transpose(x, dim0, dim1) */
static PyObject *py_transpose(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    int d0, d1;
    if (!PyArg_ParseTuple(args, "Oii", &ox, &d0, &d1))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "transpose", "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = an_transpose(x, d0, d1));
    return an_py_wrap(out);
}

/* permute(x, dims) */
static PyObject *py_permute(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *odims;
    if (!PyArg_ParseTuple(args, "OO", &ox, &odims))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "permute", "input"), *out;
    if (!x)
        return NULL;
    int64_t raw[AN_MAX_DIMS];
    Py_ssize_t n = parse_int_sequence(odims, "permute", "dims", AN_MAX_DIMS, raw);
    if (n < 0)
        return NULL;
    int dims[AN_MAX_DIMS];
    for (Py_ssize_t i = 0; i < n; i++) {
        if (raw[i] < -AN_MAX_DIMS || raw[i] > AN_MAX_DIMS) {
            PyErr_Format(PyExc_IndexError, "permute: dimension %lld is out of range", (long long)raw[i]);
            return NULL;
        }
        dims[i] = (int)raw[i];
    }
    AN_NOGIL(out = an_permute(x, (int)n, dims));
    return an_py_wrap(out);
}

/* select(x, dim, index) */
static PyObject *py_select(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    int dim;
    long long index;
    if (!PyArg_ParseTuple(args, "OiL", &ox, &dim, &index))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "select", "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = an_select(x, dim, index));
    return an_py_wrap(out);
}

/* slice(x, dim, start, stop, step) with 0 <= start <= stop <= size, step >= 1 */
static PyObject *py_slice(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    int dim;
    long long start, stop, step;
    if (!PyArg_ParseTuple(args, "OiLLL", &ox, &dim, &start, &stop, &step))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "slice", "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = an_slice(x, dim, start, stop, step));
    return an_py_wrap(out);
}

/* index_select(x, dim, index): index is a 1-D integer array-like */
static PyObject *py_index_select(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *oindex;
    int dim;
    if (!PyArg_ParseTuple(args, "OiO", &ox, &dim, &oindex))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "index_select", "input"), *out;
    if (!x)
        return NULL;
    PyArrayObject *index = an_py_int64_array(oindex, "index_select", "index");
    if (!index)
        return NULL;
    if (PyArray_NDIM(index) != 1) {
        PyErr_Format(PyExc_ValueError, "index_select: index must be 1-D, got a %d-D array", PyArray_NDIM(index));
        Py_DECREF(index);
        return NULL;
    }
    int64_t n = PyArray_DIM(index, 0);
    const int64_t *data = (const int64_t *)PyArray_DATA(index);
    AN_NOGIL(out = an_index_select(x, dim, n, data));
    Py_DECREF(index);
    return an_py_wrap(out);
}

/* The tensors of a non-empty list or tuple, borrowed: *seq (a new
   reference the caller releases after the call) keeps them alive.  NULL
   with an exception set on bad input. */
static an_tensor **unwrap_tensor_list(PyObject *olist, const char *op, PyObject **seq, Py_ssize_t *n)
{
    char message[96];
    snprintf(message, sizeof message, "%s: expected a list or tuple of tensors", op);
    *seq = PySequence_Fast(olist, message);
    if (!*seq)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(*seq);
    if (*n == 0 || *n > INT32_MAX) {
        Py_DECREF(*seq);
        PyErr_Format(PyExc_ValueError, "%s: expected a non-empty list of tensors", op);
        return NULL;
    }
    an_tensor **xs = PyMem_Malloc((size_t)*n * sizeof *xs);
    if (!xs) {
        Py_DECREF(*seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        char arg[48];
        snprintf(arg, sizeof arg, "tensor %zd", i);
        xs[i] = an_py_unwrap(PySequence_Fast_GET_ITEM(*seq, i), op, arg);
        if (!xs[i]) {
            PyMem_Free(xs);
            Py_DECREF(*seq);
            return NULL;
        }
    }
    return xs;
}

/* concat(tensors, dim) */
static PyObject *py_concat(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *olist, *seq;
    int dim;
    if (!PyArg_ParseTuple(args, "Oi", &olist, &dim))
        return NULL;
    Py_ssize_t n;
    an_tensor **xs = unwrap_tensor_list(olist, "concat", &seq, &n);
    if (!xs)
        return NULL;
    an_tensor *out;
    /* seq keeps every tensor alive while the GIL is released */
    AN_NOGIL(out = an_concat((int)n, xs, dim));
    PyMem_Free(xs);
    Py_DECREF(seq);
    return an_py_wrap(out);
}

/* channel_shuffle_concat([tensors]) */
static PyObject *py_channel_shuffle_concat(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *olist, *seq;
    if (!PyArg_ParseTuple(args, "O", &olist))
        return NULL;
    Py_ssize_t n;
    an_tensor **xs = unwrap_tensor_list(olist, "channel_shuffle_concat", &seq, &n);
    if (!xs)
        return NULL;
    an_tensor *out;
    /* seq keeps every tensor alive while the GIL is released */
    AN_NOGIL(out = an_channel_shuffle_concat((int)n, xs));
    PyMem_Free(xs);
    Py_DECREF(seq);
    return an_py_wrap(out);
}

/* channel_shuffle(x, groups) */
static PyObject *py_channel_shuffle(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    int groups;
    if (!PyArg_ParseTuple(args, "Oi", &ox, &groups))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "channel_shuffle", "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = an_channel_shuffle(x, groups));
    return an_py_wrap(out);
}

/* pad(x, pads, mode, value) with pads = (left, right, top, bottom, ...) */
static PyObject *py_pad(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *opads;
    const char *mode_name;
    double value;
    if (!PyArg_ParseTuple(args, "OOsd", &ox, &opads, &mode_name, &value))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "pad", "input"), *out;
    if (!x)
        return NULL;
    int64_t pads[2 * AN_MAX_DIMS];
    Py_ssize_t n = parse_int_sequence(opads, "pad", "pad", 2 * AN_MAX_DIMS, pads);
    if (n < 0)
        return NULL;
    if (n % 2) {
        PyErr_Format(PyExc_ValueError, "pad: pad must have an even number of entries, got %zd", n);
        return NULL;
    }
    an_pad_mode mode;
    if (!strcmp(mode_name, "constant"))
        mode = AN_PAD_CONSTANT;
    else if (!strcmp(mode_name, "reflect"))
        mode = AN_PAD_REFLECT;
    else if (!strcmp(mode_name, "replicate"))
        mode = AN_PAD_REPLICATE;
    else {
        PyErr_Format(PyExc_ValueError, "pad: mode must be 'constant', 'reflect' or 'replicate', got '%s'",
                     mode_name);
        return NULL;
    }
    AN_NOGIL(out = an_pad(x, (int)(n / 2), pads, mode, (float)value));
    return an_py_wrap(out);
}

PyMethodDef an_py_shape_methods[] = {
    {"reshape", py_reshape, METH_VARARGS, "reshape(x, shape): a view when the layout allows, else a copy"},
    {"view", py_view, METH_VARARGS, "view(x, shape): like reshape but never copies"},
    {"flatten", py_flatten, METH_VARARGS, "flatten(x, start_dim, end_dim)"},
    {"transpose", py_transpose, METH_VARARGS, "transpose(x, dim0, dim1): a view"},
    {"permute", py_permute, METH_VARARGS, "permute(x, dims): a view"},
    {"select", py_select, METH_VARARGS, "select(x, dim, index): a view dropping dim"},
    {"slice", py_slice, METH_VARARGS, "slice(x, dim, start, stop, step): a view"},
    {"index_select", py_index_select, METH_VARARGS, "index_select(x, dim, index): a copy"},
    {"concat", py_concat, METH_VARARGS, "concat(tensors, dim)"},
    {"channel_shuffle", py_channel_shuffle, METH_VARARGS, "channel_shuffle(x, groups) over NCHW"},
    {"channel_shuffle_concat", py_channel_shuffle_concat, METH_VARARGS,
     "channel_shuffle_concat(tensors): channel_shuffle(concat(tensors, 1), len(tensors)) in one pass"},
    {"pad", py_pad, METH_VARARGS, "pad(x, pads, mode, value): pads the last len(pads)//2 dims"},
    {NULL, NULL, 0, NULL},
};
