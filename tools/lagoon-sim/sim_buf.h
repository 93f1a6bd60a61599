/*
 * sim_buf: a growable byte buffer for building JSON answers of the Lagoon
 * simulator by hand (faster than a jansson tree for large lists, and the
 * field order follows the GraphQL selection). It does not parse anything.
 *
 * Allocation failure is sticky: the buffer remembers it and every later
 * append is a no-op, so callers check rw_sim_buf_failed() once at the end.
 */
#ifndef RW_SIM_BUF_H
#define RW_SIM_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct rw_sim_buf {
    char *data; /* NUL-terminated while not failed */
    size_t len;
    size_t cap;
    bool failed;
} rw_sim_buf_t;

void rw_sim_buf_init(rw_sim_buf_t *b);
void rw_sim_buf_free(rw_sim_buf_t *b);
/* Hands the malloc'ed text to the caller (who frees it); b is reset. */
char *rw_sim_buf_steal(rw_sim_buf_t *b, size_t *len);
bool rw_sim_buf_failed(const rw_sim_buf_t *b);

void rw_sim_buf_add(rw_sim_buf_t *b, const char *s, size_t n);
void rw_sim_buf_puts(rw_sim_buf_t *b, const char *s);
void rw_sim_buf_printf(rw_sim_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A decimal integer. */
void rw_sim_buf_int(rw_sim_buf_t *b, long long v);
/* s (n bytes) as a quoted, escaped JSON string. */
void rw_sim_buf_json_str(rw_sim_buf_t *b, const char *s, size_t n);
/* As rw_sim_buf_json_str for a NUL-terminated string; NULL gives null. */
void rw_sim_buf_json_cstr(rw_sim_buf_t *b, const char *s);
/* "YYYY-MM-DD HH:MM:SS" (UTC) of a wall-clock time in ms; 0 gives null. */
void rw_sim_buf_json_date(rw_sim_buf_t *b, long long ms);

#endif
