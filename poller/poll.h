/*
 * poll: the poller's handling of one due poll event (DESIGN.md section 7,
 * "Poll"): read deploymentsByBulkId, write the chunk's target changes in
 * one statement, finish the chunk or queue its next poll, release or renew
 * locks, finalize the run when its last chunk ends.
 */
#ifndef RW_POLLER_POLL_H
#define RW_POLLER_POLL_H

#include "logs.h"
#include "rw_codec.h"
#include "rw_service.h"

/* logs (may be NULL): build logs fetched after the poll's commit. */
rw_msg_outcome_t rw_poller_poll(rw_service_t *svc, rw_poller_logs_t *logs,
                                const rw_poll_msg_t *m, char *reason,
                                size_t len);

#endif
