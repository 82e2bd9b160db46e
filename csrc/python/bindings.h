/*
 * bindings.h — shared by the binding files: the only code that includes
 * Python.h.  Each bind_*.c exports one method table, merged in module.c.
 */
#ifndef APPEALNET_BINDINGS_H
#define APPEALNET_BINDINGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#ifndef AN_NUMPY_MODULE_INIT
#define NO_IMPORT_ARRAY
#endif
#define PY_ARRAY_UNIQUE_SYMBOL appealnet_ARRAY_API
#include <numpy/arrayobject.h>

#include "../appealnet.h"

typedef struct {
    PyObject_HEAD
    an_tensor *tensor;
    PyObject *weakrefs;
} an_py_tensor;

extern PyTypeObject an_py_tensor_base_type;
/* The Python class instances are created with (appealnet.Tensor once set). */
extern PyTypeObject *an_py_tensor_class;

/* Wraps a new reference (stolen).  NULL in -> raises the library error. */
PyObject *an_py_wrap(an_tensor *t);
/* Borrowed tensor from a Tensor object; TypeError naming op/arg otherwise. */
an_tensor *an_py_unwrap(PyObject *obj, const char *op, const char *arg);
/* Same, but None gives NULL without error; *ok is cleared on a type error. */
an_tensor *an_py_unwrap_optional(PyObject *obj, const char *op, const char *arg, int *ok);
/* Sets the Python exception matching an_last_status()/an_last_error(). */
PyObject *an_py_raise(void);
/* Reads a pair of ints from an int or a 2-sequence (kernel sizes, strides). */
int an_py_pair(PyObject *obj, const char *op, const char *arg, int64_t out[2]);
/* int64 labels from any integer array-like; returns a new reference to a
   contiguous int64 ndarray, or NULL with TypeError/ValueError set. */
PyArrayObject *an_py_int64_array(PyObject *obj, const char *op, const char *arg);

/* Runs `expr` with the GIL released (compute never touches Python). */
#define AN_NOGIL(expr)                                                        \
    do {                                                                      \
        an_apply_num_threads();                                               \
        Py_BEGIN_ALLOW_THREADS expr;                                          \
        Py_END_ALLOW_THREADS                                                  \
    } while (0)

/* Helpers for the common binding shapes. */
PyObject *an_py_unary(PyObject *arg, an_tensor *(*fn)(an_tensor *), const char *op);
PyObject *an_py_binary(PyObject *args, an_tensor *(*fn)(an_tensor *, an_tensor *), const char *op);

extern PyMethodDef an_py_core_methods[];
extern PyMethodDef an_py_elementwise_methods[];
extern PyMethodDef an_py_reduce_methods[];
extern PyMethodDef an_py_shape_methods[];
extern PyMethodDef an_py_linalg_methods[];
extern PyMethodDef an_py_nn_methods[];
extern PyMethodDef an_py_loss_methods[];
extern PyMethodDef an_py_optim_methods[];

#endif
