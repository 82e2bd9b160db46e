/* bind_loss.c — Python bindings of the loss ops. */
#include "bindings.h"

PyMethodDef an_py_loss_methods[] = {
    {NULL, NULL, 0, NULL},
};
