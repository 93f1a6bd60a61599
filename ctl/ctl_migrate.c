/*
 * ctl_migrate: "rollwavectl migrate [--status]". Applies the pending
 * migrations embedded in this binary, or lists which are applied. The
 * migration logic itself is rw_migrate's; this file only parses arguments
 * and prints.
 */
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "rw_migrate.h"
#include "rw_pg.h"

static void on_applied(const char *name, void *ud)
{
    (void)ud;
    printf("applied %s\n", name);
    /* a later failure must not hide what already committed */
    fflush(stdout);
}

static void on_status(const char *name, const char *applied_at, int embedded,
                      void *ud)
{
    int *pending = ud;

    if (!applied_at) {
        printf("%-32s pending\n", name);
        (*pending)++;
        return;
    }
    printf("%-32s applied %s%s\n", name, applied_at,
           embedded ? "" : " (not known to this rollwavectl)");
}

int rw_ctl_migrate(int argc, char **argv, const rw_settings_t *s)
{
    rw_pg_t *pg = NULL;
    char errstr[512];
    int status_only = 0, n = 0, pending = 0;
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--status") == 0) {
            status_only = 1;
            continue;
        }
        rw_ctl_errorf("migrate",
                      "unknown argument '%s' (see rollwavectl migrate "
                      "--help)",
                      argv[i]);
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr))) {
        rw_ctl_errorf("migrate", "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (status_only) {
        if (rw_migrate_status(pg, on_status, &pending, errstr,
                              sizeof(errstr))) {
            rw_ctl_errorf("migrate", "%s", errstr);
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
        if (pending)
            printf("%d migration(s) pending\n", pending);
        else
            printf("schema up to date\n");
        goto out;
    }
    if (rw_migrate_apply(pg, on_applied, NULL, &n, errstr, sizeof(errstr))) {
        rw_ctl_errorf("migrate", "%s", errstr);
        if (n)
            printf("%d migration(s) applied before the failure\n", n);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (n)
        printf("%d migration(s) applied\n", n);
    else
        printf("schema up to date\n");
out:
    rw_pg_destroy(pg);
    return rc;
}
