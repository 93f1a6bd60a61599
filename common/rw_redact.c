/*
 * rw_redact: find every secret range on the original text, merge the
 * ranges, then write the text once with each range replaced (see
 * rw_redact.h for the rules). Finding before replacing is what makes
 * overlapping secrets (a password inside a URL-encoded DSN, a token that is
 * also a header value) come out as one clean mark.
 */
#include "rw_redact.h"

#include <ctype.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_err.h"

typedef struct needle {
    char *s;
    size_t len;
} needle_t;

struct rw_redactor {
    needle_t *needles;
    size_t n_needles, cap_needles;
    regex_t *res;
    size_t n_res, cap_res;
};

typedef struct range {
    size_t from, to; /* [from, to) */
} range_t;

typedef struct ranges {
    range_t *v;
    size_t n, cap;
    bool oom;
} ranges_t;

rw_redactor_t *rw_redactor_new(void)
{
    return calloc(1, sizeof(rw_redactor_t));
}

void rw_redactor_free(rw_redactor_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_needles; i++)
        free(r->needles[i].s);
    for (size_t i = 0; i < r->n_res; i++)
        regfree(&r->res[i]);
    free(r->needles);
    free(r->res);
    free(r);
}

static bool grow(void **v, size_t *cap, size_t n, size_t size)
{
    size_t ncap;
    void *nv;

    if (n < *cap)
        return true;
    ncap = *cap ? *cap * 2 : 16;
    nv = realloc(*v, ncap * size);
    if (!nv)
        return false;
    *v = nv;
    *cap = ncap;
    return true;
}

/* Takes s (malloc'd); a duplicate or a short form is dropped. */
static rw_err_t add_needle(rw_redactor_t *r, char *s, size_t len)
{
    if (len < RW_REDACT_MIN_LEN) {
        free(s);
        return RW_OK;
    }
    for (size_t i = 0; i < r->n_needles; i++)
        if (r->needles[i].len == len && memcmp(r->needles[i].s, s, len) == 0) {
            free(s);
            return RW_OK;
        }
    if (!grow((void **)&r->needles, &r->cap_needles, r->n_needles,
              sizeof(needle_t))) {
        free(s);
        return RW_ERR_NOMEM;
    }
    r->needles[r->n_needles].s = s;
    r->needles[r->n_needles].len = len;
    r->n_needles++;
    return RW_OK;
}

