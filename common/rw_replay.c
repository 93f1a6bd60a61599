/*
 * rw_replay: writes and looks up the replays table (0003_scheduling.sql).
 * One INSERT over arrays for a whole replay, one indexed lookup per
 * question; no state of its own.
 */
#include "rw_replay.h"

#include <stdio.h>

static const char SQL_RECORD[] =
    "INSERT INTO replays (consumer_group, topic, partition, from_offset,"
    "    to_offset, requested_by)"
    " SELECT $1, $2, u.p, u.f, u.t, $6"
    " FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS u(p, f, t)";

static const char SQL_FIND[] =
    "SELECT id FROM replays"
    " WHERE topic = $1 AND partition = $2::int"
    "   AND from_offset <= $3::bigint AND to_offset > $3::bigint"
    " ORDER BY id DESC LIMIT 1";

rw_err_t rw_replay_record(rw_pg_t *pg, const char *consumer_group,
                          const char *topic, const rw_replay_range_t *ranges,
                          size_t n, const char *requested_by, size_t *recorded,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a_p, a_f, a_t;
    size_t k = 0;

    rw_pg_array_init(&a_p);
    rw_pg_array_init(&a_f);
    rw_pg_array_init(&a_t);
    if (recorded)
        *recorded = 0;
    if (!consumer_group || !topic || (n > 0 && !ranges)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "replay record: group, topic or ranges missing");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (ranges[i].to_offset <= ranges[i].from_offset)
            continue;
        rw_pg_array_add_ll(&a_p, ranges[i].partition);
        rw_pg_array_add_ll(&a_f, ranges[i].from_offset);
        rw_pg_array_add_ll(&a_t, ranges[i].to_offset);
        k++;
    }
    if (k == 0)
        goto out;
    {
        const char *params[6] = {
            consumer_group,           topic,
            rw_pg_array_finish(&a_p), rw_pg_array_finish(&a_f),
            rw_pg_array_finish(&a_t), requested_by};
        if (!params[2] || !params[3] || !params[4]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        err = rw_pg_exec(pg, SQL_RECORD, 6, params, NULL, errstr, errlen);
        if (err)
            goto out;
    }
    if (recorded)
        *recorded = k;
out:
    rw_pg_array_free(&a_p);
    rw_pg_array_free(&a_f);
    rw_pg_array_free(&a_t);
    return err;
}

rw_err_t rw_replay_find(rw_pg_t *pg, const char *topic, int partition,
                        long long offset, long long *replay_id, char *errstr,
                        size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char part_s[16], off_s[24];
    const char *params[3] = {topic, part_s, off_s};

    *replay_id = 0;
    if (!topic)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "replay find: topic missing");
    snprintf(part_s, sizeof(part_s), "%d", partition);
    snprintf(off_s, sizeof(off_s), "%lld", offset);
    err = rw_pg_exec(pg, SQL_FIND, 3, params, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) > 0)
        *replay_id = rw_pg_ll(res, 0, "id", 0);
out:
    PQclear(res);
    return err;
}
