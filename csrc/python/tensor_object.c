/* tensor_object.c — the TensorBase type: a Python handle on an an_tensor,
   with the buffer protocol, zero-copy numpy views and autograd fields.
   Operators and most methods are added by the Python subclass
   appealnet.Tensor. */
#include "bindings.h"
#include <string.h>

PyTypeObject *an_py_tensor_class = &an_py_tensor_base_type;

PyObject *an_py_raise(void)
{
    PyObject *type;
    switch (an_last_status()) {
    case AN_ERR_TYPE: type = PyExc_TypeError; break;
    case AN_ERR_INDEX: type = PyExc_IndexError; break;
    case AN_ERR_MEMORY: type = PyExc_MemoryError; break;
    case AN_ERR_RUNTIME: type = PyExc_RuntimeError; break;
    case AN_ERR_VALUE: type = PyExc_ValueError; break;
    default:
        PyErr_SetString(PyExc_RuntimeError, "appealnet: operation failed without an error message");
        return NULL;
    }
    PyErr_SetString(type, an_last_error());
    an_clear_error();
    return NULL;
}

PyObject *an_py_wrap(an_tensor *t)
{
    if (!t)
        return an_py_raise();
    an_py_tensor *obj = (an_py_tensor *)an_py_tensor_class->tp_alloc(an_py_tensor_class, 0);
    if (!obj) {
        an_release(t);
        return NULL;
    }
    obj->tensor = t;
    return (PyObject *)obj;
}

an_tensor *an_py_unwrap(PyObject *obj, const char *op, const char *arg)
{
    if (obj && PyObject_TypeCheck(obj, &an_py_tensor_base_type) && ((an_py_tensor *)obj)->tensor)
        return ((an_py_tensor *)obj)->tensor;
    PyErr_Format(PyExc_TypeError, "%s: %s must be an appealnet Tensor, got %s", op, arg,
                 obj ? Py_TYPE(obj)->tp_name : "NULL");
    return NULL;
}

an_tensor *an_py_unwrap_optional(PyObject *obj, const char *op, const char *arg, int *ok)
{
    *ok = 1;
    if (!obj || obj == Py_None)
        return NULL;
    an_tensor *t = an_py_unwrap(obj, op, arg);
    if (!t)
        *ok = 0;
    return t;
}

int an_py_pair(PyObject *obj, const char *op, const char *arg, int64_t out[2])
{
    if (PyLong_Check(obj)) {
        long long v = PyLong_AsLongLong(obj);
        if (v == -1 && PyErr_Occurred())
            return -1;
        out[0] = out[1] = v;
        return 0;
    }
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be an int or a pair of ints", op, arg);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyLong_Check(item)) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_TypeError, "%s: %s must be an int or a pair of ints", op, arg);
            return -1;
        }
        out[i] = PyLong_AsLongLong(item);
    }
    Py_DECREF(seq);
    return PyErr_Occurred() ? -1 : 0;
}

PyArrayObject *an_py_int64_array(PyObject *obj, const char *op, const char *arg)
{
    if (PyObject_TypeCheck(obj, &an_py_tensor_base_type)) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must hold integer class indices (an int64 numpy array or a list of ints), "
                     "got a float32 Tensor", op, arg);
        return NULL;
    }
    PyArrayObject *raw = (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
    if (!raw)
        return NULL;
    int kind = PyArray_DESCR(raw)->kind;
    /* an empty list arrives as float64: nothing to reinterpret, accept it */
    if (kind != 'i' && kind != 'u' && PyArray_SIZE(raw) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: %s must hold integers, got an array of dtype %s", op, arg,
                     PyArray_DESCR(raw)->typeobj->tp_name);
        Py_DECREF(raw);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)raw, NPY_INT64,
                                                           NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED |
                                                               NPY_ARRAY_FORCECAST);
    Py_DECREF(raw);
    return arr;
}

PyObject *an_py_unary(PyObject *arg, an_tensor *(*fn)(an_tensor *), const char *op)
{
    an_tensor *x = an_py_unwrap(arg, op, "input"), *out;
    if (!x)
        return NULL;
    AN_NOGIL(out = fn(x));
    return an_py_wrap(out);
}

PyObject *an_py_binary(PyObject *args, an_tensor *(*fn)(an_tensor *, an_tensor *), const char *op)
{
    PyObject *oa, *ob;
    if (!PyArg_ParseTuple(args, "OO", &oa, &ob))
        return NULL;
    an_tensor *a = an_py_unwrap(oa, op, "input"), *b, *out;
    if (!a || !(b = an_py_unwrap(ob, op, "other")))
        return NULL;
    AN_NOGIL(out = fn(a, b));
    return an_py_wrap(out);
}

