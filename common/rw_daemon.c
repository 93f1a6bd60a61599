/*
 * rw_daemon: signal flags and clocks. Handlers only set flags (and, on the
 * second signal, _exit) so nothing unsafe runs in signal context.
 */
#include "rw_daemon.h"

#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t drain_requested;

static void on_signal(int sig)
{
    if (drain_requested) {
        /* second signal: the operator wants out now */
        static const char msg[] = "second signal: exiting without drain\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)w;
        _exit(128 + sig);
    }
    drain_requested = 1;
}

void rw_daemon_signals_install(const char *component)
{
    struct sigaction sa;

    (void)component;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

bool rw_daemon_draining(void)
{
    return drain_requested != 0;
}

void rw_daemon_request_drain(void)
{
    drain_requested = 1;
}

long long rw_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long rw_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
