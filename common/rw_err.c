/*
 * rw_err: names, messages and classes (retry, in doubt, permanent) of
 * rw_err_t, generated from the RW_ERR_MAP table in rw_err.h. Nothing else
 * decides retriability.
 */
#include "rw_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *msg;
    rw_err_class_t on_read;
    rw_err_class_t on_send;
} table[] = {
#define RW_ERR_ROW(name, on_read, on_send, msg)                                \
    {#name, msg, RW_ERR_CLASS_##on_read, RW_ERR_CLASS_##on_send},
    RW_ERR_MAP(RW_ERR_ROW)
#undef RW_ERR_ROW
};

static const char *const class_names[] = {
    [RW_ERR_CLASS_PERMANENT] = "permanent",
    [RW_ERR_CLASS_RETRY] = "retry",
    [RW_ERR_CLASS_IN_DOUBT] = "in_doubt",
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

rw_err_class_t rw_err_class(rw_err_t err, rw_err_op_t op)
{
    if ((int)err < 0 || err >= RW_ERR__COUNT)
        return RW_ERR_CLASS_PERMANENT;
    /* An op outside the enum is taken as SEND, the cautious reading. */
    return op == RW_OP_READ ? table[err].on_read : table[err].on_send;
}

const char *rw_err_class_name(rw_err_class_t c)
{
    if ((int)c < 0 || (size_t)c >= sizeof(class_names) / sizeof(*class_names))
        return "unknown";
    return class_names[c];
}

bool rw_err_is_retriable(rw_err_t err)
{
    return rw_err_class(err, RW_OP_READ) == RW_ERR_CLASS_RETRY;
}

rw_err_t rw_err_set(char *errstr, size_t errlen, rw_err_t err, const char *fmt,
                    ...)
{
    va_list ap;

    if (errstr && errlen > 0) {
        int n;
        va_start(ap, fmt);
        n = vsnprintf(errstr, errlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n >= errlen)
            rw_utf8_trim_partial(errstr);
    }
    return err;
}

void rw_utf8_trim_partial(char *s)
{
    size_t len = strlen(s), i = len;
    unsigned char lead;
    size_t need;

    /* back to the last byte that starts a character */
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    lead = (unsigned char)s[i - 1];
    need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (len - (i - 1) < need)
        s[i - 1] = '\0';
}
