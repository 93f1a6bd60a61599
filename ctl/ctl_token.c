/*
 * ctl_token: "rollwavectl token create --name N --role viewer|operator|admin
 * [--by NAME]" prints a new rollwave-api token once (only its hash is
 * kept); "token revoke NAME" revokes the live token of that name (the API
 * stops accepting it within ROLLWAVE_API_TOKEN_CACHE_S); "token list
 * [--json]" lists tokens without anything secret. The rules live in
 * common/rw_token.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_token.h"

#define CMD "token"

static int create(int argc, char **argv, rw_pg_t *pg)
{
    const char *name = NULL, *role = NULL, *by = getenv("USER");
    char token[RW_TOKEN_LEN + 1], errstr[512];
    int r;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--name") == 0 && val) {
            name = val;
            i++;
        } else if (strcmp(argv[i], "--role") == 0 && val) {
            role = val;
            i++;
        } else if (strcmp(argv[i], "--by") == 0 && val) {
            by = val;
            i++;
        } else {
            rw_ctl_errorf(CMD, "create: unexpected argument '%s'", argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    r = rw_role_parse(role);
    if (!name || r < 0) {
        rw_ctl_errorf(CMD, "create needs --name N and --role "
                           "viewer|operator|admin");
        return RW_CTL_EXIT_USAGE;
    }
    if (!rw_token_name_ok(name)) {
        rw_ctl_errorf(CMD,
                      "--name: '%s' must be 1-64 of A-Z a-z 0-9 . _ @ -, "
                      "starting with a letter or digit",
                      name);
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_token_create(pg, name, (rw_role_t)r, by, token, sizeof(token),
                        errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "create: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    /* the only time the token is shown: stdout alone, for scripts */
    printf("%s\n", token);
    fflush(stdout);
    fprintf(stderr,
            "token %s (%s) created; it is not stored and cannot be shown "
            "again\n",
            name, rw_role_name((rw_role_t)r));
    explicit_bzero(token, sizeof(token));
    return RW_CTL_EXIT_OK;
}

static int revoke(int argc, char **argv, rw_pg_t *pg)
{
    char errstr[512];

    if (argc != 2 || argv[1][0] == '-') {
        rw_ctl_errorf(CMD, "usage: rollwavectl token revoke NAME");
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_token_revoke(pg, argv[1], errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "revoke: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    printf("token %s revoked\n", argv[1]);
    return RW_CTL_EXIT_OK;
}

static int list(int argc, char **argv, rw_pg_t *pg)
{
    static const rw_ctl_col_t cols[] = {
        {"name", "NAME", false},
        {"role", "ROLE", false},
        {"created_by", "CREATED BY", false},
        {"created_at", "CREATED", false},
        {"last_used_at", "LAST USED", false},
        {"revoked_at", "REVOKED", false},
    };
    bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
    PGresult *res = NULL;
    char errstr[512];
    int rc = RW_CTL_EXIT_OK;

    if (argc > 2 || (argc == 2 && !json)) {
        rw_ctl_errorf(CMD, "usage: rollwavectl token list [--json]");
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_token_list(pg, &res, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "list: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    rc = rw_ctl_print_rows(res, cols, sizeof(cols) / sizeof(cols[0]), json,
                           "no tokens");
    PQclear(res);
    return rc;
}

int rw_ctl_token(int argc, char **argv, const rw_settings_t *s)
{
    rw_pg_t *pg = NULL;
    char errstr[512];
    int rc;

    if (argc < 2 ||
        (strcmp(argv[1], "create") != 0 && strcmp(argv[1], "revoke") != 0 &&
         strcmp(argv[1], "list") != 0)) {
        rw_ctl_errorf(CMD, "usage: rollwavectl token create|revoke|list ...");
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    if (strcmp(argv[1], "create") == 0)
        rc = create(argc - 1, argv + 1, pg);
    else if (strcmp(argv[1], "revoke") == 0)
        rc = revoke(argc - 1, argv + 1, pg);
    else
        rc = list(argc - 1, argv + 1, pg);
    rw_pg_destroy(pg);
    return rc;
}
