/* module.c — the appealnet._C extension module: merges the method tables
   of the bind_*.c files and readies the tensor type. */
#define AN_NUMPY_MODULE_INIT
#include "bindings.h"
#include <string.h>

static PyMethodDef *const method_tables[] = {
    an_py_core_methods,  an_py_elementwise_methods, an_py_reduce_methods, an_py_shape_methods,
    an_py_linalg_methods, an_py_nn_methods,         an_py_loss_methods,   an_py_optim_methods,
};

static PyMethodDef *all_methods;

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", "appealnet C core (float32 tensors, autograd, kernels).", -1, NULL,
};

PyMODINIT_FUNC PyInit__C(void)
{
    import_array();
    if (PyType_Ready(&an_py_tensor_base_type) < 0)
        return NULL;
    size_t total = 0;
    for (size_t t = 0; t < sizeof method_tables / sizeof *method_tables; t++)
        for (PyMethodDef *m = method_tables[t]; m->ml_name; m++)
            total++;
    all_methods = PyMem_Calloc(total + 1, sizeof *all_methods);
    if (!all_methods)
        return PyErr_NoMemory();
    size_t k = 0;
    for (size_t t = 0; t < sizeof method_tables / sizeof *method_tables; t++)
        for (PyMethodDef *m = method_tables[t]; m->ml_name; m++)
            all_methods[k++] = *m;
    module_def.m_methods = all_methods;
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    Py_INCREF(&an_py_tensor_base_type);
    if (PyModule_AddObject(module, "TensorBase", (PyObject *)&an_py_tensor_base_type) < 0 ||
        PyModule_AddStringConstant(module, "__version__", AN_VERSION) < 0 ||
        PyModule_AddIntConstant(module, "MAX_DIMS", AN_MAX_DIMS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
