/*
 * rw_log: formats one line (timestamp, level, component, caller's text) and
 * writes it with a single write(2) so concurrent threads never interleave.
 */
#include "rw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

rw_log_level_t rw_log_threshold = RW_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

int rw_log_level_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i <= RW_LOG_OFF; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return RW_LOG_WARN;
    return -1;
}

void rw_log_set_level(rw_log_level_t level)
{
    rw_log_threshold = level;
}

void rw_log_write(rw_log_level_t level, const char *component, const char *fmt,
                  ...)
{
    char line[4096];
    struct timeval tv;
    struct tm tm;
    size_t off;
    int n;
    va_list ap;

    if (level < RW_LOG_DEBUG || level >= RW_LOG_OFF)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    off = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line + off, sizeof(line) - off, ".%03dZ %s %s ",
                 (int)(tv.tv_usec / 1000), level_names[level],
                 component ? component : "-");
    if (n > 0)
        off += (size_t)n;
    va_start(ap, fmt);
    n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    off += (size_t)n;
    if (off > sizeof(line) - 2)
        off = sizeof(line) - 2;
    line[off++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, off);
    (void)w;
}

const char *rw_log_quote(char *buf, size_t buflen, const char *s)
{
    size_t o = 0;

    if (buflen < 3) {
        if (buflen)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; s && *s && o + 3 < buflen; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20) {
            buf[o++] = ' ';
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
