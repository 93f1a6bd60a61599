-- 0022_per_call_costs: two costs paid on every call, not on the work.
--
-- 1. The updated_at triggers of app_instances and run_chunks run only for
-- an update that does not set updated_at itself.
--
-- rollwave's own statements set updated_at = now() (rw_state.c,
-- rw_progress.c, rw_chunk.c, rw_runs.c); the per-row PL/pgSQL call then
-- only wrote the same value again: 100 calls per chunk on app_instances
-- (the record of an accepted bulk and the poller's copy of the build's
-- end), about 2-5 us each. A trigger's WHEN condition is evaluated
-- without calling the function. Any other writer (the platform's own
-- updates of its instances, a hand edit) that leaves updated_at alone
-- still gets it touched; one that sets it keeps the value it set.
--
-- CREATE OR REPLACE TRIGGER takes the tables in SHARE ROW EXCLUSIVE mode
-- for a moment (writers wait, readers do not); it waits 5 s at most for
-- that and then fails the migration (nothing applied): run `rollwavectl
-- migrate` again.
SET LOCAL lock_timeout = '5s';

CREATE OR REPLACE TRIGGER app_instances_touch BEFORE UPDATE ON app_instances
    FOR EACH ROW
    WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION rw_touch_updated_at();

CREATE OR REPLACE TRIGGER run_chunks_touch BEFORE UPDATE ON run_chunks
    FOR EACH ROW
    WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION rw_touch_updated_at();

-- 2. rw_throttle_in_flight, the throttle's count (every take, once per
-- chunk), as PL/pgSQL: a SQL function that carries SET options is never
-- inlined and its body was planned again at every call, 0.5-0.6 ms of a
-- take that otherwise costs about 0.3 (pgbench, prepared, one client; the
-- same three sub-selects as 0019, whose plans PL/pgSQL keeps for the
-- session). Same arguments, same result.
CREATE OR REPLACE FUNCTION rw_throttle_in_flight(p_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    at_ts timestamptz := COALESCE(p_at, clock_timestamp());
    cutoff timestamptz;
BEGIN
    cutoff := at_ts - make_interval(secs => COALESCE(
                  (SELECT no_row_s FROM fleet_throttle WHERE id = 1), 600));
    RETURN - (SELECT count(*) FROM target_in_flight f
              WHERE f.since <= cutoff
                AND (SELECT t.state = 'triggered'
                            AND t.triggered_at <= cutoff
                     FROM run_targets t WHERE t.id = f.target_id))
           + (SELECT COALESCE(sum(n), 0) FROM target_in_flight_delta)::bigint
           + (SELECT COALESCE(sum(n), 0) FROM throttle_leases
              WHERE expires_at > at_ts);
END
$$;

-- CREATE OR REPLACE keeps no SET options: as in 0019
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET enable_seqscan = off;
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET jit = off;

-- 3. The worker's load (worker/trigger.c) asks, for the chunk's pending
-- targets, which of their instances are in flight in another run, and
-- which run. As a sub-select per target, the statement's plan (prepared,
-- cached for the session) was made while target_in_flight was small and
-- read the whole table once per target; the table turns over all its
-- rows every few seconds of a rollout, so those reads walked pages of
-- dead markers: 16-19 ms per load instead of 1 (auto_explain on a
-- one-worker benchmark). One call per load, through the primary key
-- whatever the planner thinks of the table (enable_seqscan = off, as the
-- markers' own triggers run since 0018). A marker whose run is gone (a
-- write that bypassed the triggers) still counts, named by its run id:
-- the worker skips that instance rather than fail its claim on the
-- markers' key at every try.
CREATE FUNCTION rw_in_flight_elsewhere(p_instances bigint[], p_run_id bigint)
RETURNS TABLE (instance_id bigint, run_uuid text)
LANGUAGE plpgsql STABLE ROWS 10 AS $$
BEGIN
    RETURN QUERY
    SELECT f.instance_id,
           COALESCE(o.uuid::text, 'run ' || f.run_id || ' (deleted)')
      FROM target_in_flight f
      LEFT JOIN deployment_runs o ON o.id = f.run_id
     WHERE f.instance_id = ANY (p_instances)
       AND f.run_id IS DISTINCT FROM p_run_id;
END
$$;

ALTER FUNCTION rw_in_flight_elsewhere(bigint[], bigint)
    SET enable_seqscan = off;
ALTER FUNCTION rw_in_flight_elsewhere(bigint[], bigint) SET jit = off;