/* ------------------------------------------------------------ the type */

static void tensor_dealloc(an_py_tensor *self)
{
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    an_tensor *t = self->tensor;
    self->tensor = NULL;
    /* freeing a large graph is pure C work */
    if (t)
        AN_NOGIL(an_release(t));
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)type;
    (void)args;
    (void)kwargs;
    PyErr_SetString(PyExc_TypeError,
                    "create tensors with appealnet.tensor(data), appealnet.zeros(shape), ...");
    return NULL;
}

static PyObject *tensor_get_shape(an_py_tensor *self, void *closure)
{
    (void)closure;
    an_tensor *t = self->tensor;
    PyObject *tuple = PyTuple_New(t->ndim);
    for (int i = 0; tuple && i < t->ndim; i++)
        PyTuple_SET_ITEM(tuple, i, PyLong_FromLongLong(t->shape[i]));
    return tuple;
}

static PyObject *tensor_get_strides(an_py_tensor *self, void *closure)
{
    (void)closure;
    an_tensor *t = self->tensor;
    PyObject *tuple = PyTuple_New(t->ndim);
    for (int i = 0; tuple && i < t->ndim; i++)
        PyTuple_SET_ITEM(tuple, i, PyLong_FromLongLong(t->strides[i]));
    return tuple;
}

static PyObject *tensor_get_ndim(an_py_tensor *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->tensor->ndim);
}

static PyObject *tensor_get_requires_grad(an_py_tensor *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->tensor->requires_grad);
}

static int tensor_set_requires_grad(an_py_tensor *self, PyObject *value, void *c)
{
    (void)c;
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "cannot delete requires_grad");
        return -1;
    }
    int flag = PyObject_IsTrue(value);
    if (flag < 0)
        return -1;
    if (an_set_requires_grad(self->tensor, flag)) {
        an_py_raise();
        return -1;
    }
    return 0;
}

static PyObject *tensor_get_grad(an_py_tensor *self, void *c)
{
    (void)c;
    an_tensor *g = self->tensor->grad;
    if (!g)
        Py_RETURN_NONE;
    an_retain(g);
    return an_py_wrap(g);
}

static int tensor_set_grad(an_py_tensor *self, PyObject *value, void *c)
{
    (void)c;
    an_tensor *g = NULL;
    if (value && value != Py_None && !(g = an_py_unwrap(value, "Tensor.grad", "value")))
        return -1;
    if (an_set_grad(self->tensor, g)) {
        an_py_raise();
        return -1;
    }
    return 0;
}

static PyObject *tensor_get_is_leaf(an_py_tensor *self, void *c)
{
    (void)c;
    return PyBool_FromLong(an_is_leaf(self->tensor));
}

