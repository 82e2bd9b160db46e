/* bind_linalg.c — Python bindings of the linalg ops. */
#include "bindings.h"

/* matmul(a, b) -> Tensor */
static PyObject *py_matmul(PyObject *self, PyObject *args)
{
    (void)self;
    return an_py_binary(args, an_matmul, "matmul");
}

/* linear(x, weight, bias | None) -> Tensor */
static PyObject *py_linear(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *w_obj, *b_obj;
    if (!PyArg_ParseTuple(args, "OOO:linear", &x_obj, &w_obj, &b_obj))
        return NULL;
    int ok;
    an_tensor *x = an_py_unwrap(x_obj, "linear", "input");
    an_tensor *w = x ? an_py_unwrap(w_obj, "linear", "weight") : NULL;
    an_tensor *b = w ? an_py_unwrap_optional(b_obj, "linear", "bias", &ok) : NULL;
    if (!x || !w || !ok)
        return NULL;
    an_tensor *out;
    AN_NOGIL(out = an_linear(x, w, b));
    return an_py_wrap(out);
}

PyMethodDef an_py_linalg_methods[] = {
    {"matmul", py_matmul, METH_VARARGS, "matmul(a, b): numpy.matmul semantics with broadcast batch dims"},
    {"linear", py_linear, METH_VARARGS, "linear(x, weight, bias=None): x @ weight.T + bias"},
    {NULL, NULL, 0, NULL},
};
