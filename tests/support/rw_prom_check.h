/*
 * rw_prom_check: validation of Prometheus text exposition (format 0.0.4),
 * independent of common/rw_metrics, for the tests that read /metrics.
 */
#ifndef RW_PROM_CHECK_H
#define RW_PROM_CHECK_H

#include <stddef.h>

/* 1 when line is "# HELP name text", "# TYPE name counter|gauge|histogram"
 * or a sample "name[{label="value",...}] value"; 0 otherwise. */
int rw_prom_valid_line(const char *line);

/*
 * Every line valid, each family with one HELP and one TYPE before its
 * samples, samples of a family contiguous, text ending in a newline.
 * Returns 0, or the 1-based number of the first bad line (-1 for the
 * whole text) with the reason in why.
 */
int rw_prom_check_exposition(const char *text, char *why, size_t whylen);

#endif
