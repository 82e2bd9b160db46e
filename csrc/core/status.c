/* status.c — thread-local error reporting: the library never exits on bad
   input; it records a message here and returns a status or NULL. */
#include "internal.h"
#include <stdarg.h>
#include <string.h>

static _Thread_local an_status last_status = AN_OK;
static _Thread_local char last_message[512];

an_status an_set_error(an_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, args);
    va_end(args);
    last_status = status;
    return status;
}

an_status an_last_status(void) { return last_status; }

const char *an_last_error(void)
{
    return last_status == AN_OK ? "" : last_message;
}

void an_clear_error(void)
{
    last_status = AN_OK;
    last_message[0] = '\0';
}

const char *an_shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t used = 0;
    used += (size_t)snprintf(buf + used, len - used, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, i ? ", %lld" : "%lld",
                                 (long long)shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}

an_status an_check_not_null(const an_tensor *t, const char *op, const char *arg)
{
    if (!t)
        return an_set_error(AN_ERR_TYPE, "%s: %s must be a tensor, got NULL", op, arg);
    return AN_OK;
}

an_status an_check_ndim(const an_tensor *t, int ndim, const char *op, const char *arg)
{
    if (an_check_not_null(t, op, arg))
        return AN_ERR_TYPE;
    if (t->ndim != ndim) {
        char buf[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE, "%s: expected %s to be %d-D, got shape %s", op,
                            arg, ndim, an_shape_str(t->ndim, t->shape, buf, sizeof buf));
    }
    return AN_OK;
}

an_status an_normalize_dim(int dim, int ndim, const char *op, int *out)
{
    int lo = ndim > 0 ? -ndim : -1, hi = ndim > 0 ? ndim - 1 : 0;
    if (dim < lo || dim > hi)
        return an_set_error(AN_ERR_INDEX,
                            "%s: dimension out of range (expected to be in range of [%d, %d], but got %d)",
                            op, lo, hi, dim);
    *out = dim < 0 ? dim + (ndim > 0 ? ndim : 1) : dim;
    return AN_OK;
}
