/* bind_core.c — tensor creation and numpy interchange, autograd entry
   points, random seed, threads. */
#include "bindings.h"
#include "../core/allocator.h"

/* Shape from a tuple/list of ints (or a single int). */
static int parse_shape(PyObject *obj, const char *op, int *ndim, int64_t *shape)
{
    if (PyLong_Check(obj)) {
        *ndim = 1;
        shape[0] = PyLong_AsLongLong(obj);
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: shape must be a sequence of ints, got %s", op,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > AN_MAX_DIMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%s: at most %d dimensions are supported, got %zd", op,
                     AN_MAX_DIMS, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyLong_Check(item)) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_TypeError, "%s: shape entries must be ints, got %s", op,
                         Py_TYPE(item)->tp_name);
            return -1;
        }
        shape[i] = PyLong_AsLongLong(item);
    }
    Py_DECREF(seq);
    *ndim = (int)n;
    return PyErr_Occurred() ? -1 : 0;
}

/* Numbers that convert to float32 by value; anything else is refused
   rather than reinterpreted. */
static int convertible_kind(PyArrayObject *arr)
{
    char kind = PyArray_DESCR(arr)->kind;
    return kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b';
}

/* tensor(data, requires_grad=False): always copies, like torch.tensor. */
static PyObject *py_tensor(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"data", "requires_grad", NULL};
    PyObject *data;
    int requires_grad = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|p:tensor", kwlist, &data, &requires_grad))
        return NULL;
    an_tensor *out;
    if (PyObject_TypeCheck(data, &an_py_tensor_base_type)) {
        an_tensor *src = ((an_py_tensor *)data)->tensor;
        int prev = an_is_grad_enabled();
        an_set_grad_enabled(0);
        AN_NOGIL(out = an_clone(src));
        an_set_grad_enabled(prev);
    } else {
        PyArrayObject *raw = (PyArrayObject *)PyArray_FromAny(data, NULL, 0, 0, 0, NULL);
        if (!raw)
            return NULL;
        if (!convertible_kind(raw)) {
            PyErr_Format(PyExc_TypeError,
                         "appealnet.tensor: cannot convert an array of dtype %s to float32 "
                         "(expected float, int or bool data)",
                         PyArray_DESCR(raw)->typeobj->tp_name);
            Py_DECREF(raw);
            return NULL;
        }
        if (PyArray_NDIM(raw) > AN_MAX_DIMS) {
            PyErr_Format(PyExc_ValueError, "appealnet.tensor: at most %d dimensions are supported, got %d",
                         AN_MAX_DIMS, PyArray_NDIM(raw));
            Py_DECREF(raw);
            return NULL;
        }
        PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(
            (PyObject *)raw, NPY_FLOAT32, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
        Py_DECREF(raw);
        if (!arr)
            return NULL;
        int64_t shape[AN_MAX_DIMS];
        for (int i = 0; i < PyArray_NDIM(arr); i++)
            shape[i] = PyArray_DIM(arr, i);
        AN_NOGIL(out = an_from_data(PyArray_NDIM(arr), (const float *)PyArray_DATA(arr), shape));
        Py_DECREF(arr);
    }
    if (out && requires_grad)
        an_set_requires_grad(out, 1);
    return an_py_wrap(out);
}

static void release_numpy_owner(void *owner)
{
    /* May run on any thread, with or without the GIL held. */
    PyGILState_STATE state = PyGILState_Ensure();
    Py_DECREF((PyObject *)owner);
    PyGILState_Release(state);
}

