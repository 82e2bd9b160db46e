/* bind_elementwise.c — Python bindings of arithmetic, elementwise math and
   activations (softmax included). */
#include "bindings.h"

#define UNARY(name) \
    static PyObject *py_##name(PyObject *s, PyObject *a) { (void)s; return an_py_unary(a, an_##name, #name); }
#define BINARY(name) \
    static PyObject *py_##name(PyObject *s, PyObject *a) { (void)s; return an_py_binary(a, an_##name, #name); }

BINARY(add)
BINARY(sub)
BINARY(mul)
BINARY(div)
BINARY(add_relu)
UNARY(neg)
UNARY(exp)
UNARY(log)
UNARY(sqrt)
UNARY(abs)
UNARY(relu)
UNARY(relu6)
UNARY(sigmoid)
UNARY(tanh)
UNARY(silu)
UNARY(hardswish)
UNARY(hardsigmoid)
UNARY(log_sigmoid)

/* f(x, scalar) for pow_scalar and leaky_relu */
static PyObject *unary_with_scalar(PyObject *args, an_tensor *(*fn)(an_tensor *, float), const char *op)
{
    PyObject *ox;
    double value;
    if (!PyArg_ParseTuple(args, "Od", &ox, &value))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, op, "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = fn(x, (float)value));
    return an_py_wrap(out);
}

static PyObject *py_pow_scalar(PyObject *s, PyObject *args)
{
    (void)s;
    return unary_with_scalar(args, an_pow_scalar, "pow");
}

static PyObject *py_leaky_relu(PyObject *s, PyObject *args)
{
    (void)s;
    return unary_with_scalar(args, an_leaky_relu, "leaky_relu");
}

static PyObject *py_clamp(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    double lo, hi;
    if (!PyArg_ParseTuple(args, "Odd", &ox, &lo, &hi))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, "clamp", "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = an_clamp(x, (float)lo, (float)hi));
    return an_py_wrap(out);
}

/* f(x, dim) for softmax and log_softmax */
static PyObject *along_dim(PyObject *args, an_tensor *(*fn)(an_tensor *, int), const char *op)
{
    PyObject *ox;
    int dim;
    if (!PyArg_ParseTuple(args, "Oi", &ox, &dim))
        return NULL;
    an_tensor *x = an_py_unwrap(ox, op, "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = fn(x, dim));
    return an_py_wrap(out);
}

static PyObject *py_softmax(PyObject *s, PyObject *args)
{
    (void)s;
    return along_dim(args, an_softmax, "softmax");
}

static PyObject *py_log_softmax(PyObject *s, PyObject *args)
{
    (void)s;
    return along_dim(args, an_log_softmax, "log_softmax");
}

PyMethodDef an_py_elementwise_methods[] = {
    {"add", py_add, METH_VARARGS, "add(a, b) with broadcasting"},
    {"sub", py_sub, METH_VARARGS, "sub(a, b) with broadcasting"},
    {"mul", py_mul, METH_VARARGS, "mul(a, b) with broadcasting"},
    {"div", py_div, METH_VARARGS, "div(a, b) with broadcasting"},
    {"add_relu", py_add_relu, METH_VARARGS, "add_relu(a, b): relu(a + b) in one pass"},
    {"neg", py_neg, METH_O, "neg(x)"},
    {"exp", py_exp, METH_O, "exp(x)"},
    {"log", py_log, METH_O, "log(x); -inf at 0"},
    {"sqrt", py_sqrt, METH_O, "sqrt(x)"},
    {"abs", py_abs, METH_O, "abs(x); gradient sign(x), 0 at 0"},
    {"pow_scalar", py_pow_scalar, METH_VARARGS, "pow_scalar(x, exponent: float)"},
    {"clamp", py_clamp, METH_VARARGS, "clamp(x, lo, hi); a NaN bound is absent"},
    {"relu", py_relu, METH_O, "relu(x)"},
    {"relu6", py_relu6, METH_O, "relu6(x) = min(max(x, 0), 6)"},
    {"leaky_relu", py_leaky_relu, METH_VARARGS, "leaky_relu(x, negative_slope: float)"},
    {"sigmoid", py_sigmoid, METH_O, "sigmoid(x), stable for large |x|"},
    {"tanh", py_tanh, METH_O, "tanh(x)"},
    {"silu", py_silu, METH_O, "silu(x) = x * sigmoid(x)"},
    {"hardswish", py_hardswish, METH_O, "hardswish(x) = x * relu6(x + 3) / 6"},
    {"hardsigmoid", py_hardsigmoid, METH_O, "hardsigmoid(x) = relu6(x + 3) / 6"},
    {"log_sigmoid", py_log_sigmoid, METH_O, "log_sigmoid(x), stable for large |x|"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, dim: int)"},
    {"log_softmax", py_log_softmax, METH_VARARGS, "log_softmax(x, dim: int)"},
    {NULL, NULL, 0, NULL},
};
