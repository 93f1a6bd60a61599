-- 0013_chunk_defer: chunks deferred in Postgres instead of held in Kafka
-- (docs/DESIGN.md section 10, "Deferred chunks").
--
-- A chunk that may not go now for a reason of its own (a deployment window
-- of one of its targets is closed; its run's per-run limit is reached) is
-- deferred: the worker stamps not_before and the reason and acknowledges
-- the batch, so the partition keeps flowing for every other run. The
-- producer's recovery sweep writes the batch again once not_before has
-- passed. NULL not_before = not deferred.
ALTER TABLE run_chunks
    ADD COLUMN not_before timestamptz,
    -- why the chunk was last deferred (window closed, run limit)
    ADD COLUMN deferred_reason text;

-- The sweep's scan: only pending chunks that are deferred, oldest first.
CREATE INDEX run_chunks_deferred_idx ON run_chunks (not_before)
    WHERE state = 'pending' AND not_before IS NOT NULL;

-- The first instant after p_at at which the window is open: the local
-- opening times of the next eight days, each turned into an instant with
-- AT TIME ZONE (so DST is the zone database's business), kept only if the
-- window is really open then (an opening inside a skipped hour is not).
-- NULL p_tz (no window) = p_at; NULL when no opening is found (cannot
-- happen for a valid window: every weekday recurs within eight days).
CREATE FUNCTION rw_window_next_open(p_tz text, p_days smallint,
                                    p_from smallint, p_to smallint,
                                    p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_tz IS NULL THEN p_at ELSE (
        SELECT min(o.t_open)
        FROM generate_series(0, 8) AS d(n),
             LATERAL (SELECT ((p_at AT TIME ZONE p_tz)::date + d.n
                              + make_interval(mins => p_from))
                             AT TIME ZONE p_tz AS t_open) o
        WHERE o.t_open > p_at
          AND (p_days & (1 << (EXTRACT(isodow FROM
                 (p_at AT TIME ZONE p_tz)::date + d.n)::int - 1))) <> 0
          AND rw_window_open(p_tz, p_days, p_from, p_to, o.t_open))
    END
$$;

-- rw_window_next_open of instance i's effective window (its group's, else
-- its store app's), as rw_instance_window_open decides which one it is.
CREATE FUNCTION rw_instance_window_next_open(p_group bigint, p_tz text,
                                             p_days smallint,
                                             p_from smallint, p_to smallint,
                                             p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_group IS NULL
                THEN rw_window_next_open(p_tz, p_days, p_from, p_to, p_at)
                ELSE (SELECT CASE WHEN g.window_tz IS NOT NULL
                                  THEN rw_window_next_open(g.window_tz,
                                           g.window_days, g.window_from_min,
                                           g.window_to_min, p_at)
                                  ELSE rw_window_next_open(p_tz, p_days,
                                           p_from, p_to, p_at)
                             END
                      FROM user_groups g WHERE g.id = p_group)
           END
$$;
