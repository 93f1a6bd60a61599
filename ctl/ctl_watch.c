/*
 * ctl_watch: live progress of one run for "redeploy --wait" (and the run
 * commands): targets by state, chunks done, the current wave of a run in
 * waves (its state, and the bake's end), and the fleet's builds in
 * flight against the throttle's cap, refreshed in place on a
 * terminal, one line per change otherwise (logs, CI).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "rw_state.h"

static const char SQL_PROGRESS[] =
    "SELECT r.status,"
    "  (SELECT count(*) FROM run_chunks c WHERE c.run_id = r.id) AS chunks,"
    "  (SELECT count(*) FROM run_chunks c WHERE c.run_id = r.id"
    "      AND c.state IN ('done', 'failed')) AS chunks_done,"
    "  (SELECT COALESCE(json_object_agg(state, n), '{}')"
    "     FROM (SELECT state, count(*) AS n FROM run_targets t"
    "            WHERE t.run_id = r.id GROUP BY state) x) AS by_state,"
    "  (SELECT 'wave ' || w.wave || '/' ||"
    "          (SELECT max(x.wave) FROM run_waves x WHERE x.run_id = r.id)"
    "          || ' ' || w.state"
    "          || CASE WHEN w.state = 'baking' THEN ' until ' ||"
    "               to_char(w.not_before AT TIME ZONE 'UTC',"
    "                       'HH24:MI:SS\"Z\"') ELSE '' END"
    "     FROM run_waves w WHERE w.run_id = r.id"
    "      AND w.state IN ('running', 'baking', 'awaiting_promotion')"
    "     ORDER BY w.wave DESC LIMIT 1) AS wave,"
    "  (SELECT rw_throttle_in_flight() || '/' ||"
    "          LEAST(f.max_in_flight, f.effective_limit)"
    "     FROM fleet_throttle f) AS fleet"
    " FROM deployment_runs r WHERE r.uuid = $1::uuid";

static bool final_status(const char *s)
{
    int st = rw_run_state_parse(s);

    return st >= 0 && rw_run_terminal((rw_run_state_t)st);
}

int rw_ctl_watch_run(rw_pg_t *pg, const char *run_uuid, char *status,
                     size_t len)
{
    const char *p[1] = {run_uuid};
    bool tty = isatty(STDOUT_FILENO);
    char last[512] = "";
    time_t start = time(NULL);

    for (;;) {
        PGresult *res = NULL;
        char errstr[512], line[512];
        json_t *by = NULL;
        size_t off;
        bool done;

        if (rw_pg_exec(pg, SQL_PROGRESS, 1, p, &res, errstr, sizeof(errstr))) {
            rw_ctl_errorf("run", "%s", errstr);
            return -1;
        }
        if (PQntuples(res) != 1) {
            PQclear(res);
            rw_ctl_errorf("run", "no run %s", run_uuid);
            return -1;
        }
        snprintf(status, len, "%s", rw_pg_str(res, 0, "status"));
        by = json_loads(rw_pg_str(res, 0, "by_state"), 0, NULL);
        off = (size_t)snprintf(line, sizeof(line), "%-14s chunks %s/%s", status,
                               rw_pg_str(res, 0, "chunks_done"),
                               rw_pg_str(res, 0, "chunks"));
        if (rw_pg_str(res, 0, "wave") && off < sizeof(line))
            off += (size_t)snprintf(line + off, sizeof(line) - off, "  %s",
                                    rw_pg_str(res, 0, "wave"));
        /* in the state machine's order, pending first */
        for (int i = 0; i < RW_TARGET__COUNT; i++) {
            const char *st = rw_target_state_name((rw_target_state_t)i);
            json_t *v = by ? json_object_get(by, st) : NULL;
            if (v && off < sizeof(line))
                off += (size_t)snprintf(line + off, sizeof(line) - off,
                                        "  %s %lld", st,
                                        (long long)json_integer_value(v));
        }
        json_decref(by);
        /* the whole fleet's builds against the throttle's cap */
        if (rw_pg_str(res, 0, "fleet") && off < sizeof(line))
            off += (size_t)snprintf(line + off, sizeof(line) - off,
                                    "  | fleet in flight %s",
                                    rw_pg_str(res, 0, "fleet"));
        PQclear(res);
        done = final_status(status);
        if (tty) {
            printf("\r\033[K%s  %lds", line, (long)(time(NULL) - start));
            if (done)
                printf("\n");
            fflush(stdout);
        } else if (strcmp(line, last) != 0) {
            printf("%s  %lds\n", line, (long)(time(NULL) - start));
            fflush(stdout);
            snprintf(last, sizeof(last), "%s", line);
        }
        if (done)
            return 0;
        sleep(1);
    }
}
