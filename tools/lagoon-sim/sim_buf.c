/*
 * sim_buf: growable buffer and JSON string escaping for the Lagoon
 * simulator's hand-built answers. No parsing, no I/O.
 */
#include "sim_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rw_sim_buf_init(rw_sim_buf_t *b)
{
    memset(b, 0, sizeof(*b));
}

void rw_sim_buf_free(rw_sim_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof(*b));
}

char *rw_sim_buf_steal(rw_sim_buf_t *b, size_t *len)
{
    char *s = b->failed ? NULL : b->data;

    if (b->failed)
        free(b->data);
    if (len)
        *len = s ? b->len : 0;
    memset(b, 0, sizeof(*b));
    return s;
}

bool rw_sim_buf_failed(const rw_sim_buf_t *b)
{
    return b->failed;
}

static bool reserve(rw_sim_buf_t *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (b->failed)
        return false;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void rw_sim_buf_add(rw_sim_buf_t *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void rw_sim_buf_puts(rw_sim_buf_t *b, const char *s)
{
    rw_sim_buf_add(b, s, strlen(s));
}

void rw_sim_buf_printf(rw_sim_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void rw_sim_buf_json_str(rw_sim_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;

    rw_sim_buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen = 2;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        rw_sim_buf_add(b, s + start, i - start);
        start = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        rw_sim_buf_add(b, esc, elen);
    }
    rw_sim_buf_add(b, s + start, n - start);
    rw_sim_buf_add(b, "\"", 1);
}

void rw_sim_buf_json_cstr(rw_sim_buf_t *b, const char *s)
{
    if (!s)
        rw_sim_buf_puts(b, "null");
    else
        rw_sim_buf_json_str(b, s, strlen(s));
}

void rw_sim_buf_int(rw_sim_buf_t *b, long long v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    unsigned long long u =
        v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    rw_sim_buf_add(b, tmp + i, sizeof(tmp) - i);
}

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/*
 * Civil date from days since 1970-01-01 (H. Hinnant's algorithm): done by
 * hand because gmtime_r + strftime per row dominated large answers.
 */
void rw_sim_buf_json_date(rw_sim_buf_t *b, long long ms)
{
    char out[21];
    long long secs, days, z, era, doe, yoe, y, doy, mp, d, m, sod;

    if (ms <= 0) {
        rw_sim_buf_puts(b, "null");
        return;
    }
    secs = ms / 1000;
    days = secs / 86400;
    sod = secs % 86400;
    z = days + 719468;
    era = z / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    out[0] = '"';
    put2(out + 1, (unsigned)(y / 100));
    put2(out + 3, (unsigned)(y % 100));
    out[5] = '-';
    put2(out + 6, (unsigned)m);
    out[8] = '-';
    put2(out + 9, (unsigned)d);
    out[11] = ' ';
    put2(out + 12, (unsigned)(sod / 3600));
    out[14] = ':';
    put2(out + 15, (unsigned)(sod / 60 % 60));
    out[17] = ':';
    put2(out + 18, (unsigned)(sod % 60));
    out[20] = '"';
    rw_sim_buf_add(b, out, sizeof(out));
}