static char *base64(const unsigned char *in, size_t len, bool url, bool pad,
                    size_t *out_len)
{
    static const char std[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char safe[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *al = url ? safe : std;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t n = len - i < 3 ? len - i : 3;
        if (n > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (n > 2)
            v |= in[i + 2];
        out[o++] = al[(v >> 18) & 63];
        out[o++] = al[(v >> 12) & 63];
        if (n > 1)
            out[o++] = al[(v >> 6) & 63];
        else if (pad)
            out[o++] = '=';
        if (n > 2)
            out[o++] = al[v & 63];
        else if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* RFC 3986 percent-encoding of everything but the unreserved set; with
 * plus, a space is '+'; with slash, '/' stays. */
static char *url_encode(const unsigned char *in, size_t len, bool lower,
                        bool plus, bool slash, size_t *out_len)
{
    const char *hex = lower ? "0123456789abcdef" : "0123456789ABCDEF";
    char *out = malloc(len * 3 + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
            (slash && c == '/')) {
            out[o++] = (char)c;
            continue;
        }
        if (plus && c == ' ') {
            out[o++] = '+';
            continue;
        }
        out[o++] = '%';
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/*
 * The base64 characters that depend on the value alone when it starts k
 * bytes (0..2) after a 3-byte boundary of the encoded data: a value inside
 * a larger encoded blob ("user:" + password in a Basic header or a Docker
 * auth) is found whatever its offset, and whatever follows it. The one or
 * two characters it shares with its neighbours stay.
 */
static rw_err_t add_base64_core(rw_redactor_t *r, const unsigned char *v,
                                size_t len, int k, bool url)
{
    unsigned char *buf = malloc(len + 2);
    size_t n = 0, from, to;
    char *enc, *core;

    if (!buf)
        return RW_ERR_NOMEM;
    memset(buf, 0, (size_t)k);
    memcpy(buf + k, v, len);
    enc = base64(buf, len + (size_t)k, url, false, &n);
    free(buf);
    if (!enc)
        return RW_ERR_NOMEM;
    from = ((size_t)k * 8 + 5) / 6;
    to = ((size_t)k + len) * 8 / 6;
    if (to > n)
        to = n;
    if (to <= from) {
        free(enc);
        return RW_OK;
    }
    core = strndup(enc + from, to - from);
    free(enc);
    if (!core)
        return RW_ERR_NOMEM;
    return add_needle(r, core, to - from);
}

/* The value as a JSON string holds it, without the quotes. */
static char *json_escape(const unsigned char *in, size_t len, size_t *out_len)
{
    char *out = malloc(len * 6 + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, 7, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

rw_err_t rw_redactor_add_secret(rw_redactor_t *r, const char *value, size_t len,
                                bool *added)
{
    const unsigned char *v = (const unsigned char *)value;
    rw_err_t err = RW_OK;
    char *s;
    size_t n;

    if (added)
        *added = false;
    if (!r || !value || len < RW_REDACT_MIN_LEN)
        return RW_OK;
    if (!(s = malloc(len + 1)))
        return RW_ERR_NOMEM;
    memcpy(s, value, len);
    s[len] = '\0';
    if ((err = add_needle(r, s, len)))
        return err;
    for (int url = 0; url < 2; url++) {
        for (int pad = 0; pad < 2; pad++) {
            if (!(s = base64(v, len, url, pad, &n)))
                return RW_ERR_NOMEM;
            if ((err = add_needle(r, s, n)))
                return err;
        }
        for (int k = 0; k < 3; k++)
            if ((err = add_base64_core(r, v, len, k, url)))
                return err;
    }
    /* percent-encoding: either hex case, '+' for a space (forms), '/'
     * kept (the default of many libraries' quote()) */
    for (int form = 0; form < 4; form++)
        for (int lower = 0; lower < 2; lower++) {
            if (!(s = url_encode(v, len, lower, form & 1, form & 2, &n)))
                return RW_ERR_NOMEM;
            if ((err = add_needle(r, s, n)))
                return err;
        }
    if (!(s = json_escape(v, len, &n)))
        return RW_ERR_NOMEM;
    if ((err = add_needle(r, s, n)))
        return err;
    if (added)
        *added = true;
    return RW_OK;
}

rw_err_t rw_redactor_add_pattern(rw_redactor_t *r, const char *ere,
                                 char *errstr, size_t errlen)
{
    int rc;
    char msg[128];

    if (!r || !ere || !*ere)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "redaction pattern: empty");
    if (!grow((void **)&r->res, &r->cap_res, r->n_res, sizeof(regex_t)))
        return RW_ERR_NOMEM;
    rc = regcomp(&r->res[r->n_res], ere, REG_EXTENDED | REG_NEWLINE);
    if (rc != 0) {
        regerror(rc, &r->res[r->n_res], msg, sizeof(msg));
        regfree(&r->res[r->n_res]);
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "redaction pattern '%s': %s", ere, msg);
    }
    r->n_res++;
    return RW_OK;
}

rw_err_t rw_redactor_add_patterns(rw_redactor_t *r, const char *list,
                                  char *errstr, size_t errlen)
{
    const char *p = list;
    rw_err_t err = RW_OK;

    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *one = strndup(p, n);
        if (!one)
            return RW_ERR_NOMEM;
        if (n > 0 && one[n - 1] == '\r')
            one[--n] = '\0';
        if (n > 0)
            err = rw_redactor_add_pattern(r, one, errstr, errlen);
        free(one);
        if (err)
            return err;
        p = nl ? nl + 1 : NULL;
    }
    return RW_OK;
}

static void add_range(ranges_t *rs, size_t from, size_t to)
{
    if (to <= from || rs->oom)
        return;
    if (!grow((void **)&rs->v, &rs->cap, rs->n, sizeof(range_t))) {
        rs->oom = true;
        return;
    }
    rs->v[rs->n].from = from;
    rs->v[rs->n].to = to;
    rs->n++;
}

/*
 * The end of needle matched at text[pos], a line break (\n or \r\n) being
 * allowed between any two of its bytes; 0 when it does not match there.
 */
static size_t match_wrapped(const char *t, size_t len, size_t pos,
                            const needle_t *nd)
{
    size_t i = pos, j = 0;

    while (j < nd->len) {
        if (i >= len)
            return 0;
        if (t[i] == nd->s[j]) {
            i++;
            j++;
            continue;
        }
        if (j > 0 && t[i] == '\n') {
            i++;
            continue;
        }
        if (j > 0 && t[i] == '\r' && i + 1 < len && t[i + 1] == '\n') {
            i += 2;
            continue;
        }
        return 0;
    }
    return i;
}

static void find_needles(const rw_redactor_t *r, const char *t, size_t len,
                         ranges_t *rs)
{
    for (size_t k = 0; k < r->n_needles; k++) {
        const needle_t *nd = &r->needles[k];
        size_t pos = 0;
        while (pos < len) {
            const char *hit = memchr(t + pos, nd->s[0], len - pos);
            size_t at, end;
            if (!hit)
                break;
            at = (size_t)(hit - t);
            end = match_wrapped(t, len, at, nd);
            if (end) {
                add_range(rs, at, end);
                pos = end;
            } else {
                pos = at + 1;
            }
        }
    }
}

static bool is_tok(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-';
}

/* Case-insensitive prefix test of t[pos..len) against lit. */
static bool at_ci(const char *t, size_t len, size_t pos, const char *lit)
{
    size_t n = strlen(lit);

    if (pos + n > len)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)t[pos + i]) != lit[i])
            return false;
    return true;
}

static bool at_cs(const char *t, size_t len, size_t pos, const char *lit)
{
    size_t n = strlen(lit);
    return pos + n <= len && memcmp(t + pos, lit, n) == 0;
}

static size_t skip_blanks(const char *t, size_t len, size_t i)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t'))
        i++;
    return i;
}

