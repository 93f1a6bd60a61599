/*
 * rw_buildlog: build logs of targets, from Lagoon's answer to a stored row
 * (schemas/sql/0012_build_logs.sql): the redactor of a process's configured
 * secrets, the cut to the newest bytes, and the batched writes and reads
 * of target_logs (also the reads "run logs" and the API share). It does not
 * talk to Lagoon (rw_lagoon does) nor decide which targets want a log (the
 * poller does).
 */
#ifndef RW_BUILDLOG_H
#define RW_BUILDLOG_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_lagoon.h"
#include "rw_pg.h"
#include "rw_redact.h"
#include "rw_settings.h"

/* Attempts at a log Lagoon could not read, and the wait between them. */
#define RW_BUILDLOG_MAX_ATTEMPTS 3
/* Logs fetched again by one retry round at most (one request). */
#define RW_BUILDLOG_RETRY_BATCH 20
/* Bytes kept beyond the limit for redaction (see rw_buildlog_shape). */
#define RW_BUILDLOG_SLACK (64 * 1024)

typedef enum rw_buildlog_mode {
    RW_BUILDLOG_FAILED = 0, /* targets that ended failed (the default) */
    RW_BUILDLOG_ALL,        /* every terminal target, or a sample */
    RW_BUILDLOG_NONE,
} rw_buildlog_mode_t;

/* ROLLWAVE_LOG_FETCH: failed | all | none. */
rw_err_t rw_buildlog_mode_parse(const char *s, rw_buildlog_mode_t *out,
                                char *errstr, size_t errlen);

/*
 * The redactor of the process's configured secrets: the Lagoon token (and
 * the token file's content), the passwords inside ROLLWAVE_PG_DSN and
 * ROLLWAVE_REDIS_URL, ROLLWAVE_KAFKA_SASL_PASSWORD, and the patterns of
 * ROLLWAVE_LOG_REDACT_PATTERNS (a bad one is refused, naming it).
 */
rw_err_t rw_buildlog_redactor_new(const rw_settings_t *s, rw_redactor_t **out,
                                  char *errstr, size_t errlen);

/*
 * The text to store for a log of len bytes: redacted with each redactor
 * of rs (n_rs, NULL entries skipped: the process's secrets, a run's
 * variables), then cut to its last max_bytes bytes (from the start of a
 * line when one begins in them) behind a first line "[... N bytes cut
 * ...]" (N counts the bytes left out: those of the first cut below as
 * Lagoon sent them, the rest after redaction). The log is
 * first cut to max_bytes + RW_BUILDLOG_SLACK so redaction costs no more
 * than that; a secret split by that first cut lies in the slack, which
 * the second cut drops. NUL bytes become spaces (Postgres text holds
 * none). malloc'd; NULL on ENOMEM.
 */
char *rw_buildlog_shape(const rw_redactor_t *const *rs, size_t n_rs,
                        const char *log, size_t len, size_t max_bytes,
                        size_t *out_len);

/* One log to store (strings are the caller's). */
typedef struct rw_buildlog_row {
    long long target_id;
    const char *deployment_name;
    bool stored;       /* false: unavailable */
    long long bytes;   /* as Lagoon sent it */
    const char *text;  /* stored: the shaped text */
    const char *error; /* unavailable: why (Lagoon's reason, shaped) */
} rw_buildlog_row_t;

/*
 * One statement for n rows of run_id. A row already stored stays as it
 * is; an unavailable one is replaced, counting one more attempt.
 */
rw_err_t rw_buildlog_store(rw_pg_t *pg, long long run_id,
                           const rw_buildlog_row_t *rows, size_t n,
                           char *errstr, size_t errlen);

/* A log to fetch again, as rw_buildlog_due reads it. */
typedef struct rw_buildlog_due {
    long long run_id, target_id;
    char *project, *environment, *deployment_name;
} rw_buildlog_due_t;

/*
 * Up to max unavailable logs with fewer than RW_BUILDLOG_MAX_ATTEMPTS
 * attempts whose last fetch is older than retry_after_s. Free with
 * rw_buildlog_due_free.
 */
rw_err_t rw_buildlog_due(rw_pg_t *pg, long long retry_after_s, size_t max,
                         rw_buildlog_due_t **out, size_t *n, char *errstr,
                         size_t errlen);
void rw_buildlog_due_free(rw_buildlog_due_t *d, size_t n);

/* Where a page of rw_buildlog_read starts: after this row. */
typedef struct rw_buildlog_key {
    long long chunk, instance_id;
    long long log_id; /* 0: a failed target without a log row */
} rw_buildlog_key_t;

/*
 * The logs of run run_id's targets, as "rollwavectl run logs" and GET
 * /api/v1/runs/{uuid}/logs show them, into *res (the caller's, PQclear):
 * a row per target and log row (a retried target's deployments oldest
 * first) and one per failed target without any (log_state "none"),
 * ordered by chunk, instance_id, log_id. instance_id 0 reads every
 * instance; failed_only only targets that ended failed; after NULL starts
 * at the first row; limit 0 reads all. One statement, walking
 * run_targets_run_chunk_idx from after's chunk. Columns: instance_id,
 * name, target (project/environment), state, chunk, attempt,
 * deployment_name, log_id, log_state (stored, unavailable, none),
 * log_attempts, bytes_original, bytes (stored), cut_bytes (the count of
 * the "[... N bytes cut ...]" first line, NULL when kept whole),
 * fetched_at (ISO 8601 UTC), error, log (redacted when stored).
 */
rw_err_t rw_buildlog_read(rw_pg_t *pg, long long run_id, long long instance_id,
                          bool failed_only, const rw_buildlog_key_t *after,
                          long long limit, PGresult **res, char *errstr,
                          size_t errlen);

/*
 * A redactor of the values of a run's build variables (what its bulks
 * carried); values under RW_REDACT_MIN_LEN are left out by the redactor.
 */
rw_err_t rw_buildlog_vars_redactor(const rw_lagoon_var_t *vars, size_t n_vars,
                                   rw_redactor_t **out, char *errstr,
                                   size_t errlen);

#endif