/* from_numpy(array): shares memory with a float32 ndarray (any strides). */
static PyObject *py_from_numpy(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyArray_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "from_numpy: expected a numpy.ndarray, got %s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)arg;
    if (PyArray_TYPE(arr) != NPY_FLOAT32 || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_TypeError,
                     "from_numpy: can only share memory with native float32 arrays, got dtype %s; "
                     "use appealnet.tensor(array) to convert with a copy",
                     PyArray_DESCR(arr)->typeobj->tp_name);
        return NULL;
    }
    if (!PyArray_ISWRITEABLE(arr)) {
        PyErr_SetString(PyExc_ValueError,
                        "from_numpy: the array is read-only; use appealnet.tensor(array) to copy it");
        return NULL;
    }
    if (PyArray_NDIM(arr) > AN_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "from_numpy: at most %d dimensions are supported", AN_MAX_DIMS);
        return NULL;
    }
    int64_t shape[AN_MAX_DIMS], strides[AN_MAX_DIMS];
    for (int i = 0; i < PyArray_NDIM(arr); i++) {
        npy_intp s = PyArray_STRIDE(arr, i);
        if (s % (npy_intp)sizeof(float) != 0 || !PyArray_ISALIGNED(arr)) {
            PyErr_SetString(PyExc_ValueError,
                            "from_numpy: array strides are not a multiple of 4 bytes (unaligned view); "
                            "use appealnet.tensor(array) to copy it");
            return NULL;
        }
        shape[i] = PyArray_DIM(arr, i);
        strides[i] = s / (npy_intp)sizeof(float);
    }
    Py_INCREF(arg);
    an_tensor *t = an_from_external(PyArray_NDIM(arr), shape, strides, (float *)PyArray_DATA(arr), arg,
                                    release_numpy_owner);
    if (!t)
        Py_DECREF(arg);
    return an_py_wrap(t);
}

static PyObject *make_filled(PyObject *args, const char *op, int kind)
{
    PyObject *shape_obj;
    double value = 0.0;
    if (kind == 2) {
        if (!PyArg_ParseTuple(args, "Od", &shape_obj, &value))
            return NULL;
    } else if (!PyArg_ParseTuple(args, "O", &shape_obj)) {
        return NULL;
    }
    int ndim;
    int64_t shape[AN_MAX_DIMS];
    if (parse_shape(shape_obj, op, &ndim, shape) < 0)
        return NULL;
    an_tensor *out;
    if (kind == 0)
        AN_NOGIL(out = an_empty(ndim, shape));
    else if (kind == 1)
        AN_NOGIL(out = an_zeros(ndim, shape));
    else
        AN_NOGIL(out = an_full(ndim, shape, (float)value));
    return an_py_wrap(out);
}

static PyObject *py_empty(PyObject *s, PyObject *a) { (void)s; return make_filled(a, "empty", 0); }
static PyObject *py_zeros(PyObject *s, PyObject *a) { (void)s; return make_filled(a, "zeros", 1); }
static PyObject *py_full(PyObject *s, PyObject *a) { (void)s; return make_filled(a, "full", 2); }

/* _make_subclass(cls, tensor, requires_grad): a new `cls` object over a
   detached view of tensor (how Parameter wraps data). */
static PyObject *py_make_subclass(PyObject *self, PyObject *args)
{
    (void)self;
    PyTypeObject *cls;
    PyObject *obj;
    int requires_grad;
    if (!PyArg_ParseTuple(args, "O!Op", &PyType_Type, &cls, &obj, &requires_grad))
        return NULL;
    if (!PyType_IsSubtype(cls, &an_py_tensor_base_type)) {
        PyErr_SetString(PyExc_TypeError, "_make_subclass: cls must derive from TensorBase");
        return NULL;
    }
    an_tensor *src = an_py_unwrap(obj, "_make_subclass", "data");
    if (!src)
        return NULL;
    an_tensor *view = an_detach(src);
    if (!view)
        return an_py_raise();
    view->requires_grad = requires_grad;
    an_py_tensor *out = (an_py_tensor *)cls->tp_alloc(cls, 0);
    if (!out) {
        an_release(view);
        return NULL;
    }
    out->tensor = view;
    return (PyObject *)out;
}

static PyObject *py_set_tensor_class(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyType_Check(arg) || !PyType_IsSubtype((PyTypeObject *)arg, &an_py_tensor_base_type)) {
        PyErr_SetString(PyExc_TypeError, "_set_tensor_class: expected a subclass of TensorBase");
        return NULL;
    }
    Py_INCREF(arg);
    an_py_tensor_class = (PyTypeObject *)arg;
    Py_RETURN_NONE;
}

static PyObject *py_manual_seed(PyObject *self, PyObject *arg)
{
    (void)self;
    unsigned long long seed = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred())
        return NULL;
    an_manual_seed(seed);
    Py_RETURN_NONE;
}

static PyObject *py_initial_seed(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromUnsignedLongLong(an_initial_seed());
}

static PyObject *py_get_rng_state(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    uint64_t seed, offset;
    an_get_rng_state(&seed, &offset);
    return Py_BuildValue("(KK)", (unsigned long long)seed, (unsigned long long)offset);
}