/* A credential: runs to white space, a quote or a separator. */
static size_t cred_end(const char *t, size_t len, size_t i)
{
    while (i < len && !isspace((unsigned char)t[i]) && t[i] != '"' &&
           t[i] != '\'' && t[i] != ',' && t[i] != ';' && t[i] != '\0')
        i++;
    return i;
}

/* "Authorization: <scheme> <credential>" and "Bearer <token>". */
static void find_auth(const char *t, size_t len, ranges_t *rs)
{
    static const char *const schemes[] = {"bearer", "basic", "token", "digest",
                                          "negotiate"};

    for (size_t i = 0; i < len; i++) {
        size_t j, end;
        if ((i == 0 || !is_tok((unsigned char)t[i - 1])) &&
            at_ci(t, len, i, "authorization")) {
            j = i + strlen("authorization");
            if (j < len && (t[j] == '"' || t[j] == '\''))
                j++;
            j = skip_blanks(t, len, j);
            if (j >= len || (t[j] != ':' && t[j] != '='))
                continue;
            j = skip_blanks(t, len, j + 1);
            if (j < len && (t[j] == '"' || t[j] == '\''))
                j++;
            for (size_t s = 0; s < sizeof(schemes) / sizeof(schemes[0]); s++) {
                size_t n = strlen(schemes[s]);
                if (at_ci(t, len, j, schemes[s]) && j + n < len &&
                    (t[j + n] == ' ' || t[j + n] == '\t')) {
                    j = skip_blanks(t, len, j + n);
                    break;
                }
            }
            end = cred_end(t, len, j);
            add_range(rs, j, end);
            i = end ? end - 1 : 0;
            continue;
        }
        if ((i == 0 || !is_tok((unsigned char)t[i - 1])) &&
            at_ci(t, len, i, "bearer") && i + 6 < len &&
            (t[i + 6] == ' ' || t[i + 6] == '\t')) {
            j = skip_blanks(t, len, i + 6);
            end = cred_end(t, len, j);
            if (end - j >= 8)
                add_range(rs, j, end);
        }
    }
}

/* Key names whose value is a secret: the name ends with one of these. */
static const char *const secret_keys[] = {
    "password",   "passwd",      "passphrase",  "token",
    "secret",     "api_key",     "apikey",      "access_key",
    "secret_key", "private_key", "credentials", "auth_key",
};

static bool secret_key(const char *t, size_t from, size_t to)
{
    char name[64];
    size_t n = to - from;

    if (n >= sizeof(name))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = (char)tolower((unsigned char)t[from + i]);
        name[i] = c == '-' ? '_' : c;
    }
    name[n] = '\0';
    for (size_t k = 0; k < sizeof(secret_keys) / sizeof(secret_keys[0]); k++) {
        size_t kl = strlen(secret_keys[k]);
        if (n >= kl && strcmp(name + n - kl, secret_keys[k]) == 0)
            return true;
    }
    return false;
}

