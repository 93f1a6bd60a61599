/*
 * rollwavectl: the operator CLI. This file holds the table of subcommands,
 * dispatches to them, prints help and loads the configuration groups each
 * subcommand needs. The subcommands themselves live in ctl_<name>.c; none
 * of their logic belongs here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "rw_config.h"
#include "rw_log.h"
#include "rw_settings.h"

/* Configuration groups a subcommand may need, besides the process keys. */
enum {
    NEED_PG = 1u << 0,
    NEED_REDIS = 1u << 1,
    NEED_KAFKA = 1u << 2,
    NEED_LAGOON = 1u << 3,
    NEED_SCHEDULE = 1u << 4,
    NEED_PG_OPTIONAL = 1u << 5, /* the DSN, for some of its options only */
    NEED_THROTTLE = 1u << 6,
    NEED_RETENTION = 1u << 7,
    NEED_WEBHOOK = 1u << 8,
};

/* The CLI logs warnings and errors only by default: its output is the
 * report, and library start-up lines would only clutter it. */
static const rw_cfg_key_t keys_process[] = {
    RW_KEY("ROLLWAVE_LOG_LEVEL", RW_CFG_LEVEL, log_level, "warn", 0, 0, 0,
           "log threshold: debug, info, warn, error or off"),
};
static const rw_cfg_key_t keys_pg[] = {RW_KEYS_PG};
static const rw_cfg_key_t keys_pg_optional[] = {
    RW_KEY("ROLLWAVE_PG_DSN", RW_CFG_SECRET, pg_dsn, NULL, 0, 0, 0,
           "libpq connection string or URI; required by replay --execute, "
           "which records the re-opened offsets there"),
};
static const rw_cfg_key_t keys_redis[] = {RW_KEYS_REDIS};
static const rw_cfg_key_t keys_kafka[] = {RW_KEYS_KAFKA};
static const rw_cfg_key_t keys_lagoon[] = {RW_KEYS_LAGOON};
static const rw_cfg_key_t keys_schedule[] = {RW_KEYS_SCHEDULE, RW_KEYS_TRIGGER,
                                             RW_KEYS_LOCK};
static const rw_cfg_key_t keys_throttle[] = {RW_KEYS_THROTTLE};
static const rw_cfg_key_t keys_retention[] = {RW_KEYS_RETENTION,
                                              RW_KEYS_OUTBOX};
static const rw_cfg_key_t keys_webhook[] = {RW_KEYS_WEBHOOK};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

static const struct key_group {
    unsigned need; /* 0 = always */
    const rw_cfg_key_t *keys;
    size_t n;
} groups[] = {
    {0, keys_process, NKEYS(keys_process)},
    {NEED_PG, keys_pg, NKEYS(keys_pg)},
    {NEED_PG_OPTIONAL, keys_pg_optional, NKEYS(keys_pg_optional)},
    {NEED_REDIS, keys_redis, NKEYS(keys_redis)},
    {NEED_KAFKA, keys_kafka, NKEYS(keys_kafka)},
    {NEED_LAGOON, keys_lagoon, NKEYS(keys_lagoon)},
    {NEED_SCHEDULE, keys_schedule, NKEYS(keys_schedule)},
    {NEED_THROTTLE, keys_throttle, NKEYS(keys_throttle)},
    {NEED_RETENTION, keys_retention, NKEYS(keys_retention)},
    {NEED_WEBHOOK, keys_webhook, NKEYS(keys_webhook)},
};

#define MAX_KEYS                                                               \
    (NKEYS(keys_process) + NKEYS(keys_pg) + NKEYS(keys_pg_optional) +          \
     NKEYS(keys_redis) + NKEYS(keys_kafka) + NKEYS(keys_lagoon) +              \
     NKEYS(keys_schedule) + NKEYS(keys_throttle) + NKEYS(keys_retention) +     \
     NKEYS(keys_webhook))

