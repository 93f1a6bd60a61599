/*
 * ctl: the rollwavectl subcommand interface. rollwavectl.c holds the table
 * of subcommands and the configuration; each subcommand lives in its own
 * ctl_<name>.c. Subcommands print results on stdout and problems on stderr;
 * they never exit() themselves.
 */
#ifndef RW_CTL_H
#define RW_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "rw_pg.h"
#include "rw_settings.h"

/* Exit statuses of rollwavectl. */
#define RW_CTL_EXIT_OK     0 /* done */
#define RW_CTL_EXIT_FAILED 1 /* refused or failed */
#define RW_CTL_EXIT_USAGE  2 /* unknown command, bad arguments or config */

/*
 * A subcommand. argv[0] is the subcommand name, argv[1..] its own
 * arguments ("--help" has already been handled). s holds the loaded
 * configuration of the key groups the command's table row asks for.
 * Returns one of RW_CTL_EXIT_*.
 */
typedef int (*rw_ctl_fn)(int argc, char **argv, const rw_settings_t *s);

/* Print "rollwavectl <cmd>: <message>" on stderr. */
void rw_ctl_errorf(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* migrate [--status]: apply pending migrations or list their state. */
int rw_ctl_migrate(int argc, char **argv, const rw_settings_t *s);

/* seed: create a fleet of store apps, groups and instances. */
int rw_ctl_seed(int argc, char **argv, const rw_settings_t *s);

/* redeploy: start a manual run over instances or a store app. */
int rw_ctl_redeploy(int argc, char **argv, const rw_settings_t *s);

/* runs: list runs. */
int rw_ctl_runs(int argc, char **argv, const rw_settings_t *s);

/* run show|wait|logs|pause|resume|abort|retry UUID: dispatches to the
 * three below. */
int rw_ctl_run(int argc, char **argv, const rw_settings_t *s);
/* run show|wait UUID (argv[0] is "show" or "wait"). */
int rw_ctl_run_inspect(int argc, char **argv, const rw_settings_t *s);
/* run logs UUID [--instance ID] [--failed] [--json] (argv[0] is "logs"). */
int rw_ctl_run_logs(int argc, char **argv, const rw_settings_t *s);
/* run pause|resume|abort|retry UUID (argv[0] is the verb). */
int rw_ctl_run_control(int argc, char **argv, const rw_settings_t *s);

/* instance history ID. */
int rw_ctl_instance(int argc, char **argv, const rw_settings_t *s);

/* lag: consumer group lag. */
int rw_ctl_lag(int argc, char **argv, const rw_settings_t *s);

/* replay: move a group's offsets. */
int rw_ctl_replay(int argc, char **argv, const rw_settings_t *s);

/* dlq list|show|requeue. */
int rw_ctl_dlq(int argc, char **argv, const rw_settings_t *s);

/* schedule: a store app's cadence. group: a user group's beta flag. */
int rw_ctl_schedule(int argc, char **argv, const rw_settings_t *s);
int rw_ctl_group(int argc, char **argv, const rw_settings_t *s);
/* strategy: a store app's strategy and window, a user group's window. */
int rw_ctl_strategy(int argc, char **argv, const rw_settings_t *s);

/* token create|revoke|list: rollwave-api bearer tokens. */
int rw_ctl_token(int argc, char **argv, const rw_settings_t *s);

/* webhook add|list|remove|test|deliveries: run-event webhooks. */
int rw_ctl_webhook(int argc, char **argv, const rw_settings_t *s);

/* throttle [--max-in-flight N] [--rate R]: show or change the fleet limits. */
int rw_ctl_throttle(int argc, char **argv, const rw_settings_t *s);

/* retention [--dry-run] [--days N]: delete old runs in batches. */
int rw_ctl_retention(int argc, char **argv, const rw_settings_t *s);

/* One printed column: the result column and its heading. */
typedef struct rw_ctl_col {
    const char *name;
    const char *head;
    bool duration; /* seconds shown as 1h02m03s */
} rw_ctl_col_t;

/* Row row of res as a JSON object, one member per column, typed by oid. */
json_t *rw_ctl_row_json(const PGresult *res, int row);

/* "1h02m03s", "4m05s", "12s". */
void rw_ctl_fmt_duration(long long secs, char *buf, size_t len);

/* Every row of res under a heading, columns aligned, the last unpadded. */
void rw_ctl_print_table(const PGresult *res, const rw_ctl_col_t *cols,
                        size_t n);

/*
 * A listing: every row of res as a JSON array (json), else `none` when
 * there is no row, else the table. Returns RW_CTL_EXIT_FAILED only if the
 * JSON could not be written.
 */
int rw_ctl_print_rows(const PGresult *res, const rw_ctl_col_t *cols, size_t n,
                      bool json, const char *none);

/*
 * Parse val as an integer in [min, max] for option opt of command cmd.
 * On error prints "rollwavectl <cmd>: <opt>: ..." and returns -1.
 */
int rw_ctl_parse_ll(const char *cmd, const char *opt, const char *val,
                    long long min, long long max, long long *out);

/* Whether s is a UUID: 8-4-4-4-12 hexadecimal digits. */
bool rw_ctl_is_uuid(const char *s);

/*
 * Show a run's progress (targets by state, chunks) in place on a terminal,
 * one line per refresh otherwise, until the run is final or the process is
 * interrupted. Returns the run's final status name via status (len bytes).
 */
int rw_ctl_watch_run(rw_pg_t *pg, const char *run_uuid, char *status,
                     size_t len);

#endif
