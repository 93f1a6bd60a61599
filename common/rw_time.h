/*
 * rw_time: the one date parser and formatter of rollwave. Lagoon's dates,
 * the due_at of poll messages and the operator's --to-datetime all go
 * through rw_time_parse, so a date is valid or not the same way
 * everywhere: months have their lengths (no February 31st turning into
 * March 3rd), leap years follow the Gregorian rule, and second 60 (a leap
 * second) is accepted and counts as the next minute's first second.
 *
 * It does not read the clock (rw_schedule owns "now") and knows no time
 * zones beyond numeric offsets.
 */
#ifndef RW_TIME_H
#define RW_TIME_H

#include <stddef.h>

#include "rw_err.h"

/*
 * Accepted by default: "YYYY-MM-DD(T|t| )HH:MM:SS[(.|,)digits][zone]" with
 * zone one of Z, z, +HH:MM, -HH:MM, +HHMM, -HHMM, +HH, -HH (offsets below
 * 24 h, minutes below 60); no zone means UTC. Fractions are truncated to
 * milliseconds. The instant must fall within years 0000..9999 UTC, which
 * is what rw_time_format can write back.
 */
enum {
    /* RFC 3339 as rollwave's messages spell it: T separator, '.' and at
     * most 9 fraction digits, and a zone (Z or +HH:MM / -HH:MM) required */
    RW_TIME_RFC3339 = 1u << 0,
    /* also "YYYY-MM-DD" (midnight) and "...THH:MM" (no seconds): what an
     * operator types */
    RW_TIME_PARTIAL = 1u << 1,
};

/*
 * Parse s into milliseconds since the epoch. RW_ERR_INVALID_ARG, with the
 * reason in errstr, on anything else; *epoch_ms is then unchanged.
 */
rw_err_t rw_time_parse(const char *s, unsigned flags, long long *epoch_ms,
                       char *errstr, size_t errlen);

/*
 * Write epoch_ms as "2026-11-22T16:30:54.123Z" into buf (>= RW_TIME_BUF
 * bytes). RW_ERR_INVALID_ARG if buf is smaller or the instant lies outside
 * the years 0000..9999 (buf then holds "" when len > 0).
 */
#define RW_TIME_BUF 25
rw_err_t rw_time_format(char *buf, size_t len, long long epoch_ms);

#endif
