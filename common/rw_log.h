/*
 * rw_log: one structured line per event on stderr:
 *
 *   2026-11-22T16:30:54.123Z info worker event=chunk_triggered run=... chunk=3
 *
 * The macros check the level before any formatting. The message is the
 * caller's "key=value ..." text; values with spaces are quoted by the caller
 * (rw_log_quote helps). Secrets are never passed here: there is no redaction
 * layer to rely on. Thread-safe (one write(2) per line).
 */
#ifndef RW_LOG_H
#define RW_LOG_H

#include <stddef.h>

typedef enum rw_log_level {
    RW_LOG_DEBUG = 0,
    RW_LOG_INFO,
    RW_LOG_WARN,
    RW_LOG_ERROR,
    RW_LOG_OFF,
} rw_log_level_t;

extern rw_log_level_t rw_log_threshold;

/* "debug" | "info" | "warn" | "error" | "off"; -1 when unknown. */
int rw_log_level_parse(const char *name);
void rw_log_set_level(rw_log_level_t level);

void rw_log_write(rw_log_level_t level, const char *component, const char *fmt,
                  ...) __attribute__((format(printf, 3, 4)));

/*
 * Copy s into buf as a log value: quoted with "..." and inner quotes,
 * backslashes and control characters escaped. Truncates to fit. Returns buf.
 */
const char *rw_log_quote(char *buf, size_t buflen, const char *s);

#define RW_LOG(level, comp, ...)                                               \
    do {                                                                       \
        if ((level) >= rw_log_threshold)                                       \
            rw_log_write((level), (comp), __VA_ARGS__);                        \
    } while (0)

#define rw_debug(comp, ...) RW_LOG(RW_LOG_DEBUG, comp, __VA_ARGS__)
#define rw_info(comp, ...)  RW_LOG(RW_LOG_INFO, comp, __VA_ARGS__)
#define rw_warn(comp, ...)  RW_LOG(RW_LOG_WARN, comp, __VA_ARGS__)
#define rw_error(comp, ...) RW_LOG(RW_LOG_ERROR, comp, __VA_ARGS__)

#endif
