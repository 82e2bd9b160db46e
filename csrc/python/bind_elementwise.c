/* bind_elementwise.c — Python bindings of arithmetic and activations. */
#include "bindings.h"

#define UNARY(name) \
    static PyObject *py_##name(PyObject *s, PyObject *a) { (void)s; return an_py_unary(a, an_##name, #name); }
#define BINARY(name) \
    static PyObject *py_##name(PyObject *s, PyObject *a) { (void)s; return an_py_binary(a, an_##name, #name); }

BINARY(add)
BINARY(sub)
BINARY(mul)
BINARY(div)
UNARY(neg)

PyMethodDef an_py_elementwise_methods[] = {
    {"add", py_add, METH_VARARGS, "add(a, b) with broadcasting"},
    {"sub", py_sub, METH_VARARGS, "sub(a, b) with broadcasting"},
    {"mul", py_mul, METH_VARARGS, "mul(a, b) with broadcasting"},
    {"div", py_div, METH_VARARGS, "div(a, b) with broadcasting"},
    {"neg", py_neg, METH_O, "neg(x)"},
    {NULL, NULL, 0, NULL},
};