static bool harmless_value(const char *t, size_t from, size_t to)
{
    /* what build tools print next to such names when no secret follows */
    static const char *const words[] = {
        "null",      "true",     "false",     "none",       "empty",
        "found",     "missing",  "skipped",   "set",        "unset",
        "present",   "absent",   "ok",        "yes",        "no",
        "enabled",   "disabled", "required",  "optional",   "hidden",
        "masked",    "provided", "generated", "configured", "not",
        "[redacted]"};
    size_t n = to - from;
    bool digits = n <= 3;

    if (n == 0)
        return true;
    /* a small count ("token: 3 remaining") is no secret */
    for (size_t i = from; digits && i < to; i++)
        digits = isdigit((unsigned char)t[i]) != 0;
    if (digits)
        return true;
    for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
        if (n == strlen(words[k]) && at_ci(t, to, from, words[k]))
            return true;
    /* already masked by the tool that printed it: *** or xxxx */
    for (size_t i = from; i < to; i++)
        if (t[i] != '*')
            return false;
    return true;
}

/* key=value, key: value, "key": "value", KEY='value' */
static void find_pairs(const char *t, size_t len, ranges_t *rs)
{
    size_t i = 0;

    while (i < len) {
        size_t k0, k1, j, v0, v1;
        char quote = 0;
        if (!is_tok((unsigned char)t[i]) && t[i] != '.') {
            i++;
            continue;
        }
        k0 = i;
        while (i < len && (is_tok((unsigned char)t[i]) || t[i] == '.'))
            i++;
        k1 = i;
        if (!secret_key(t, k0, k1))
            continue;
        j = k1;
        if (j < len && (t[j] == '"' || t[j] == '\''))
            j++;
        j = skip_blanks(t, len, j);
        if (j >= len || (t[j] != '=' && t[j] != ':'))
            continue;
        j = skip_blanks(t, len, j + 1);
        if (j < len && (t[j] == '"' || t[j] == '\''))
            quote = t[j++];
        v0 = j;
        if (quote) {
            while (j < len && t[j] != quote && t[j] != '\n')
                j++;
        } else {
            while (j < len && !isspace((unsigned char)t[j]) && t[j] != '"' &&
                   t[j] != '\'' && t[j] != ',' && t[j] != ';' && t[j] != '&' &&
                   t[j] != ')' && t[j] != '}' && t[j] != ']')
                j++;
        }
        v1 = j;
        if (!harmless_value(t, v0, v1))
            add_range(rs, v0, v1);
        i = j > i ? j : i + 1;
    }
}

static void find_pem(const char *t, size_t len, ranges_t *rs)
{
    size_t i = 0;

    while (i < len) {
        const char *hit = memchr(t + i, '-', len - i);
        size_t b, e, label_end;
        if (!hit)
            return;
        b = (size_t)(hit - t);
        if (!at_cs(t, len, b, "-----BEGIN ")) {
            i = b + 1;
            continue;
        }
        label_end = b + 11;
        while (label_end < len && t[label_end] != '-' && t[label_end] != '\n')
            label_end++;
        /* "PRIVATE KEY" somewhere in the label */
        {
            bool priv = false;
            for (size_t k = b + 11; k + 11 <= label_end; k++)
                if (at_cs(t, len, k, "PRIVATE KEY"))
                    priv = true;
            if (!priv) {
                i = label_end;
                continue;
            }
        }
        e = label_end;
        while (e < len) {
            if (at_cs(t, len, e, "-----END ")) {
                e += 9;
                while (e < len && t[e] != '\n' && !at_cs(t, len, e, "-----"))
                    e++;
                if (at_cs(t, len, e, "-----"))
                    e += 5;
                break;
            }
            e++;
        }
        add_range(rs, b, e);
        i = e > b ? e : b + 1;
    }
}

typedef struct prefix {
    const char *lit;
    size_t min_tail; /* token characters after the prefix */
} prefix_t;

static const prefix_t prefixes[] = {
    {"ghp_", 20},     {"gho_", 20},        {"ghu_", 20},   {"ghs_", 20},
    {"ghr_", 20},     {"github_pat_", 20}, {"glpat-", 20}, {"xoxb-", 10},
    {"xoxa-", 10},    {"xoxp-", 10},       {"xoxr-", 10},  {"xoxs-", 10},
    {"sk_live_", 16}, {"rk_live_", 16},    {"AIza", 35},   {"npm_", 30},
};

static size_t tok_end(const char *t, size_t len, size_t i)
{
    while (i < len && is_tok((unsigned char)t[i]))
        i++;
    return i;
}

