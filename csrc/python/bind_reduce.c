/* bind_reduce.c — Python bindings of the reduce ops. */
#include "bindings.h"

PyMethodDef an_py_reduce_methods[] = {
    {NULL, NULL, 0, NULL},
};