typedef struct ctl_cmd {
    const char *name;
    rw_ctl_fn fn;
    unsigned needs; /* NEED_* */
    const char *args;
    const char *help; /* one line */
} ctl_cmd_t;

/* One row per subcommand. */
static const ctl_cmd_t cmds[] = {
    {"migrate", rw_ctl_migrate, NEED_PG, "[--status]",
     "apply pending schema migrations; --status lists applied and pending"},
    {"seed", rw_ctl_seed, NEED_PG,
     "--instances N [--store-apps K] [--beta-pct P] [--trial-pct P] "
     "[--ineligible-pct P] [--no-target-pct P] [--interval-days D] "
     "[--beta-interval-days D] [--prefix NAME]",
     "create a demo or benchmark fleet"},
    {"redeploy", rw_ctl_redeploy, NEED_PG | NEED_KAFKA | NEED_SCHEDULE,
     "(--instances ID,ID,... | --store-app ID) [--variables-only] "
     "[--respect-windows] [--by NAME] [--wait] [--strategy JSON] "
     "[--waves 1,10%,100%] [--bake 10m|manual] [--max-failures-wave N|P%] "
     "[--max-failures-run N|P%] [--on-failure pause|abort]",
     "start a manual redeploy run and publish its batches"},
    {"runs", rw_ctl_runs, NEED_PG,
     "[--status S] [--store-app ID] [--limit N] [--json]",
     "list runs, newest first"},
    {"run", rw_ctl_run, NEED_PG | NEED_KAFKA | NEED_REDIS | NEED_SCHEDULE,
     "(show UUID [--json] | wait UUID | "
     "logs UUID [--instance ID] [--failed] [--json] | "
     "pause|resume|abort|retry|promote UUID)",
     "inspect or control one run"},
    {"instance", rw_ctl_instance, NEED_PG,
     "history ID [--skip N] [--take N] [--json]",
     "every run an instance took part in, newest first"},
    {"lag", rw_ctl_lag, NEED_KAFKA,
     "[--group G] [--topic T] [--interval S] [--json]",
     "consumer group lag per topic and partition, with a status per group"},
    {"replay", rw_ctl_replay, NEED_KAFKA | NEED_PG_OPTIONAL,
     "--group G --topic T (--to-datetime ISO8601 | --to-offset N | "
     "--shift-by -N | --to-earliest) [--execute [--by NAME]] [--json]",
     "move a group's committed offsets back (dry run unless --execute)"},
    {"dlq", rw_ctl_dlq, NEED_KAFKA,
     "(list [--limit N] | show PARTITION:OFFSET | requeue PARTITION:OFFSET) "
     "[--json]",
     "inspect dead-lettered messages and send them back to their topic"},
    {"schedule", rw_ctl_schedule, NEED_PG,
     "--store-app ID (--enable --interval-days N [--beta-interval-days N] | "
     "--disable) | --show [--json]",
     "set a store app's redeploy cadence; --show lists due instances and "
     "those waiting for their window"},
    {"strategy", rw_ctl_strategy, NEED_PG,
     "(--store-app ID [--waves LIST] [--bake D] [--max-in-flight N|P%] "
     "[--max-failures-wave N|P%] [--max-failures-run N|P%] "
     "[--on-failure pause|abort] [--health-url URL] [--health-attempts N] "
     "[--health-interval S] [--window \"Zone Days HH:MM-HH:MM\" | "
     "--no-window] [--clear] [--by NAME] | --store-app ID --show [--json] | "
     "--user-group ID (--window TEXT | --no-window | --show))",
     "set or show a store app's rollout strategy and deployment window, or "
     "a user group's window"},
    {"group", rw_ctl_group, NEED_PG, "--id ID --beta true|false",
     "mark a user group as beta or not"},
    {"throttle", rw_ctl_throttle, NEED_PG | NEED_SCHEDULE | NEED_THROTTLE,
     "[--max-in-flight N] [--rate N/min|N/s|N/h] [--by NAME] [--json]",
     "show the fleet throttle; change its limits (--max-in-flight 0 = "
     "brake)"},
    {"retention", rw_ctl_retention, NEED_PG | NEED_RETENTION,
     "[--dry-run] [--days N] [--batch N] [--json]",
     "delete runs that ended more than ROLLWAVE_RETENTION_DAYS ago, in "
     "batches (--dry-run counts)"},
    {"token", rw_ctl_token, NEED_PG,
     "(create --name N --role viewer|operator|admin [--by NAME] | "
     "revoke NAME | list [--json])",
     "rollwave-api bearer tokens: create (printed once), revoke, list"},
    {"webhook", rw_ctl_webhook, NEED_PG | NEED_WEBHOOK,
     "(add --url URL --events LIST [--store-app ID] [--secret S | "
     "--secret-file PATH] "
     "[--by NAME] | list [--json] | remove ID | test ID | deliveries ID "
     "[--state pending|delivered|dead] [--limit N] [--json])",
     "run-event webhooks: subscribe (events run.started, run.paused, "
     "run.resumed, run.finished, run.failed, run.cancelled), list, remove, "
     "send a test, show deliveries"},
};

