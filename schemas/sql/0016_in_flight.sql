-- 0016_in_flight: the in-flight guarantee (an instance is claimed,
-- triggered or deploying in at most one run) moves from a partial unique
-- index on run_targets to a table of its own (docs/DESIGN.md, "In-flight
-- markers").
--
-- Why: the index's predicate names run_targets.state, so every state
-- change of a target wrote every index of run_targets (no HOT update) and
-- left a dead entry in the in-flight index; the throttle counts in-flight
-- targets through that index under the fleet row's lock, and after 40,000
-- targets had passed through flight the count walked 97,500 dead entries
-- (30 ms) while every worker waited for the lock. The table holds one row
-- per instance in flight, so the count reads as many rows as there are
-- builds in flight, and the state column of run_targets is in no index.
--
-- The markers are kept by statement-level triggers on run_targets, so the
-- guarantee holds for every writer (rollwave's statements, an operator's
-- SQL), set-based: one insert and one delete per statement, not per row.
-- A second run's claim of an instance in flight fails with a unique
-- violation on target_in_flight_pkey, as it failed on the index before.
-- No target may change between the backfill below and the triggers that
-- keep the markers from then on (a claim committed in between would have
-- no marker, a target leaving flight would keep one): the old daemons may
-- still be running while this migrates. SHARE ROW EXCLUSIVE is what
-- CREATE TRIGGER takes anyway; the DROP INDEX below takes more.
LOCK TABLE run_targets IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE target_in_flight (
    instance_id bigint PRIMARY KEY,
    target_id bigint NOT NULL,
    run_id bigint NOT NULL,
    -- when the target entered flight: it cannot have been triggered before
    since timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0);

INSERT INTO target_in_flight (instance_id, target_id, run_id, since)
SELECT instance_id, id, run_id, COALESCE(LEAST(claimed_at, triggered_at), now())
FROM run_targets
WHERE state IN ('claimed', 'triggered', 'deploying');

CREATE FUNCTION rw_in_flight_ins() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO target_in_flight (instance_id, target_id, run_id)
    SELECT n.instance_id, n.id, n.run_id FROM rw_new n
    WHERE n.state IN ('claimed', 'triggered', 'deploying');
    RETURN NULL;
END
$$;

-- Leaving flight first, then entering it: a statement that moves one
-- target out and another of the same instance in stays legal.
CREATE FUNCTION rw_in_flight_upd() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM target_in_flight f
    USING rw_old o JOIN rw_new n ON n.id = o.id
    WHERE f.instance_id = o.instance_id AND f.target_id = o.id
      AND o.state IN ('claimed', 'triggered', 'deploying')
      AND n.state NOT IN ('claimed', 'triggered', 'deploying');
    INSERT INTO target_in_flight (instance_id, target_id, run_id)
    SELECT n.instance_id, n.id, n.run_id
    FROM rw_new n JOIN rw_old o ON o.id = n.id
    WHERE n.state IN ('claimed', 'triggered', 'deploying')
      AND o.state NOT IN ('claimed', 'triggered', 'deploying');
    RETURN NULL;
END
$$;

CREATE FUNCTION rw_in_flight_del() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM target_in_flight f USING rw_old o
    WHERE f.instance_id = o.instance_id AND f.target_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_targets_in_flight_ins AFTER INSERT ON run_targets
    REFERENCING NEW TABLE AS rw_new
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_ins();
CREATE TRIGGER run_targets_in_flight_upd AFTER UPDATE ON run_targets
    REFERENCING OLD TABLE AS rw_old NEW TABLE AS rw_new
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_upd();
CREATE TRIGGER run_targets_in_flight_del AFTER DELETE ON run_targets
    REFERENCING OLD TABLE AS rw_old
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_del();

-- TRUNCATE fires no delete trigger: the markers go with their targets.
CREATE FUNCTION rw_in_flight_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE target_in_flight;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_targets_in_flight_truncate AFTER TRUNCATE ON run_targets
    FOR EACH STATEMENT EXECUTE FUNCTION rw_in_flight_truncate();

-- A target belongs to one run and one instance for good: the markers are
-- keyed on both, and nothing in rollwave moves a target. Refused rather
-- than followed (an UPDATE naming neither column never fires this).
CREATE FUNCTION rw_target_identity_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'run_targets.instance_id and run_id cannot change '
        '(target %)', OLD.id USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER run_targets_identity_fixed
    BEFORE UPDATE OF instance_id, run_id ON run_targets
    FOR EACH ROW
    WHEN (OLD.instance_id IS DISTINCT FROM NEW.instance_id
          OR OLD.run_id IS DISTINCT FROM NEW.run_id)
    EXECUTE FUNCTION rw_target_identity_fixed();

DROP INDEX run_targets_in_flight_uidx;

-- updated_at is set by the statements that change a target (rw_state.c);
-- the per-row trigger doubled the cost of a batched transition.
DROP TRIGGER run_targets_touch ON run_targets;

-- Room on each page for the next version of a row: a target's state
-- changes four or five times, and with no index on the changed columns
-- each change can be a HOT update on the same page. Applies to pages
-- written from now on (new runs' targets).
ALTER TABLE run_targets SET (fillfactor = 70);

-- The in-flight count of the throttle: the markers, less the targets
-- triggered longer ago than no_row_s without a deployment row (no longer
-- counted). Only markers older than no_row_s can be such a target (a
-- target is triggered after it entered flight), so only those look at
-- their target, each through the primary key: a join let the planner hash
-- the whole of run_targets on every call.
CREATE OR REPLACE FUNCTION rw_throttle_in_flight(p_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH c AS (
        SELECT COALESCE(p_at, clock_timestamp())
               - make_interval(secs => COALESCE(
                   (SELECT no_row_s FROM fleet_throttle WHERE id = 1), 600))
               AS cutoff)
    SELECT (SELECT count(*) FROM target_in_flight f, c
            WHERE f.since > c.cutoff
               OR (SELECT t.state <> 'triggered' OR t.triggered_at IS NULL
                          OR t.triggered_at > c.cutoff
                   FROM run_targets t WHERE t.id = f.target_id))
         + (SELECT COALESCE(sum(n), 0) FROM throttle_leases
            WHERE expires_at > COALESCE(p_at, clock_timestamp()))
$$;

-- The run's own in-flight count reads the run's markers, not every target
-- of the run (a 100,000-target run read 100,000 index entries per chunk).
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

-- Both run once per chunk under the fleet row's lock. Their estimates
-- follow a table whose size swings with every rollout, and an estimate
-- past jit_above_cost had Postgres compile the count (9 ms) to run it in
-- 1 ms while every worker waited: never for these two.
ALTER FUNCTION rw_throttle_in_flight(timestamptz) SET jit = off;
ALTER FUNCTION rw_throttle_take(integer, text, integer, bigint, integer)
    SET jit = off;

-- The adjuster's count of builds in flight, queued and running read the
-- markers' targets (through the primary key; OFFSET 0 keeps the planner
-- from hashing all of run_targets) instead of scanning run_targets for
-- in-flight states, which without the partial index read the whole table
-- under the fleet row's lock. Otherwise as in 0006_throttle.
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
