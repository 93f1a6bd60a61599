-- 0007_strategy: deployment windows and the per-run in-flight limit
-- (docs/DESIGN.md section 10, "Strategies").
--
-- A window is a time zone, a set of local weekdays and a local time span.
-- It lives in columns, not in the strategy JSON, so that the scheduler and
-- the worker can filter on it in SQL. An instance's window is its user
-- group's when the group has one, else its store app's; none = always open.

-- Whether a window is open at p_at. The local weekday and minute are those
-- of p_at AT TIME ZONE p_tz, so DST needs no special case: a window opens
-- and closes at its local wall-clock times on either side of a change (an
-- hour that does not exist locally is simply skipped, one that happens
-- twice is open twice). A window that crosses midnight belongs to the day
-- it opens: Mon 22:00-02:00 is open on Tuesday at 01:00. NULL p_tz =
-- always open. STABLE, not IMMUTABLE: the zone database can change.
CREATE FUNCTION rw_window_open(p_tz text, p_days smallint, p_from smallint,
                               p_to smallint, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p_tz IS NULL OR (
        SELECT CASE WHEN p_from < p_to
                    THEN (p_days & (1 << l.dow)) <> 0
                         AND l.m >= p_from AND l.m < p_to
                    ELSE ((p_days & (1 << l.dow)) <> 0 AND l.m >= p_from)
                         OR ((p_days & (1 << ((l.dow + 6) % 7))) <> 0
                             AND l.m < p_to)
               END
        FROM (SELECT (EXTRACT(isodow FROM x.ts)::int - 1) AS dow,
                     (EXTRACT(hour FROM x.ts)::int * 60
                      + EXTRACT(minute FROM x.ts)::int) AS m
              FROM (SELECT p_at AT TIME ZONE p_tz AS ts) x) l)
$$;

-- A stored zone must be one Postgres knows, whoever writes it: an unknown
-- zone would make every rw_window_open call on that row fail.
CREATE FUNCTION rw_window_check_tz() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- "UTC+2" is POSIX, where +2 is west of Greenwich: refused, not
    -- silently inverted (Etc/GMT+2 likewise)
    IF NEW.window_tz ~ '[+-][0-9]' THEN
        RAISE EXCEPTION 'window time zone ''%'' is an offset, which POSIX '
            'counts west of Greenwich; use a region name such as '
            'Europe/Zurich', NEW.window_tz
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.window_tz IS NOT NULL THEN
        BEGIN
            PERFORM now() AT TIME ZONE NEW.window_tz;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'window time zone ''%'' is not known',
                NEW.window_tz USING ERRCODE = 'invalid_parameter_value';
        END;
    END IF;
    RETURN NEW;
END
$$;

-- The window columns of store_apps and user_groups: all NULL (no window)
-- or all set. days: bit 0 = Monday ... bit 6 = Sunday; from/to: minutes of
-- the local day; to < from crosses midnight.
ALTER TABLE store_apps
    ADD COLUMN window_tz text,
    ADD COLUMN window_days smallint,
    ADD COLUMN window_from_min smallint,
    ADD COLUMN window_to_min smallint,
    ADD CONSTRAINT store_apps_window_all_or_none CHECK (
        (window_tz IS NULL) = (window_days IS NULL)
        AND (window_tz IS NULL) = (window_from_min IS NULL)
        AND (window_tz IS NULL) = (window_to_min IS NULL)),
    ADD CONSTRAINT store_apps_window_values CHECK (
        window_days BETWEEN 1 AND 127
        AND window_from_min BETWEEN 0 AND 1439
        AND window_to_min BETWEEN 0 AND 1439
        AND window_from_min <> window_to_min);

ALTER TABLE user_groups
    ADD COLUMN window_tz text,
    ADD COLUMN window_days smallint,
    ADD COLUMN window_from_min smallint,
    ADD COLUMN window_to_min smallint,
    ADD CONSTRAINT user_groups_window_all_or_none CHECK (
        (window_tz IS NULL) = (window_days IS NULL)
        AND (window_tz IS NULL) = (window_from_min IS NULL)
        AND (window_tz IS NULL) = (window_to_min IS NULL)),
    ADD CONSTRAINT user_groups_window_values CHECK (
        window_days BETWEEN 1 AND 127
        AND window_from_min BETWEEN 0 AND 1439
        AND window_to_min BETWEEN 0 AND 1439
        AND window_from_min <> window_to_min);

CREATE TRIGGER store_apps_window_tz
    BEFORE INSERT OR UPDATE OF window_tz ON store_apps
    FOR EACH ROW EXECUTE FUNCTION rw_window_check_tz();
CREATE TRIGGER user_groups_window_tz
    BEFORE INSERT OR UPDATE OF window_tz ON user_groups
    FOR EACH ROW EXECUTE FUNCTION rw_window_check_tz();

-- Whether instance i's effective window is open at p_at, given its store
-- app's window columns: the group is read only for instances that have
-- one, so the scheduler's per-app scan stays on its index.
CREATE FUNCTION rw_instance_window_open(p_group bigint, p_tz text,
                                        p_days smallint, p_from smallint,
                                        p_to smallint, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_group IS NULL
                THEN rw_window_open(p_tz, p_days, p_from, p_to, p_at)
                ELSE (SELECT CASE WHEN g.window_tz IS NOT NULL
                                  THEN rw_window_open(g.window_tz,
                                           g.window_days, g.window_from_min,
                                           g.window_to_min, p_at)
                                  ELSE rw_window_open(p_tz, p_days, p_from,
                                           p_to, p_at)
                             END
                      FROM user_groups g WHERE g.id = p_group)
           END
$$;

-- Runs that wait for their targets' windows: scheduled runs always, manual
-- runs when asked (rollwavectl redeploy --respect-windows).
ALTER TABLE deployment_runs
    ADD COLUMN respect_windows boolean NOT NULL DEFAULT false;

-- The per-run limit counts the run's own leases as well as its targets.
ALTER TABLE throttle_leases ADD COLUMN run_id bigint;

-- rw_throttle_take with the run's limit (strategy.max_in_flight): the run's
-- targets in flight plus its live leases, counted under the fleet row's
-- lock like the fleet count, may not pass p_run_limit. A chunk larger than
-- the run's limit goes alone (nothing else of the run in flight) rather
-- than wait forever. NULL p_run_limit = no run limit.
DROP FUNCTION rw_throttle_take(integer, text, integer);
CREATE FUNCTION rw_throttle_take(p_n integer, p_holder text, p_lease_s integer,
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
        -- every state the fleet count knows as in flight, through the
        -- run's (run_id, chunk) index
        o_run_in_flight :=
            (SELECT count(*) FROM run_targets t
             WHERE t.run_id = p_run_id
               AND t.state IN ('claimed', 'triggered', 'deploying'))
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

-- Who last changed a store app's strategy or window (rollwavectl strategy
-- --by), for the operator reading it later.
ALTER TABLE store_apps
    ADD COLUMN strategy_updated_at timestamptz,
    ADD COLUMN strategy_updated_by text;
