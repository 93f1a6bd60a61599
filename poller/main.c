/*
 * rollwave-poller: Poller: follows triggered bulks in Lagoon and writes terminal states back.
 * This file holds the configuration table and process start.
 */
#include <stdio.h>
#include <string.h>

#include "rw_config.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_settings.h"

static const rw_cfg_key_t keys[] = {
    RW_KEYS_PROCESS("9103"),
    RW_KEYS_PG,
    RW_KEYS_REDIS,
    RW_KEYS_KAFKA,
    RW_KEYS_KAFKA_GROUP("rollwave-poller"),
    RW_KEYS_LAGOON,
    RW_KEYS_LOCK,
    RW_KEYS_POLL,
};

int main(int argc, char **argv)
{
    static const char *const flags[] = {"--once", NULL};
    rw_settings_t s;

    memset(&s, 0, sizeof(s));
    rw_config_init(argc, argv, "rollwave-poller",
                   "Poller: follows triggered bulks in Lagoon and writes terminal states back.", flags, keys,
                   sizeof(keys) / sizeof(keys[0]), &s);
    rw_daemon_signals_install("poller");
    rw_error("poller", "event=start_refused reason=\"pipeline not built yet\"");
    rw_settings_free(&s);
    return 1;
}
