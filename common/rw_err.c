/*
 * rw_err: names, messages and retriability of rw_err_t, generated from the
 * RW_ERR_MAP table in rw_err.h. Nothing else decides retriability.
 */
#include "rw_err.h"

#include <stdarg.h>
#include <stdio.h>

static const struct {
    const char *name;
    const char *msg;
    bool retriable;
} table[] = {
#define RW_ERR_ROW(name, retriable, msg) {#name, msg, retriable},
    RW_ERR_MAP(RW_ERR_ROW)
#undef RW_ERR_ROW
};

const char *rw_err_name(rw_err_t err)
{
    if ((int)err < 0 || err >= RW_ERR__COUNT)
        return "UNKNOWN";
    return table[err].name;
}

const char *rw_err_str(rw_err_t err)
{
    if ((int)err < 0 || err >= RW_ERR__COUNT)
        return "unknown error";
    return table[err].msg;
}

bool rw_err_is_retriable(rw_err_t err)
{
    if ((int)err < 0 || err >= RW_ERR__COUNT)
        return false;
    return table[err].retriable;
}

rw_err_t rw_err_set(char *errstr, size_t errlen, rw_err_t err, const char *fmt,
                    ...)
{
    va_list ap;

    if (errstr && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(errstr, errlen, fmt, ap);
        va_end(ap);
    }
    return err;
}
