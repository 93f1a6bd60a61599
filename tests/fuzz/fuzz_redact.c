/*
 * fuzz_redact: libFuzzer target for rw_redact (rw_redact.h).
 *
 * Input: a first byte n (0..3 used), then n secret lines ending in '\n',
 * then the text. Every secret that was added (long enough) and holds no
 * '[' or ']' (so that no mark, which begins with one and ends with the
 * other, can spell part of it with the text beside it) must not occur in
 * the output, but inside marks: a secret that is part of the mark's own
 * text ("REDACTED") may occur once per mark, never more; the
 * output length is bounded by the text plus one mark per range; the call
 * never fails but on memory. Extra patterns are not fuzzed (regcomp is
 * libc's, not ours).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_redact.h"

static void broken(int line, const char *what)
{
    fprintf(stderr, "fuzz_redact.c:%d: property broken: %s\n", line, what);
    abort();
}

static size_t count(const char *h, size_t hl, const char *n, size_t nl)
{
    size_t c = 0;

    if (nl == 0 || nl > hl)
        return 0;
    for (size_t i = 0; i + nl <= hl; i++)
        c += memcmp(h + i, n, nl) == 0;
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rw_redactor_t *r;
    const char *p = (const char *)data, *end = p + size;
    const char *secrets[3];
    size_t lens[3];
    bool added[3] = {false, false, false};
    size_t n_secrets, out_len = 0, ranges = 0;
    char *out;

    if (size < 1)
        return 0;
    n_secrets = (size_t)(data[0] % 4);
    p++;
    if (!(r = rw_redactor_new()))
        return 0;
    for (size_t i = 0; i < n_secrets; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            n_secrets = i;
            break;
        }
        secrets[i] = p;
        lens[i] = (size_t)(nl - p);
        if (rw_redactor_add_secret(r, p, lens[i], &added[i]) != RW_OK)
            goto out;
        p = nl + 1;
    }
    out = rw_redact(r, p, (size_t)(end - p), &out_len, &ranges);
    if (!out)
        goto out;
    if (out[out_len] != '\0')
        broken(__LINE__, "output not terminated");
    if (out_len > (size_t)(end - p) + ranges * strlen(RW_REDACT_MARK))
        broken(__LINE__, "output longer than text plus marks");
    for (size_t i = 0; i < n_secrets; i++)
        if (added[i] && !memchr(secrets[i], '[', lens[i]) &&
            !memchr(secrets[i], ']', lens[i]) &&
            count(out, out_len, secrets[i], lens[i]) >
                ranges * count(RW_REDACT_MARK, strlen(RW_REDACT_MARK),
                               secrets[i], lens[i]))
            broken(__LINE__, "a secret survived");
    free(out);
out:
    rw_redactor_free(r);
    return 0;
}
