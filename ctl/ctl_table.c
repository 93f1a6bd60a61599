/*
 * ctl_table: output helpers shared by the read commands: a result row as a
 * JSON object typed by column oid, durations as 1h02m03s, and aligned
 * human tables.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Postgres type oids printed as JSON numbers and booleans. */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23

/* Row row of res as a JSON object, one member per column, typed by oid. */
json_t *rw_ctl_row_json(const PGresult *res, int row)
{
    json_t *o = json_object();

    for (int c = 0; o && c < PQnfields(res); c++) {
        const char *v = PQgetvalue(res, row, c);
        json_t *j;

        if (PQgetisnull(res, row, c))
            j = json_null();
        else if (PQftype(res, c) == OID_BOOL)
            j = json_boolean(v[0] == 't');
        else if (PQftype(res, c) == OID_INT8 || PQftype(res, c) == OID_INT4 ||
                 PQftype(res, c) == OID_INT2)
            j = json_integer(strtoll(v, NULL, 10));
        else
            j = json_string(v);
        if (json_object_set_new(o, PQfname(res, c), j)) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

/* "1h02m03s", "4m05s", "12s". */
void rw_ctl_fmt_duration(long long secs, char *buf, size_t len)
{
    if (secs < 0)
        secs = 0;
    if (secs >= 3600)
        snprintf(buf, len, "%lldh%02lldm%02llds", secs / 3600, secs / 60 % 60,
                 secs % 60);
    else if (secs >= 60)
        snprintf(buf, len, "%lldm%02llds", secs / 60, secs % 60);
    else
        snprintf(buf, len, "%llds", secs);
}

/* The cell text: "-" for NULL, control characters blanked. */
static void cell(const PGresult *res, int row, const rw_ctl_col_t *c, char *buf,
                 size_t len)
{
    const char *v = rw_pg_str(res, row, c->name);

    if (!v)
        snprintf(buf, len, "-");
    else if (c->duration)
        rw_ctl_fmt_duration(strtoll(v, NULL, 10), buf, len);
    else
        snprintf(buf, len, "%s", v);
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
}

/* One cell padded to width w, or ending the line when it is the last. */
static void put_cell(const char *text, size_t w, bool last)
{
    if (last)
        printf("%s\n", text);
    else
        printf("%-*s  ", (int)w, text);
}

/* Every row of res under a heading, columns aligned, the last unpadded. */
void rw_ctl_print_table(const PGresult *res, const rw_ctl_col_t *cols, size_t n)
{
    size_t w[16] = {0};
    char buf[1024];

    for (size_t c = 0; c < n && c < 16; c++) {
        w[c] = strlen(cols[c].head);
        for (int r = 0; r < PQntuples(res); r++) {
            cell(res, r, &cols[c], buf, sizeof(buf));
            if (strlen(buf) > w[c])
                w[c] = strlen(buf);
        }
    }
    for (size_t c = 0; c < n && c < 16; c++)
        put_cell(cols[c].head, w[c], c + 1 == n);
    for (int r = 0; r < PQntuples(res); r++)
        for (size_t c = 0; c < n && c < 16; c++) {
            cell(res, r, &cols[c], buf, sizeof(buf));
            put_cell(buf, w[c], c + 1 == n);
        }
}

int rw_ctl_print_rows(const PGresult *res, const rw_ctl_col_t *cols, size_t n,
                      bool json, const char *none)
{
    int rc = 0;

    if (json) {
        json_t *arr = json_array();
        for (int r = 0; r < PQntuples(res); r++)
            json_array_append_new(arr, rw_ctl_row_json(res, r));
        if (json_dumpf(arr, stdout, JSON_INDENT(2)) == 0)
            printf("\n");
        else
            rc = RW_CTL_EXIT_FAILED;
        json_decref(arr);
    } else if (PQntuples(res) == 0) {
        printf("%s\n", none);
    } else {
        rw_ctl_print_table(res, cols, n);
    }
    return rc;
}
