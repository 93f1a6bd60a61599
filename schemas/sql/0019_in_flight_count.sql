-- 0019_in_flight_count: the fleet's count of targets in flight is kept as
-- it changes instead of counted at every throttle take.
--
-- Why: rw_throttle_take ran under the fleet row's lock once per chunk and
-- counted every marker there (rw_throttle_in_flight): a sequential scan
-- of target_in_flight, whose pages hold mostly dead row versions during a
-- rollout (its rows turn over every few seconds). It was the third most
-- expensive statement of a chunk (about 2 ms of its 12-15 ms on the
-- rollout benchmark), and every worker waited for it.
--
-- The count lives in target_in_flight_count, 64 slots added up on read:
-- statement-level triggers on target_in_flight add each statement's
-- inserted rows to, and take its deleted rows from, the slot of the
-- writing backend (pg_backend_pid() % 64), in the writer's transaction.
-- A slot row stays locked until its writer commits; with a slot per
-- backend, concurrent claims and poll results of different daemons do not
-- wait for each other (two backends sharing a slot wait at most for one
-- commit). Read in one statement with the markers, the sum is the count
-- of the markers that statement sees, as count(*) was.
--
-- Markers older than no_row_s still have their targets looked at (a
-- target triggered that long ago with no deployment row is not counted),
-- now through an index on since: on a fleet whose builds take less than
-- no_row_s that reads nothing.
--
-- No marker may change between the backfill and the triggers: the old
-- daemons may still be running while this migrates.
LOCK TABLE target_in_flight IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE target_in_flight_count (
    slot smallint PRIMARY KEY CHECK (slot >= 0 AND slot < 64),
    n bigint NOT NULL
) WITH (fillfactor = 10, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0);
-- (fillfactor 10 spreads the 64 rows over a few pages: every writer
-- updates one of them, and each new version stays on its row's page)

INSERT INTO target_in_flight_count (slot, n)
SELECT s, CASE WHEN s = 0 THEN (SELECT count(*) FROM target_in_flight)
               ELSE 0 END
FROM generate_series(0, 63) AS s;

CREATE INDEX target_in_flight_since_idx ON target_in_flight (since);

CREATE FUNCTION rw_in_flight_count_ins() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d bigint;
BEGIN
    SELECT count(*) INTO d FROM rw_new;
    IF d <> 0 THEN
        UPDATE target_in_flight_count SET n = n + d
        WHERE slot = pg_backend_pid() % 64;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION rw_in_flight_count_del() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d bigint;
BEGIN
    SELECT count(*) INTO d FROM rw_old;
    IF d <> 0 THEN
        UPDATE target_in_flight_count SET n = n - d
        WHERE slot = pg_backend_pid() % 64;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION rw_in_flight_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE target_in_flight_count SET n = 0 WHERE n <> 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER target_in_flight_count_ins AFTER INSERT ON target_in_flight
    REFERENCING NEW TABLE AS rw_new
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_count_ins();
CREATE TRIGGER target_in_flight_count_del AFTER DELETE ON target_in_flight
    REFERENCING OLD TABLE AS rw_old
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_count_del();
CREATE TRIGGER target_in_flight_count_truncate AFTER TRUNCATE
    ON target_in_flight
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_count_truncate();

-- As in 0016: the markers, less those of targets triggered longer ago than
-- no_row_s without a deployment row, plus the live leases. A target is
-- triggered after it entered flight, so only markers older than no_row_s
-- can be such a target. Each old marker looks at its own target through
-- the primary key (a correlated subquery, as in 0016: as EXISTS it became
-- a join that read every target of run_targets).
CREATE OR REPLACE FUNCTION rw_throttle_in_flight(p_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH c AS (
        SELECT COALESCE(p_at, clock_timestamp())
               - make_interval(secs => COALESCE(
                   (SELECT no_row_s FROM fleet_throttle WHERE id = 1), 600))
               AS cutoff)
    SELECT (SELECT COALESCE(sum(n), 0) FROM target_in_flight_count)::bigint
         - (SELECT count(*) FROM target_in_flight f, c
            WHERE f.since <= c.cutoff
              AND (SELECT t.state = 'triggered' AND t.triggered_at <= c.cutoff
                   FROM run_targets t WHERE t.id = f.target_id))
         + (SELECT COALESCE(sum(n), 0) FROM throttle_leases
            WHERE expires_at > COALESCE(p_at, clock_timestamp()))
$$;

-- The planner's estimate of target_in_flight follows its live rows, the
-- cost of scanning it the dead ones: the old markers go through the index.
-- CREATE OR REPLACE dropped 0016's jit = off: set again.
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET enable_seqscan = off;
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET jit = off;
