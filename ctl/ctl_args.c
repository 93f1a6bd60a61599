/*
 * ctl_args: argument helpers shared by the subcommands.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>

#include "ctl.h"

int rw_ctl_parse_ll(const char *cmd, const char *opt, const char *val,
                    long long min, long long max, long long *out)
{
    char *end = NULL;
    long long v;

    if (!val) {
        rw_ctl_errorf(cmd, "%s needs a value", opt);
        return -1;
    }
    errno = 0;
    v = strtoll(val, &end, 10);
    if (errno || end == val || *end != '\0') {
        rw_ctl_errorf(cmd, "%s: '%s' is not an integer", opt, val);
        return -1;
    }
    if (v < min || v > max) {
        rw_ctl_errorf(cmd, "%s: %lld is out of range [%lld, %lld]", opt, v, min,
                      max);
        return -1;
    }
    *out = v;
    return 0;
}

/* 8-4-4-4-12 hexadecimal digits. */
bool rw_ctl_is_uuid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}
