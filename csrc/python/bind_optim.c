/* bind_optim.c — Python bindings of the optim ops. */
#include "bindings.h"

PyMethodDef an_py_optim_methods[] = {
    {NULL, NULL, 0, NULL},
};
