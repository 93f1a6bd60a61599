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
-- The count lives in target_in_flight_delta, added up on read: each
-- statement that inserts or deletes markers appends one row with its net
-- change (statement-level triggers on target_in_flight, in the writer's
-- transaction). Appending takes no row lock, so concurrent claims and
-- poll results never wait for each other here. Read in one statement
-- with the markers, the sum is
-- the count of the markers that statement sees, as count(*) was. The take
-- folds the rows into one when there are more than 32 (under the fleet
-- row's lock, so one folder at a time; rows of uncommitted writers are
-- not visible to it and stay as they are).
--
-- Markers older than no_row_s still have their targets looked at (a
-- target triggered that long ago with no deployment row is not counted),
-- now through an index on since: on a fleet whose builds take less than
-- no_row_s that reads nothing.
--
-- No marker may change between the backfill and the triggers: the old
-- daemons may still be running while this migrates. The lock waits for
-- marker writers 5 s at most, then the migration fails whole and can be
-- run again.
SET LOCAL lock_timeout = '5s';
LOCK TABLE target_in_flight IN SHARE ROW EXCLUSIVE MODE;

-- (vacuum_truncate off: cutting the file's empty tail takes an exclusive
-- lock, which would stall every marker writer for its length)
CREATE TABLE target_in_flight_delta (
    n bigint NOT NULL
) WITH (autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0, vacuum_truncate = false);

INSERT INTO target_in_flight_delta (n)
SELECT count(*) FROM target_in_flight HAVING count(*) <> 0;

CREATE INDEX target_in_flight_since_idx ON target_in_flight (since);

CREATE FUNCTION rw_in_flight_count_ins() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d bigint;
BEGIN
    SELECT count(*) INTO d FROM rw_new;
    IF d <> 0 THEN
        INSERT INTO target_in_flight_delta (n) VALUES (d);
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
        INSERT INTO target_in_flight_delta (n) VALUES (-d);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE holds target_in_flight exclusively: no other transaction has
