/* ctl_lag: placeholder until the command lands. */
#include "ctl.h"

int rw_ctl_lag(int argc, char **argv, const rw_settings_t *s)
{
    (void)argc;
    (void)s;
    rw_ctl_errorf(argv[0], "not available in this build yet");
    return RW_CTL_EXIT_FAILED;
}

