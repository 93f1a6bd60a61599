/*
 * rw_itest: environment and naming helpers for integration tests.
 */
#include "rw_itest.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

const char *rw_itest_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("environment variable %s is not set: run the integration "
                 "tests through scripts/test.sh (or eval \"$(scripts/stack.sh "
                 "env)\" after scripts/stack.sh up)",
                 name);
    return v;
}

void rw_itest_unique(char *buf, size_t len, const char *prefix)
{
    static int counter;
    snprintf(buf, len, "%s_%ld_%d", prefix, (long)getpid(), ++counter);
}

void rw_itest_bin(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", rw_itest_env("RW_BIN_DIR"), name);
}

long long rw_itest_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rw_itest_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}
