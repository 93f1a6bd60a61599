/*
 * ctl_run: "rollwavectl run <verb> UUID": routes inspection verbs (show,
 * wait), the build logs (logs) and control verbs (pause, resume, abort,
 * retry, promote) to their files.
 */
#include <string.h>

#include "ctl.h"

int rw_ctl_run(int argc, char **argv, const rw_settings_t *s)
{
    static const char *const inspect[] = {"show", "wait", NULL};
    static const char *const control[] = {"pause", "resume",  "abort",
                                          "retry", "promote", NULL};

    if (argc < 2) {
        rw_ctl_errorf("run", "a verb is required: show, wait, logs, pause, "
                             "resume, abort, retry or promote");
        return RW_CTL_EXIT_USAGE;
    }
    for (int i = 0; inspect[i]; i++)
        if (strcmp(argv[1], inspect[i]) == 0)
            return rw_ctl_run_inspect(argc - 1, argv + 1, s);
    if (strcmp(argv[1], "logs") == 0)
        return rw_ctl_run_logs(argc - 1, argv + 1, s);
    for (int i = 0; control[i]; i++)
        if (strcmp(argv[1], control[i]) == 0)
            return rw_ctl_run_control(argc - 1, argv + 1, s);
    rw_ctl_errorf("run",
                  "unknown verb '%s' (show, wait, logs, pause, resume, "
                  "abort, retry, promote)",
                  argv[1]);
    return RW_CTL_EXIT_USAGE;
}
