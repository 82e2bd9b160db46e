/* bind_linalg.c — Python bindings of the linalg ops. */
#include "bindings.h"

PyMethodDef an_py_linalg_methods[] = {
    {NULL, NULL, 0, NULL},
};