static PyObject *py_set_rng_state(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long seed, offset;
    if (!PyArg_ParseTuple(args, "KK", &seed, &offset))
        return NULL;
    an_set_rng_state(seed, offset);
    Py_RETURN_NONE;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: expected a positive number of threads, got %ld", n);
        return NULL;
    }
    an_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_set_conv_winograd(PyObject *self, PyObject *arg)
{
    (void)self;
    int enabled = PyObject_IsTrue(arg);
    if (enabled < 0)
        return NULL;
    an_set_conv_winograd(enabled);
    Py_RETURN_NONE;
}

static PyObject *py_get_conv_winograd(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    return PyBool_FromLong(an_get_conv_winograd());
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(an_get_num_threads());
}

static PyObject *py_openmp_enabled(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(an_openmp_enabled());
}

static PyObject *py_set_grad_enabled(PyObject *self, PyObject *arg)
{
    (void)self;
    int flag = PyObject_IsTrue(arg);
    if (flag < 0)
        return NULL;
    an_set_grad_enabled(flag);
    Py_RETURN_NONE;
}

static PyObject *py_is_grad_enabled(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(an_is_grad_enabled());
}

static PyObject *py_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj, *grad_obj = Py_None;
    int retain_graph = 0;
    if (!PyArg_ParseTuple(args, "O|Op", &obj, &grad_obj, &retain_graph))
        return NULL;
    int ok;
    an_tensor *t = an_py_unwrap(obj, "backward", "tensor");
    if (!t)
        return NULL;
    an_tensor *grad = an_py_unwrap_optional(grad_obj, "backward", "gradient", &ok);
    if (!ok)
        return NULL;
    an_status status;
    AN_NOGIL(status = an_backward(t, grad, retain_graph));
    if (status)
        return an_py_raise();
    Py_RETURN_NONE;
}

static PyObject *py_detach(PyObject *s, PyObject *a) { (void)s; return an_py_unary(a, an_detach, "detach"); }
static PyObject *py_clone(PyObject *s, PyObject *a) { (void)s; return an_py_unary(a, an_clone, "clone"); }
static PyObject *py_contiguous(PyObject *s, PyObject *a)
{
    (void)s;
    return an_py_unary(a, an_contiguous, "contiguous");
}

static PyObject *status_result(an_status status)
{
    if (status)
        return an_py_raise();
    Py_RETURN_NONE;
}

static PyObject *py_copy_(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *od, *os;
    if (!PyArg_ParseTuple(args, "OO", &od, &os))
        return NULL;
    an_tensor *dst = an_py_unwrap(od, "copy_", "destination"), *src;
    if (!dst || !(src = an_py_unwrap(os, "copy_", "source")))
        return NULL;
    an_status status;
    AN_NOGIL(status = an_copy_(dst, src));
    return status_result(status);
}

static PyObject *py_fill_(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o;
    double v;
    if (!PyArg_ParseTuple(args, "Od", &o, &v))
        return NULL;
    an_tensor *t = an_py_unwrap(o, "fill_", "input");
    if (!t)
        return NULL;
    an_status status;
    AN_NOGIL(status = an_fill_(t, (float)v));
    return status_result(status);
}

static PyObject *py_uniform_(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o;
    double lo, hi;
    if (!PyArg_ParseTuple(args, "Odd", &o, &lo, &hi))
        return NULL;
    an_tensor *t = an_py_unwrap(o, "uniform_", "input");
    if (!t)
        return NULL;
    an_status status;
    AN_NOGIL(status = an_uniform_(t, (float)lo, (float)hi));
    return status_result(status);
}

static PyObject *py_normal_(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o;
    double mean, std;
    if (!PyArg_ParseTuple(args, "Odd", &o, &mean, &std))
        return NULL;
    an_tensor *t = an_py_unwrap(o, "normal_", "input");
    if (!t)
        return NULL;
    an_status status;
    AN_NOGIL(status = an_normal_(t, (float)mean, (float)std));
    return status_result(status);
}

static PyObject *py_has_nonfinite(PyObject *self, PyObject *arg)
{
    (void)self;
    an_tensor *t = an_py_unwrap(arg, "has_nonfinite", "input");
    if (!t)
        return NULL;
    return PyBool_FromLong(an_has_nonfinite(t));
}

static PyObject *py_cpu_description(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyUnicode_FromString(an_cpu_description());
}

static PyObject *py_isa_warning(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyUnicode_FromString(an_isa_warning());
}

static PyObject *py_workspace_bytes(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(an_workspace_bytes());
}