static PyObject *tensor_get_grad_fn(an_py_tensor *self, void *c)
{
    (void)c;
    const char *name = an_grad_fn_name(self->tensor);
    if (!name)
        Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)tensor_get_shape, NULL, "Size of each dimension (a tuple).", NULL},
    {"_strides", (getter)tensor_get_strides, NULL, "Strides in elements.", NULL},
    {"ndim", (getter)tensor_get_ndim, NULL, "Number of dimensions.", NULL},
    {"requires_grad", (getter)tensor_get_requires_grad, (setter)tensor_set_requires_grad,
     "Whether autograd records operations on this tensor.", NULL},
    {"grad", (getter)tensor_get_grad, (setter)tensor_set_grad,
     "Gradient accumulated by backward() (a leaf's), or None.", NULL},
    {"is_leaf", (getter)tensor_get_is_leaf, NULL, "True when no op produced this tensor.", NULL},
    {"grad_fn", (getter)tensor_get_grad_fn, NULL, "Name of the backward node, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *tensor_numpy(an_py_tensor *self, PyObject *unused)
{
    (void)unused;
    an_tensor *t = self->tensor;
    if (t->requires_grad) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.");
        return NULL;
    }
    npy_intp dims[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) {
        dims[i] = (npy_intp)t->shape[i];
        strides[i] = (npy_intp)(t->strides[i] * (int64_t)sizeof(float));
    }
    PyObject *arr = PyArray_New(&PyArray_Type, t->ndim, dims, NPY_FLOAT32, strides, an_data_ptr(t),
                                sizeof(float), NPY_ARRAY_WRITEABLE | NPY_ARRAY_ALIGNED, NULL);
    if (!arr)
        return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *tensor_item(an_py_tensor *self, PyObject *unused)
{
    (void)unused;
    an_tensor *t = self->tensor;
    int64_t n = an_numel(t);
    if (n != 1) {
        PyErr_Format(PyExc_ValueError, "a Tensor with %lld elements cannot be converted to a Python scalar",
                     (long long)n);
        return NULL;
    }
    return PyFloat_FromDouble((double)an_data_ptr(t)[0]);
}

static PyObject *tensor_numel(an_py_tensor *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromLongLong(an_numel(self->tensor));
}

static PyObject *tensor_is_contiguous(an_py_tensor *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(an_is_contiguous(self->tensor));
}

static PyObject *tensor_data_ptr(an_py_tensor *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromVoidPtr(an_data_ptr(self->tensor));
}

static PyObject *tensor_storage_ptr(an_py_tensor *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromVoidPtr(self->tensor->storage);
}

static PyMethodDef tensor_methods[] = {
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS,
     "A numpy array sharing this tensor's memory (no copy)."},
    {"item", (PyCFunction)tensor_item, METH_NOARGS, "The value of a one-element tensor as a float."},
    {"numel", (PyCFunction)tensor_numel, METH_NOARGS, "Number of elements."},
    {"is_contiguous", (PyCFunction)tensor_is_contiguous, METH_NOARGS, "Row-major contiguous?"},
    {"data_ptr", (PyCFunction)tensor_data_ptr, METH_NOARGS, "Address of the first element."},
    {"_storage_ptr", (PyCFunction)tensor_storage_ptr, METH_NOARGS, "Identity of the shared storage."},
    {NULL, NULL, 0, NULL},
};

/* Buffer protocol: np.asarray(t), memoryview(t) share memory. */
static int tensor_getbuffer(an_py_tensor *self, Py_buffer *view, int flags)
{
    an_tensor *t = self->tensor;
    int contiguous = an_is_contiguous(t);
    if ((flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS && !contiguous) {
        PyErr_SetString(PyExc_BufferError, "tensor is not C-contiguous; call .contiguous() first");
        return -1;
    }
    if ((flags & PyBUF_STRIDES) != PyBUF_STRIDES && !contiguous) {
        PyErr_SetString(PyExc_BufferError, "tensor is not contiguous and the consumer needs strides");
        return -1;
    }
    Py_ssize_t *geometry = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (size_t)(t->ndim ? t->ndim : 1));
    if (!geometry) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < t->ndim; i++) {
        geometry[i] = (Py_ssize_t)t->shape[i];
        geometry[t->ndim + i] = (Py_ssize_t)(t->strides[i] * (int64_t)sizeof(float));
    }
    view->buf = an_data_ptr(t);
    view->obj = (PyObject *)self;
    Py_INCREF(self);
    view->len = (Py_ssize_t)(an_numel(t) * (int64_t)sizeof(float));
    view->readonly = 0;
    view->itemsize = sizeof(float);
    view->format = (flags & PyBUF_FORMAT) ? "f" : NULL;
    view->ndim = t->ndim;
    view->shape = (flags & PyBUF_ND) ? geometry : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? geometry + t->ndim : NULL;
    view->suboffsets = NULL;
    view->internal = geometry;
    return 0;
}

static void tensor_releasebuffer(an_py_tensor *self, Py_buffer *view)
{
    (void)self;
    PyMem_Free(view->internal);
}

static PyBufferProcs tensor_buffer = {(getbufferproc)tensor_getbuffer,
                                      (releasebufferproc)tensor_releasebuffer};

static Py_ssize_t tensor_length(an_py_tensor *self)
{
    if (self->tensor->ndim == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensor");
        return -1;
    }
    return (Py_ssize_t)self->tensor->shape[0];
}

static PySequenceMethods tensor_sequence = {.sq_length = (lenfunc)tensor_length};

PyTypeObject an_py_tensor_base_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "appealnet._C.TensorBase",
    .tp_basicsize = sizeof(an_py_tensor),
    .tp_dealloc = (destructor)tensor_dealloc,
    .tp_as_sequence = &tensor_sequence,
    .tp_as_buffer = &tensor_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Handle on a float32 tensor of the C core (base of appealnet.Tensor).",
    .tp_weaklistoffset = offsetof(an_py_tensor, weakrefs),
    .tp_methods = tensor_methods,
    .tp_getset = tensor_getset,
    .tp_new = tensor_new,
};
