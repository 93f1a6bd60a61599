/*
 * rw_itest_redis_proxy: a TCP proxy between Redis clients and a real Redis
 * server, for fault tests. It forwards RESP both ways untouched until told
 * to fail; then it answers every command it receives with one given error
 * reply (e.g. "LOADING Redis is loading the dataset in memory") without
 * forwarding it, and forwards again once the fault is cleared. Replies the
 * server still owes for commands forwarded before the switch reach the
 * client first, so each client sees its answers in command order, as it
 * would from a server that started loading or became a replica.
 *
 * It runs as one thread of the test process (poll() over every socket), so
 * a test switches the fault with a function call that takes effect for the
 * next command read, with no control protocol to speak. It does not
 * interpret commands beyond finding where each one ends, does not speak
 * TLS, and understands the RESP2 and RESP3 reply types (RESP3 push
 * messages are passed through without answering a command). Every helper
 * fails the running test on error; none returns one.
 */
#ifndef RW_ITEST_REDIS_PROXY_H
#define RW_ITEST_REDIS_PROXY_H

#include "rw_itest.h"

typedef struct rw_itest_redis_proxy rw_itest_redis_proxy_t;

/*
 * Listen on 127.0.0.1 (a free port) and forward each accepted connection
 * to host:port. A client whose server connection cannot be opened is
 * disconnected, as if the server were down.
 */
rw_itest_redis_proxy_t *rw_itest_redis_proxy_new(const char *host, int port);

/* The port clients connect to. */
int rw_itest_redis_proxy_port(const rw_itest_redis_proxy_t *p);

/*
 * From the next command read on, answer every command with "-<error>\r\n"
 * (error without the leading '-'; no CR or LF in it). NULL forwards again.
 */
void rw_itest_redis_proxy_fail(rw_itest_redis_proxy_t *p, const char *error);

/* Commands answered with the error so far, and commands forwarded. */
long long rw_itest_redis_proxy_faulted(rw_itest_redis_proxy_t *p);
long long rw_itest_redis_proxy_forwarded(rw_itest_redis_proxy_t *p);

/* Stop the thread and close every connection. NULL ok. */
void rw_itest_redis_proxy_destroy(rw_itest_redis_proxy_t *p);

#endif
