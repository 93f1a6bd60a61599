/*
 * rw_redact: secrets out of text before it is stored or printed (build
 * logs first of all: nothing in Lagoon's build path redacts them).
 *
 * A redactor holds literal secrets and extra patterns; rw_redact() finds,
 * on the original text, every range that is
 *
 *   - a known secret (>= RW_REDACT_MIN_LEN bytes) in its plain, base64
 *     (standard and URL-safe, with or without padding) or URL-encoded form
 *     (either hex case), also when a line break (\n or \r\n) splits it
 *     anywhere: build tools wrap long lines;
 *   - the credential of an `Authorization: Bearer|Basic|Token ...` header
 *     or of any `Bearer <token>`;
 *   - the value of a password/passwd/pwd/token/secret/api_key/apikey/
 *     access_key/private_key/client_secret key (any case, also inside a
 *     longer name such as DB_PASSWORD) given with `=` or `:`;
 *   - a PEM private-key block (BEGIN ... PRIVATE KEY to its END line, or to
 *     the end of the text when the END line was cut);
 *   - an AWS access key id (AKIA/ASIA + 16 upper-case letters or digits);
 *   - a token with a well-known prefix (GitHub ghp_/gho_/ghu_/ghs_/ghr_/
 *     github_pat_, GitLab glpat-, Slack xox?-, Stripe sk_live_/rk_live_,
 *     Google AIza, npm npm_) or a JWT (eyJ...eyJ...sig);
 *   - a match of an extra POSIX extended regular expression;
 *
 * merges overlapping and adjacent ranges and replaces each by
 * RW_REDACT_MARK. Line breaks inside a redacted range are kept, so line
 * numbers of the log stay right. Values shorter than RW_REDACT_MIN_LEN are
 * not secrets (they would shred the log: "true", "main", ports).
 *
 * Pure: no I/O, no globals; a redactor is read-only once built and may be
 * shared by threads.
 */
#ifndef RW_REDACT_H
#define RW_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"

#define RW_REDACT_MIN_LEN 8
#define RW_REDACT_MARK    "[REDACTED]"

typedef struct rw_redactor rw_redactor_t;

rw_redactor_t *rw_redactor_new(void);
void rw_redactor_free(rw_redactor_t *r);

/*
 * Add a secret value and its encoded forms. Shorter than
 * RW_REDACT_MIN_LEN: ignored (*added false). ENOMEM: RW_ERR_NOMEM.
 */
rw_err_t rw_redactor_add_secret(rw_redactor_t *r, const char *value, size_t len,
                                bool *added);

/* Add an extra pattern (POSIX ERE); a bad one is refused naming it. */
rw_err_t rw_redactor_add_pattern(rw_redactor_t *r, const char *ere,
                                 char *errstr, size_t errlen);

/*
 * Add each pattern of a list separated by newlines (the form of the
 * setting that configures them); empty lines are skipped.
 */
rw_err_t rw_redactor_add_patterns(rw_redactor_t *r, const char *list,
                                  char *errstr, size_t errlen);

/*
 * The text with every secret replaced (malloc'd, NUL-terminated, length
 * in *out_len when not NULL; NUL bytes of the input are kept). *n_ranges
 * (may be NULL) counts the ranges replaced. NULL on ENOMEM only.
 */
char *rw_redact(const rw_redactor_t *r, const char *text, size_t len,
                size_t *out_len, size_t *n_ranges);

#endif