void rw_ctl_errorf(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "rollwavectl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: rollwavectl <command> [arguments]\n\n"
                 "Operator CLI of rollwave. Commands:\n");
    for (size_t i = 0; i < NKEYS(cmds); i++)
        fprintf(out, "  %-10s %s\n", cmds[i].name, cmds[i].help);
    fprintf(out, "\n'rollwavectl <command> --help' shows a command's "
                 "arguments and configuration.\n"
                 "Exit status: 0 done, 1 refused or failed, 2 bad usage or "
                 "configuration.\n");
}

static const ctl_cmd_t *find_cmd(const char *name)
{
    for (size_t i = 0; i < NKEYS(cmds); i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* Copy the process keys and the groups in needs into keys; returns count. */
static size_t build_keys(unsigned needs, rw_cfg_key_t *keys)
{
    size_t n = 0;

    for (size_t g = 0; g < NKEYS(groups); g++) {
        if (groups[g].need && !(groups[g].need & needs))
            continue;
        for (size_t i = 0; i < groups[g].n; i++)
            keys[n++] = groups[g].keys[i];
    }
    return n;
}

static int is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int main(int argc, char **argv)
{
    rw_cfg_key_t keys[MAX_KEYS];
    rw_settings_t s;
    const ctl_cmd_t *cmd;
    char errstr[512];
    size_t n;
    int rc = RW_CTL_EXIT_OK;

    memset(&s, 0, sizeof(s));
    if (argc < 2) {
        usage(stderr);
        return RW_CTL_EXIT_USAGE;
    }
    if (is_help(argv[1])) {
        usage(stdout);
        return RW_CTL_EXIT_OK;
    }
    cmd = find_cmd(argv[1]);
    if (!cmd) {
        fprintf(stderr,
                "rollwavectl: unknown command '%s' (see rollwavectl "
                "--help)\n",
                argv[1]);
        return RW_CTL_EXIT_USAGE;
    }
    n = build_keys(cmd->needs, keys);
    for (int i = 2; i < argc; i++) {
        if (is_help(argv[i])) {
            char prog[1024];
            snprintf(prog, sizeof(prog), "rollwavectl %s %s", cmd->name,
                     cmd->args);
            rw_config_help(stdout, prog, cmd->help, keys, n);
            return RW_CTL_EXIT_OK;
        }
    }
    if (rw_config_load(keys, n, &s, NULL, NULL, errstr, sizeof(errstr))) {
        rw_ctl_errorf(cmd->name, "config error: %s", errstr);
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    rw_log_set_level((rw_log_level_t)s.log_level);
    rc = cmd->fn(argc - 1, argv + 1, &s);
out:
    rw_config_free(keys, n, &s);
    return rc;
}
