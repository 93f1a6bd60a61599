-- 0006_throttle: the fleet-wide Lagoon throttle (docs/DESIGN.md, "The
-- fleet throttle").
--
-- Builds in flight are not a counter: they are the run_targets rows in
-- claimed, triggered or deploying, counted through run_targets_in_flight_uidx
-- (one index entry per build in flight), plus the live leases of workers
-- between taking budget and committing their claim. Nothing is kept that
-- could drift from the targets' states, so nothing needs repairing: a
-- worker or poller killed at any point leaves states that the sweep resolves
-- and leases that expire.

-- One row: the limits every worker obeys, and the trigger-rate bucket.
CREATE TABLE fleet_throttle (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    -- targets between trigger and terminal, fleet-wide; 0 = emergency brake
    max_in_flight integer NOT NULL
        CHECK (max_in_flight >= 0 AND max_in_flight <= 100000000),
    -- environments triggered per minute (token bucket)
    -- (NaN and infinity fail the upper bound)
    trigger_rate_per_min double precision NOT NULL
        CHECK (trigger_rate_per_min >= 1.0 / 60
               AND trigger_rate_per_min <= 1e9),
    -- the bucket holds at most GREATEST(burst, the chunk asking)
    burst integer NOT NULL CHECK (burst >= 1),
    -- the adaptive limit, lowered while Lagoon reports builds queued
    effective_limit integer NOT NULL CHECK (effective_limit >= 0),
    -- a target triggered this long ago with no deployment row in Lagoon
    -- (Lagoon dropped or rejected it) is no longer a build in flight
    no_row_s integer NOT NULL DEFAULT 600 CHECK (no_row_s > 0),
    tokens double precision NOT NULL,
    tokens_at timestamptz NOT NULL DEFAULT now(),
    adjusted_at timestamptz NOT NULL DEFAULT now(),
    queued_seen_at timestamptz,
    -- a worker held a batch for budget or rate (stamped every few seconds
    -- while it does): the recovery sweep does not take chunks pending that
    -- long for lost batches while the fleet is backlogged
    waiting_seen_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT ''
);

-- Budget taken by a worker and not yet turned into claimed targets. A lease
-- outlives its worker only until expires_at.
CREATE TABLE throttle_leases (
    id bigserial PRIMARY KEY,
    n integer NOT NULL CHECK (n > 0),
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- In flight at p_at = targets in flight + leases live at p_at. A target
-- still "triggered" (no deployment row seen) no_row_s after its trigger is
-- not building: Lagoon dropped or rejected it, and it must not hold budget
-- for the whole polling horizon.
CREATE FUNCTION rw_throttle_in_flight(p_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT (SELECT count(*) FROM run_targets t
            WHERE t.state IN ('claimed', 'triggered', 'deploying')
              AND (t.state <> 'triggered' OR t.triggered_at IS NULL
                   OR t.triggered_at > COALESCE(p_at, clock_timestamp())
                      - make_interval(secs => COALESCE(
                          (SELECT no_row_s FROM fleet_throttle
                           WHERE id = 1), 600))))
         + (SELECT COALESCE(sum(n), 0) FROM throttle_leases
            WHERE expires_at > COALESCE(p_at, clock_timestamp()))
$$;

-- Take budget for p_n targets: one call, one transaction of its own.
-- Serialised on the fleet row, and the in-flight count is read after the
-- row lock is held, so it sees every claim committed before: the limit
-- holds across any number of workers. A chunk larger than the whole limit
-- goes alone (nothing else in flight) rather than wait forever; the
-- configuration refuses such limits, this is the safety net.
CREATE FUNCTION rw_throttle_take(p_n integer, p_holder text, p_lease_s integer,
                                 OUT o_lease_id bigint, OUT o_reason text,
                                 OUT o_in_flight bigint, OUT o_limit integer,
                                 OUT o_tokens double precision,
                                 OUT o_wait_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r fleet_throttle%ROWTYPE;
    now_ts timestamptz;
BEGIN
    o_wait_ms := 0;
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
    INSERT INTO throttle_leases (n, holder, expires_at)
    VALUES (p_n, p_holder, now_ts + make_interval(secs => p_lease_s))
    RETURNING id INTO o_lease_id;
    o_in_flight := o_in_flight + p_n;
    o_reason := 'granted';
END
$$;

-- The adaptive limit, at most once per p_every_s fleet-wide (the caller
-- asks often; the row says when it was last done). Lagoon reporting our
-- builds queued while we are within our own limit means the limit is above
-- what Lagoon runs: the limit drops by a tenth, and at once to the builds
-- Lagoon reports running if that is lower (never below one chunk). With no
-- build queued for two rounds while the limit is in use, it grows by one
-- chunk, never above max_in_flight.
CREATE FUNCTION rw_throttle_adjust(p_every_s integer,
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
           count(*) FILTER (WHERE state = 'deploying'
                              AND lagoon_status = 'queued'),
           count(*) FILTER (WHERE state = 'deploying'
                              AND lagoon_status = 'running')
        INTO f, q, running
        FROM run_targets WHERE state IN ('claimed', 'triggered', 'deploying');
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
