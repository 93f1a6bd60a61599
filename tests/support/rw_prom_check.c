/*
 * rw_prom_check: a Prometheus text-format (0.0.4) validator written
 * independently of the renderer, shared by the tests that read /metrics.
 */
#include "rw_prom_check.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- an exposition validator independent of the renderer -------------- */

static size_t name_len(const char *s)
{
    size_t n = 0;

    if (!(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_' || s[n] == ':')
        n++;
    return n;
}

static int valid_value(const char *s)
{
    char *end;

    if (!strcmp(s, "NaN") || !strcmp(s, "+Inf") || !strcmp(s, "-Inf"))
        return 1;
    if (!*s || strspn(s, "0123456789.eE+-") != strlen(s))
        return 0;
    strtod(s, &end);
    return *end == '\0';
}

/* Escapes allowed in HELP text (\\ and \n) or label values (also \"). */
static int valid_escapes(const char *s, size_t n, int quote)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20)
            return 0;
        if (s[i] != '\\')
            continue;
        if (i + 1 >= n)
            return 0;
        i++;
        if (s[i] != '\\' && s[i] != 'n' && !(quote && s[i] == '"'))
            return 0;
    }
    return 1;
}

int rw_prom_valid_line(const char *line)
{
    const char *p;
    size_t n;

    if (line[0] == '#') {
        if (!strncmp(line, "# HELP ", 7)) {
            n = name_len(line + 7);
            p = line + 7 + n;
            return n > 0 &&
                   (*p == '\0' ||
                    (*p == ' ' && valid_escapes(p + 1, strlen(p + 1), 0)));
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            n = name_len(line + 7);
            p = line + 7 + n;
            return n > 0 && (!strcmp(p, " counter") || !strcmp(p, " gauge") ||
                             !strcmp(p, " histogram"));
        }
        return 0;
    }
    n = name_len(line);
    if (n == 0)
        return 0;
    p = line + n;
    if (*p == '{') {
        p++;
        for (;;) {
            const char *v;
            if (!(isalpha((unsigned char)*p) || *p == '_'))
                return 0;
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
            if (p[0] != '=' || p[1] != '"')
                return 0;
            v = p += 2;
            while (*p && *p != '"')
                p += (*p == '\\' && p[1]) ? 2 : 1;
            if (*p != '"' || !valid_escapes(v, (size_t)(p - v), 1))
                return 0;
            p++;
            if (*p == '}')
                break;
            if (*p != ',')
                return 0;
            p++;
        }
        p++;
    }
    if (*p != ' ')
        return 0;
    return valid_value(p + 1);
}

/*
 * Every line valid; each family has one HELP and one TYPE before its
 * samples, and its samples follow contiguously. Returns 0 or the 1-based
 * number of the first bad line, with why.
 */
int rw_prom_check_exposition(const char *text, char *why, size_t whylen)
{
    char seen[64][128];
    int nseen = 0, lineno = 0;
    char fam[128] = "", type[16] = "";
    const char *p = text;

    snprintf(why, whylen, "ok");
    if (!*text || text[strlen(text) - 1] != '\n') {
        snprintf(why, whylen, "text does not end with a newline");
        return -1;
    }
    while (*p) {
        const char *nl = strchr(p, '\n');
        char line[1024];
        size_t len = (size_t)(nl - p);

        lineno++;
        if (len >= sizeof(line)) {
            snprintf(why, whylen, "line too long");
            return lineno;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (!rw_prom_valid_line(line)) {
            snprintf(why, whylen, "invalid line: %s", line);
            return lineno;
        }
        if (!strncmp(line, "# HELP ", 7)) {
            size_t n = name_len(line + 7);
            for (int i = 0; i < nseen; i++)
                if (strlen(seen[i]) == n && !strncmp(seen[i], line + 7, n)) {
                    snprintf(why, whylen, "family repeated: %s", line);
                    return lineno;
                }
            if (nseen == 64 || n >= sizeof(seen[0]))
                return lineno;
            snprintf(seen[nseen++], sizeof(seen[0]), "%.*s", (int)n, line + 7);
            snprintf(fam, sizeof(fam), "%.*s", (int)n, line + 7);
            type[0] = '\0';
        } else if (!strncmp(line, "# TYPE ", 7)) {
            size_t n = name_len(line + 7);
            if (strlen(fam) != n || strncmp(fam, line + 7, n) || type[0]) {
                snprintf(why, whylen, "TYPE without its HELP: %s", line);
                return lineno;
            }
            snprintf(type, sizeof(type), "%s", line + 8 + n);
        } else {
            size_t n = name_len(line), f = strlen(fam);
            const char *suffix = line + f;
            int ok = type[0] && n >= f && !strncmp(line, fam, f);
            if (ok && !strcmp(type, "histogram"))
                ok = (n == f + 7 && !strncmp(suffix, "_bucket", 7)) ||
                     (n == f + 4 && !strncmp(suffix, "_sum", 4)) ||
                     (n == f + 6 && !strncmp(suffix, "_count", 6));
            else if (ok)
                ok = n == f;
            if (!ok) {
                snprintf(why, whylen, "sample outside its family: %s", line);
                return lineno;
            }
        }
    }
    return 0;
}