/* eyJ<header>.eyJ<payload>.<signature> */
static size_t jwt_end(const char *t, size_t len, size_t i)
{
    size_t a, b, c;

    if (!at_cs(t, len, i, "eyJ"))
        return 0;
    a = tok_end(t, len, i);
    if (a - i < 10 || a >= len || t[a] != '.' || !at_cs(t, len, a + 1, "eyJ"))
        return 0;
    b = tok_end(t, len, a + 1);
    if (b - a < 10 || b >= len || t[b] != '.')
        return 0;
    c = tok_end(t, len, b + 1);
    return c - b >= 10 ? c : 0;
}

static void find_tokens(const char *t, size_t len, ranges_t *rs)
{
    for (size_t i = 0; i < len; i++) {
        size_t end;
        if (i > 0 && is_tok((unsigned char)t[i - 1]))
            continue;
        /* AWS access key id */
        if ((at_cs(t, len, i, "AKIA") || at_cs(t, len, i, "ASIA")) &&
            i + 20 <= len) {
            bool ok = i + 20 == len || !isalnum((unsigned char)t[i + 20]);
            for (size_t k = i + 4; ok && k < i + 20; k++)
                ok = isupper((unsigned char)t[k]) ||
                     isdigit((unsigned char)t[k]);
            if (ok) {
                add_range(rs, i, i + 20);
                continue;
            }
        }
        if ((end = jwt_end(t, len, i))) {
            add_range(rs, i, end);
            i = end - 1;
            continue;
        }
        for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
            size_t n = strlen(prefixes[p].lit);
            if (!at_cs(t, len, i, prefixes[p].lit))
                continue;
            end = tok_end(t, len, i + n);
            if (end - (i + n) >= prefixes[p].min_tail) {
                add_range(rs, i, end);
                i = end - 1;
            }
            break;
        }
    }
}

static void find_patterns(const rw_redactor_t *r, const char *t, size_t len,
                          ranges_t *rs)
{
    for (size_t k = 0; k < r->n_res; k++) {
        size_t pos = 0;
        while (pos < len) {
            regmatch_t m[1];
            m[0].rm_so = (regoff_t)pos;
            m[0].rm_eo = (regoff_t)len;
            if (regexec(&r->res[k], t, 1, m,
                        REG_STARTEND | (pos ? REG_NOTBOL : 0)) != 0)
                break;
            if (m[0].rm_eo > m[0].rm_so)
                add_range(rs, (size_t)m[0].rm_so, (size_t)m[0].rm_eo);
            pos = m[0].rm_eo > (regoff_t)pos ? (size_t)m[0].rm_eo : pos + 1;
        }
    }
}

static int by_from(const void *a, const void *b)
{
    const range_t *x = a, *y = b;
    if (x->from != y->from)
        return x->from < y->from ? -1 : 1;
    return x->to < y->to ? -1 : x->to > y->to;
}

char *rw_redact(const rw_redactor_t *r, const char *text, size_t len,
                size_t *out_len, size_t *n_ranges)
{
    ranges_t rs = {0};
    char *out = NULL;
    size_t o = 0, cap, pos = 0, merged = 0;
    static const rw_redactor_t none;

    if (!r)
        r = &none;
    if (!text)
        len = 0;
    if (len) {
        find_needles(r, text, len, &rs);
        find_auth(text, len, &rs);
        find_pairs(text, len, &rs);
        find_pem(text, len, &rs);
        find_tokens(text, len, &rs);
        find_patterns(r, text, len, &rs);
    }
    if (rs.oom)
        goto out;
    if (rs.n > 1)
        qsort(rs.v, rs.n, sizeof(range_t), by_from);
    /* Each range becomes the mark plus its line breaks: the output is at
     * most len + one mark per range. */
    cap = len + rs.n * sizeof(RW_REDACT_MARK) + 1;
    if (!(out = malloc(cap)))
        goto out;
    for (size_t i = 0; i < rs.n;) {
        size_t from = rs.v[i].from, to = rs.v[i].to;
        for (i++; i < rs.n && rs.v[i].from <= to; i++)
            if (rs.v[i].to > to)
                to = rs.v[i].to;
        memcpy(out + o, text + pos, from - pos);
        o += from - pos;
        memcpy(out + o, RW_REDACT_MARK, strlen(RW_REDACT_MARK));
        o += strlen(RW_REDACT_MARK);
        for (size_t k = from; k < to; k++)
            if (text[k] == '\n')
                out[o++] = '\n';
        pos = to;
        merged++;
    }
    if (len > pos)
        memcpy(out + o, text + pos, len - pos);
    o += len - pos;
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    if (n_ranges)
        *n_ranges = merged;
out:
    free(rs.v);
    return out;
}
