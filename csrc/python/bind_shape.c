/* bind_shape.c — Python bindings of the shape ops. */
#include "bindings.h"

PyMethodDef an_py_shape_methods[] = {
    {NULL, NULL, 0, NULL},
};
