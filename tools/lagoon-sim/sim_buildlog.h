/*
 * sim_buildlog: the text of a simulated Lagoon build log (the buildLog
 * field of a Deployment). A few dozen lines of what Lagoon's build-deploy
 * tool prints (git checkout, image builds, pushes, rollouts) with planted
 * secrets: every build variable's value as the build prints it, an
 * Authorization header with a bearer token and a PEM private-key block, so
 * that rollwave's redaction has something real to find. Pure: it does not
 * know where the deployment's state or the settings come from.
 */
#ifndef RW_SIM_BUILDLOG_H
#define RW_SIM_BUILDLOG_H

#include <stddef.h>

#include "sim_buf.h"

/* Lagoon's answer when it cannot read a log from its storage. */
#define RW_SIM_LOG_ERROR_PREFIX "There was an error loading the logs: "

/* One build variable of the bulk (name and value as Lagoon got them). */
typedef struct rw_sim_var {
    const char *name;
    const char *value;
} rw_sim_var_t;

typedef struct rw_sim_log_in {
    const char *project;
    size_t project_len;
    const char *environment;
    size_t environment_len;
    const char *build_name; /* lagoon-build-xxxxxx */
    const char *status;     /* running, complete, failed, cancelled */
    const rw_sim_var_t *vars;
    size_t n_vars;
    const char *bearer;  /* the token of the Authorization line */
    long long pad_bytes; /* a finished log is padded to at least this */
} rw_sim_log_in_t;

/*
 * Appends the log to b: the lines so far for a running build, the whole
 * log ending "Build failed" (failed), "Build cancelled" (cancelled) or
 * "Build and Deploy complete" for finished ones; padding lines go before
 * the last lines, so the end of a long log says how it ended.
 */
void rw_sim_build_log(rw_sim_buf_t *b, const rw_sim_log_in_t *in);

#endif
