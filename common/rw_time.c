/*
 * rw_time: calendar arithmetic without the C library's time zone state:
 * dates map to days by H. Hinnant's days_from_civil, so no timegm
 * normalises an impossible date into a possible one, and the same code
 * runs the same on every libc.
 */
#include "rw_time.h"

#include <stdbool.h>
#include <stdio.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long long z, long long *y, int *m, int *d)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static long long floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int days_in_month(int y, int m)
{
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

/* The first and last millisecond RFC 3339's four-digit years can spell. */
static long long min_ms(void)
{
    return days_from_civil(0, 1, 1) * 86400000LL;
}

static long long max_ms(void)
{
    return days_from_civil(10000, 1, 1) * 86400000LL - 1;
}

rw_err_t rw_time_format(char *buf, size_t len, long long epoch_ms)
{
    long long days = floor_div(epoch_ms, 86400000LL);
    long long ms_of_day = epoch_ms - days * 86400000LL;
    long long y = 0;
    int m = 0, d = 0;

    if (!buf || len < RW_TIME_BUF) {
        if (buf && len > 0)
            buf[0] = '\0';
        return RW_ERR_INVALID_ARG;
    }
    if (epoch_ms < min_ms() || epoch_ms > max_ms()) {
        buf[0] = '\0';
        return RW_ERR_INVALID_ARG;
    }
    civil_from_days(days, &y, &m, &d);
    snprintf(buf, len, "%04lld-%02d-%02dT%02lld:%02lld:%02lld.%03lldZ", y, m, d,
             ms_of_day / 3600000, ms_of_day / 60000 % 60, ms_of_day / 1000 % 60,
             ms_of_day % 1000);
    return RW_OK;
}

/* n decimal digits at s into *v; false if any is not a digit. */
static bool digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

static rw_err_t bad(char *errstr, size_t errlen, const char *s, const char *why)
{
    /* the input is not echoed: it may be untrusted and long */
    (void)s;
    return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "%s", why);
}

/* The zone at *pp (already past the time); advances *pp. */
static rw_err_t parse_zone(const char **pp, unsigned flags, int *off_s,
                           char *errstr, size_t errlen)
{
    const char *p = *pp;
    int sign, oh = 0, om = 0;

    *off_s = 0;
    if (*p == 'Z' || *p == 'z') {
        *pp = p + 1;
        return RW_OK;
    }
    if (*p != '+' && *p != '-') {
        if (flags & RW_TIME_RFC3339)
            return bad(errstr, errlen, p, "zone (Z or +HH:MM) missing");
        return RW_OK; /* no zone: UTC */
    }
    sign = *p == '+' ? 1 : -1;
    p++;
    if (!digits(p, 2, &oh))
        return bad(errstr, errlen, p, "offset: expected HH");
    p += 2;
    if (*p == ':') {
        if (!digits(p + 1, 2, &om))
            return bad(errstr, errlen, p, "offset: expected HH:MM");
        p += 3;
    } else if (flags & RW_TIME_RFC3339) {
        return bad(errstr, errlen, p, "offset: expected HH:MM");
    } else if (p[0] >= '0' && p[0] <= '9') {
        if (!digits(p, 2, &om))
            return bad(errstr, errlen, p, "offset: expected HHMM");
        p += 2;
    }
    if (oh > 23 || om > 59)
        return bad(errstr, errlen, p, "offset out of range");
    *off_s = sign * (oh * 3600 + om * 60);
    *pp = p;
    return RW_OK;
}

rw_err_t rw_time_parse(const char *s, unsigned flags, long long *epoch_ms,
                       char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, off_s = 0;
    bool rfc = flags & RW_TIME_RFC3339;
    const char *p = NULL;
    long long t;

    if (!s || !epoch_ms)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "no date given");
    /* Each check reads only up to the first mismatch, so s may be short. */
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d))
        return bad(errstr, errlen, s, "expected YYYY-MM-DD");
    if (mo < 1 || mo > 12)
        return bad(errstr, errlen, s, "month out of range");
    if (d < 1 || d > days_in_month(y, mo))
        return bad(errstr, errlen, s, "no such day in that month");
    p = s + 10;
    if (*p == '\0' && (flags & RW_TIME_PARTIAL))
        goto compute;
    if (*p != 'T' && *p != 't' && (rfc || *p != ' '))
        return bad(errstr, errlen, s,
                   rfc ? "expected T after the date"
                       : "expected T or a space after the date");
    p++;
    if (!digits(p, 2, &h) || p[2] != ':' || !digits(p + 3, 2, &mi))
        return bad(errstr, errlen, s, "expected HH:MM:SS");
    p += 5;
    if (*p == ':') {
        if (!digits(p + 1, 2, &sec))
            return bad(errstr, errlen, s, "expected HH:MM:SS");
        p += 3;
    } else if (!(flags & RW_TIME_PARTIAL)) {
        return bad(errstr, errlen, s, "expected HH:MM:SS");
    }
    if (h > 23 || mi > 59 || sec > 60)
        return bad(errstr, errlen, s, "time of day out of range");
    if (*p == '.' || (*p == ',' && !rfc)) {
        int nd = 0;
        p++;
        while (p[nd] >= '0' && p[nd] <= '9') {
            if (nd < 3)
                ms = ms * 10 + (p[nd] - '0');
            nd++;
        }
        if (nd < 1 || (rfc && nd > 9))
            return bad(errstr, errlen, s,
                       rfc ? "fraction: expected 1..9 digits"
                           : "fraction: expected digits");
        for (int i = nd; i < 3; i++)
            ms *= 10;
        p += nd;
    }
    err = parse_zone(&p, flags, &off_s, errstr, errlen);
    if (err)
        return err;
    if (*p != '\0')
        return bad(errstr, errlen, s, "unexpected text after the date");
compute:
    /* second 60 adds up like any other: the next minute's first second */
    t = (days_from_civil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + sec -
         off_s) *
            1000LL +
        ms;
    /*
     * An offset or a leap second can carry the instant outside the years
     * rw_time_format can write (0000-9999 UTC): refuse it, so that every
     * time parsed is one that can be written back.
     */
    if (t < min_ms() || t > max_ms())
        return bad(errstr, errlen, s, "outside the years 0000..9999 UTC");
    *epoch_ms = t;
    return RW_OK;
}