-- an uncommitted marker (nor its delta) when this runs. The count goes
-- with a TRUNCATE too: like the markers' own, it ignores the snapshot (a
-- DELETE under REPEATABLE READ would keep the rows committed since the
-- transaction's first statement, while the markers they count are gone).
-- A TRUNCATE naming the delta table too has emptied it already (and
-- cannot truncate it again from inside itself).
CREATE FUNCTION rw_in_flight_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        TRUNCATE target_in_flight_delta;
    EXCEPTION WHEN object_in_use THEN
        DELETE FROM target_in_flight_delta;
    END;
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
-- can be such a target. The markers are named before the delta rows, in
-- the order a TRUNCATE of run_targets locks them. Each old marker looks
-- at its own target through the primary key (a correlated subquery, as
-- in 0016: as EXISTS it became a join that read every target).
CREATE OR REPLACE FUNCTION rw_throttle_in_flight(p_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH c AS (
        SELECT COALESCE(p_at, clock_timestamp())
               - make_interval(secs => COALESCE(
                   (SELECT no_row_s FROM fleet_throttle WHERE id = 1), 600))
               AS cutoff)
    SELECT - (SELECT count(*) FROM target_in_flight f, c
              WHERE f.since <= c.cutoff
                AND (SELECT t.state = 'triggered'
                            AND t.triggered_at <= c.cutoff
                     FROM run_targets t WHERE t.id = f.target_id))
         + (SELECT COALESCE(sum(n), 0) FROM target_in_flight_delta)::bigint
         + (SELECT COALESCE(sum(n), 0) FROM throttle_leases
            WHERE expires_at > COALESCE(p_at, clock_timestamp()))
$$;

-- The planner's estimate of target_in_flight follows its live rows, the
-- cost of scanning it the dead ones: the old markers go through the index.
-- CREATE OR REPLACE dropped 0016's jit = off: set again.
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET enable_seqscan = off;
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET jit = off;

-- As in 0016, and folds the kept count's rows.
CREATE OR REPLACE FUNCTION rw_throttle_take(p_n integer, p_holder text, p_lease_s integer,
                                 p_run_id bigint DEFAULT NULL,
                                 p_run_limit integer DEFAULT NULL,
                                 OUT o_lease_id bigint, OUT o_reason text,
                                 OUT o_in_flight bigint, OUT o_limit integer,
                                 OUT o_tokens double precision,
                                 OUT o_wait_ms bigint,
                                 OUT o_run_in_flight bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r fleet_throttle%ROWTYPE;
    now_ts timestamptz;
BEGIN
    o_wait_ms := 0;
    o_run_in_flight := 0;
    SELECT * INTO r FROM fleet_throttle WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        -- never "unlimited": nothing is granted until a worker seeds it
        o_reason := 'unconfigured';
        o_limit := 0;
        o_in_flight := 0;
        o_tokens := 0;
        RETURN;
    END IF;
    now_ts := clock_timestamp();
    DELETE FROM throttle_leases WHERE expires_at <= now_ts;
    -- the same instant as the delete: a lease is either gone or counted
    o_in_flight := rw_throttle_in_flight(now_ts);
    -- fold the kept count's rows into one now and then (one folder at a
    -- time: the fleet row is held); rows not yet committed stay
    IF (SELECT count(*) FROM target_in_flight_delta) > 32 THEN
        WITH d AS (DELETE FROM target_in_flight_delta RETURNING n)
        INSERT INTO target_in_flight_delta (n)
        SELECT x.s FROM (SELECT sum(n) AS s FROM d) x WHERE x.s <> 0;
    END IF;
    o_limit := LEAST(r.max_in_flight, r.effective_limit);
    o_tokens := LEAST(GREATEST(r.burst, p_n)::double precision,
                      r.tokens + EXTRACT(epoch FROM now_ts - r.tokens_at)
                                 * r.trigger_rate_per_min / 60.0);
    IF r.max_in_flight = 0 THEN
        o_reason := 'brake';
        RETURN;
    END IF;
    IF p_run_id IS NOT NULL AND p_run_limit IS NOT NULL THEN
        -- every target of the run the fleet count knows as in flight
        o_run_in_flight :=
            (SELECT count(*) FROM target_in_flight f
             WHERE f.run_id = p_run_id)
          + (SELECT COALESCE(sum(n), 0) FROM throttle_leases
             WHERE run_id = p_run_id AND expires_at > now_ts);
        IF o_run_in_flight > 0 AND o_run_in_flight + p_n > p_run_limit THEN
            o_reason := 'run_limit';
            RETURN;
        END IF;
    END IF;
    IF o_in_flight + p_n > o_limit
       AND NOT (p_n > o_limit AND o_in_flight = 0) THEN
        o_reason := 'budget';
        RETURN;
    END IF;
    IF o_tokens < p_n THEN
        o_reason := 'rate';
        o_wait_ms := LEAST(ceil((p_n - o_tokens) * 60000.0
                                / r.trigger_rate_per_min), 86400000)::bigint;
        RETURN;
    END IF;
    o_tokens := o_tokens - p_n;
    UPDATE fleet_throttle SET tokens = o_tokens, tokens_at = now_ts
    WHERE id = 1;
    INSERT INTO throttle_leases (n, holder, expires_at, run_id)
    VALUES (p_n, p_holder, now_ts + make_interval(secs => p_lease_s), p_run_id)
    RETURNING id INTO o_lease_id;
    o_in_flight := o_in_flight + p_n;
    o_run_in_flight := o_run_in_flight + p_n;
    o_reason := 'granted';
END
$$;

ALTER FUNCTION rw_throttle_take(integer, text, integer, bigint, integer)
    SET jit = off;

-- As in 0016, and makes the kept count good from the markers once per
-- adjustment round (a full count every ROLLWAVE_THROTTLE_ADJUST_S,
-- not per chunk).
CREATE OR REPLACE FUNCTION rw_throttle_adjust(p_every_s integer,
                                              OUT o_adjusted boolean,
                                              OUT o_effective integer)
LANGUAGE plpgsql AS $$
DECLARE
    r fleet_throttle%ROWTYPE;
    now_ts timestamptz := clock_timestamp();
    f bigint;
    q bigint;
    running bigint;
    floor_n integer;
BEGIN
    o_adjusted := false;
    SELECT * INTO r FROM fleet_throttle WHERE id = 1;
    IF NOT FOUND OR r.adjusted_at > now_ts - make_interval(secs => p_every_s)
    THEN
        o_effective := r.effective_limit;
        RETURN;
    END IF;
    -- one adjuster per round: the others find it done, without waiting
    SELECT * INTO r FROM fleet_throttle WHERE id = 1
        AND adjusted_at <= now_ts - make_interval(secs => p_every_s)
        FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT effective_limit INTO o_effective FROM fleet_throttle WHERE id = 1;
        RETURN;
    END IF;
    -- queued only as polled for this attempt: a retried target keeps the
    -- status of its last attempt until its new deployment row is seen
    SELECT count(*),
           count(*) FILTER (WHERE x.st = 'queued'),
           count(*) FILTER (WHERE x.st = 'running')
        INTO f, q, running
        FROM target_in_flight m
        CROSS JOIN LATERAL (
            SELECT CASE WHEN t.state = 'deploying' THEN t.lagoon_status END
                   AS st
            FROM run_targets t WHERE t.id = m.target_id OFFSET 0) x;
    -- The kept count made good from the markers, in one statement with
    -- one snapshot (rows of writers not yet committed are neither deleted
    -- nor counted; a data-modifying WITH always runs to completion), after
    -- the count above (this transaction holds its locks on the markers and
    -- targets already) and naming the markers first. A change to the
    -- delta rows or markers that skipped the count's triggers (a session
    -- with session_replication_role = replica, a hand edit) lasts one
    -- round. The takes, which fold the same rows, wait for the fleet row
    -- held here.
    WITH m AS (SELECT count(*) AS c FROM target_in_flight),
         d AS (DELETE FROM target_in_flight_delta RETURNING n)
    INSERT INTO target_in_flight_delta (n)
    SELECT m.c FROM m WHERE m.c <> 0;
    floor_n := LEAST(r.burst, r.max_in_flight);
    o_effective := LEAST(r.effective_limit, r.max_in_flight);
    IF q > 0 THEN
        r.queued_seen_at := now_ts;
        IF f <= o_effective THEN
            o_effective := GREATEST(floor_n, LEAST(running,
                                    floor(o_effective * 0.9)::int));
        END IF;
    ELSIF (r.queued_seen_at IS NULL
           OR r.queued_seen_at < now_ts - make_interval(secs => 2 * p_every_s))
          AND f + r.burst > o_effective THEN
        o_effective := LEAST(r.max_in_flight, o_effective + r.burst);
    END IF;
    UPDATE fleet_throttle SET effective_limit = o_effective, adjusted_at = now_ts,
        queued_seen_at = r.queued_seen_at
    WHERE id = 1;
    o_adjusted := true;
END
$$;

ALTER FUNCTION rw_throttle_adjust(integer) SET jit = off;
