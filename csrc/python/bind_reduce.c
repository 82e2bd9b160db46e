/* bind_reduce.c — Python bindings of sum and mean. */
#include "bindings.h"

#include <limits.h>

/* f(x, dims: sequence of ints (empty = all), keepdim: bool) */
static PyObject *reduce_call(PyObject *args, an_tensor *(*fn)(an_tensor *, int, const int *, int),
                             const char *op)
{
    PyObject *ox, *odims;
    int keepdim;
    if (!PyArg_ParseTuple(args, "OOp", &ox, &odims, &keepdim))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, op, "input"), *out;
    if (!x)
        return NULL;
    PyObject *seq = PySequence_Fast(odims, "dims must be a sequence of ints");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *dims = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *dims);
    if (!dims) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *index = PyNumber_Index(PySequence_Fast_GET_ITEM(seq, i));
        long v = index ? PyLong_AsLong(index) : -1;
        Py_XDECREF(index);
        if (!index || (v == -1 && PyErr_Occurred()) || v < INT_MIN || v > INT_MAX) {
            if (!PyErr_Occurred() || !PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_IndexError, "%s: dim %ld is out of range", op, v);
            }
            PyMem_Free(dims);
            Py_DECREF(seq);
            return NULL;
        }
        dims[i] = (int)v;
    }
    Py_DECREF(seq);
    AN_NOGIL(out = fn(x, (int)n, dims, keepdim));
    PyMem_Free(dims);
    return an_py_wrap(out);
}

static PyObject *py_sum(PyObject *s, PyObject *args)
{
    (void)s;
    return reduce_call(args, an_sum, "sum");
}

static PyObject *py_mean(PyObject *s, PyObject *args)
{
    (void)s;
    return reduce_call(args, an_mean, "mean");
}

PyMethodDef an_py_reduce_methods[] = {
    {"sum", py_sum, METH_VARARGS, "sum(x, dims: tuple of ints (empty = all), keepdim: bool)"},
    {"mean", py_mean, METH_VARARGS, "mean(x, dims: tuple of ints (empty = all), keepdim: bool)"},
    {NULL, NULL, 0, NULL},
};
