/*
 * rw_itest: small helpers shared by the integration tests (the ones that run
 * against the real stack brought up by scripts/stack.sh). Include after the
 * cmocka prerequisites or via this header alone.
 */
#ifndef RW_ITEST_H
#define RW_ITEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/*
 * Value of a required environment variable (set by `scripts/stack.sh env`).
 * A missing one fails the test with a message naming it: integration tests
 * never skip silently.
 */
const char *rw_itest_env(const char *name);

/* "<prefix>_<pid>_<n>": unique per process and call, lower case. */
void rw_itest_unique(char *buf, size_t len, const char *prefix);

/* "$RW_BIN_DIR/<name>": a binary of this build. */
void rw_itest_bin(char *buf, size_t len, const char *name);

/* Milliseconds on a monotonic clock. */
long long rw_itest_now_ms(void);

/* Sleep ms milliseconds (tests poll conditions with it, never race them). */
void rw_itest_sleep_ms(long ms);

/* 1 in a build with AddressSanitizer: deadlines there are longer. */
#if defined(__SANITIZE_ADDRESS__)
#define RW_ITEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RW_ITEST_ASAN 1
#endif
#endif
#ifndef RW_ITEST_ASAN
#define RW_ITEST_ASAN 0
#endif

#endif