static PyObject *py_release_workspace(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    an_release_workspace();
    Py_RETURN_NONE;
}

static PyObject *py_allocator_stats(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    an_allocator_stats st;
    an_allocator_get_stats(&st);
    return Py_BuildValue("{sKsKsKsKsnsnsnsnsO}", "hits", (unsigned long long)st.hits, "misses",
                         (unsigned long long)st.misses, "frees_cached",
                         (unsigned long long)st.frees_cached, "frees_system",
                         (unsigned long long)st.frees_system, "cached_bytes",
                         (Py_ssize_t)st.cached_bytes, "cached_blocks", (Py_ssize_t)st.cached_blocks,
                         "live_bytes", (Py_ssize_t)st.live_bytes, "limit_bytes",
                         (Py_ssize_t)st.limit_bytes, "enabled", st.enabled ? Py_True : Py_False);
}

PyMethodDef an_py_core_methods[] = {
    {"tensor", (PyCFunction)(void (*)(void))py_tensor, METH_VARARGS | METH_KEYWORDS,
     "tensor(data, requires_grad=False): a float32 tensor holding a copy of data."},
    {"from_numpy", py_from_numpy, METH_O, "from_numpy(array): a tensor sharing a float32 array's memory."},
    {"empty", py_empty, METH_VARARGS, "empty(shape)"},
    {"zeros", py_zeros, METH_VARARGS, "zeros(shape)"},
    {"full", py_full, METH_VARARGS, "full(shape, value)"},
    {"_make_subclass", py_make_subclass, METH_VARARGS, "_make_subclass(cls, data, requires_grad)"},
    {"_set_tensor_class", py_set_tensor_class, METH_O, "Class that new tensors are created as."},
    {"manual_seed", py_manual_seed, METH_O, "Seeds the global generator."},
    {"initial_seed", py_initial_seed, METH_NOARGS, "The seed of the global generator."},
    {"get_rng_state", py_get_rng_state, METH_NOARGS, "(seed, offset) of the global generator."},
    {"set_rng_state", py_set_rng_state, METH_VARARGS, "set_rng_state(seed, offset)"},
    {"set_num_threads", py_set_num_threads, METH_O, "Number of OpenMP threads for compute."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "Number of OpenMP threads for compute."},
    {"set_conv_winograd", py_set_conv_winograd, METH_O, "Use Winograd F(4x4,3x3) where it applies."},
    {"get_conv_winograd", py_get_conv_winograd, METH_NOARGS, "Whether Winograd F(4x4,3x3) is used."},
    {"openmp_enabled", py_openmp_enabled, METH_NOARGS, "Whether the core was built with OpenMP."},
    {"set_grad_enabled", py_set_grad_enabled, METH_O, "Turns recording on/off for this thread."},
    {"is_grad_enabled", py_is_grad_enabled, METH_NOARGS, "Whether ops record autograd nodes."},
    {"backward", py_backward, METH_VARARGS, "backward(tensor, gradient=None, retain_graph=False)"},
    {"detach", py_detach, METH_O, "detach(t): shares memory, no autograd history."},
    {"clone", py_clone, METH_O, "clone(t): a differentiable copy."},
    {"contiguous", py_contiguous, METH_O, "contiguous(t): t itself or a row-major copy."},
    {"copy_", py_copy_, METH_VARARGS, "copy_(dst, src): in place, not recorded."},
    {"fill_", py_fill_, METH_VARARGS, "fill_(t, value): in place, not recorded."},
    {"uniform_", py_uniform_, METH_VARARGS, "uniform_(t, low, high): in place."},
    {"normal_", py_normal_, METH_VARARGS, "normal_(t, mean, std): in place."},
    {"has_nonfinite", py_has_nonfinite, METH_O, "True when t holds NaN or inf."},
    {"cpu_description", py_cpu_description, METH_NOARGS, "CPU model, chosen ISA, cache sizes."},
    {"isa_warning", py_isa_warning, METH_NOARGS, "Why APPEALNET_ISA was not honoured ('' if it was)."},
    {"workspace_bytes", py_workspace_bytes, METH_NOARGS, "Bytes held by the core's caches."},
    {"release_workspace", py_release_workspace, METH_NOARGS, "Frees the core's caches."},
    {"allocator_stats", py_allocator_stats, METH_NOARGS,
     "Caching allocator counters: hits, misses, frees, cached/live bytes, limit, enabled."},
    {NULL, NULL, 0, NULL},
};
