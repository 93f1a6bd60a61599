/*
 * logs: the poller's build-log fetching (DESIGN.md section 12, "Build
 * logs"). After a poll's commit, the logs of the targets that ended in
 * that poll (failed ones, or all or a sample of them as configured) are
 * read from Lagoon in one aliased request per chunk, redacted, cut and
 * stored; logs Lagoon could not read are fetched again later from the
 * poller's periodic tick. Best effort: nothing here changes a target, a
 * chunk or a run, and a failure is only logged (never the log itself).
 */
#ifndef RW_POLLER_LOGS_H
#define RW_POLLER_LOGS_H

#include <libpq-fe.h>

#include "rw_err.h"
#include "rw_service.h"
#include "rw_settings.h"
#include "rw_state.h"

typedef struct rw_poller_logs rw_poller_logs_t;

/* Reads the ROLLWAVE_LOG_* settings and builds the process's redactor; a
 * bad setting or redaction pattern is refused, naming it. */
rw_err_t rw_poller_logs_new(const rw_settings_t *s, rw_poller_logs_t **out,
                            char *errstr, size_t errlen);
/* Accepts NULL. */
void rw_poller_logs_destroy(rw_poller_logs_t *lg);

/*
 * The logs of the targets of u (n updates of run_id, committed) that just
 * became terminal and are wanted. tg holds the targets' rows in the order
 * of u (lagoon_project, lagoon_environment, deployment_name). lg may be
 * NULL (no logs).
 */
void rw_poller_logs_after_poll(rw_poller_logs_t *lg, rw_service_t *svc,
                               long long run_id, const char *run_uuid,
                               const rw_target_update_t *u, size_t n,
                               const PGresult *tg);

/* One retry round of logs Lagoon could not read, when one is due. */
void rw_poller_logs_retry(rw_poller_logs_t *lg, rw_service_t *svc);

#endif
