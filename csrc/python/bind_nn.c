/* bind_nn.c — Python bindings of the nn ops. */
#include "bindings.h"

PyMethodDef an_py_nn_methods[] = {
    {NULL, NULL, 0, NULL},
};
