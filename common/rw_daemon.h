/*
 * rw_daemon: process plumbing shared by the three daemons: signal handling
 * (first SIGTERM/SIGINT asks for a drain, the second exits at once) and a
 * monotonic clock. It does not run any loop itself: each daemon's main loop
 * polls with a short timeout and checks rw_daemon_draining().
 */
#ifndef RW_DAEMON_H
#define RW_DAEMON_H

#include <stdbool.h>

/* Install SIGTERM/SIGINT handlers and ignore SIGPIPE. */
void rw_daemon_signals_install(const char *component);

/* True once the first SIGTERM/SIGINT arrived (or rw_daemon_request_drain). */
bool rw_daemon_draining(void);

/* Ask for a drain from inside the process (tests, --once modes). */
void rw_daemon_request_drain(void);

/* Milliseconds on CLOCK_MONOTONIC / wall-clock milliseconds since epoch. */
long long rw_now_mono_ms(void);
long long rw_now_wall_ms(void);

#endif
