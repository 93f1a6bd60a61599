-- 0001_core: the rollwave data model.
--
-- Store apps and user groups describe the fleet; app_instances are the
-- Lagoon environments to redeploy; deployment_runs, run_targets and
-- run_chunks track every rollout; run_transitions audits run state changes;
-- outbox carries Kafka messages written in the same transaction as the state
-- they announce.
--
-- rollwavectl migrate runs this file in one transaction together with its
-- schema_migrations row: no BEGIN/COMMIT here, nothing that cannot run in a
-- transaction block (CREATE INDEX CONCURRENTLY belongs in a later file that
-- says so). State values are text with CHECK constraints so that the state
-- machines in common/ and the database agree on one spelling.

-- updated_at follows every UPDATE unless the statement sets it itself.
CREATE FUNCTION rw_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- The products instances are installed from, with their redeploy cadence
-- and, when set per app, their rollout settings (NULL = process default).
CREATE TABLE store_apps (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name text NOT NULL,
    -- scheduled redeploys happen only for enabled apps with an interval
    redeploy_enabled boolean NOT NULL DEFAULT false,
    -- NULL = no scheduled cadence
    redeploy_interval_days integer
        CHECK (redeploy_interval_days > 0),
    -- cadence for instances of beta user groups; NULL = the normal interval
    beta_redeploy_interval_days integer
        CHECK (beta_redeploy_interval_days > 0),
    -- environments per bulk deploy mutation; NULL = ROLLWAVE_BULK_CHUNK_SIZE
    bulk_chunk_size integer
        CHECK (bulk_chunk_size BETWEEN 1 AND 1000),
    -- rollout strategy name; NULL = default
    strategy text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER store_apps_touch BEFORE UPDATE ON store_apps
    FOR EACH ROW EXECUTE FUNCTION rw_touch_updated_at();

-- Groups of users; instances of beta groups follow the beta cadence.
CREATE TABLE user_groups (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    is_beta boolean NOT NULL DEFAULT false
);

CREATE INDEX user_groups_is_beta_idx ON user_groups (is_beta);

-- One app instance = one Lagoon project + environment. A rollout writes
-- only the deployment bookkeeping columns, never status.
CREATE TABLE app_instances (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name text NOT NULL,
    store_app_id bigint NOT NULL REFERENCES store_apps (id),
    user_group_id bigint REFERENCES user_groups (id),
    -- lifecycle status owned by the hosting platform (its vocabulary is
    -- open, hence no CHECK); redeploy-eligible: running-healthy-unclaimed,
    -- running-healthy-claimed
    status text NOT NULL,
    -- trials are never redeployed on schedule (manual runs may)
    is_trial boolean NOT NULL DEFAULT false,
    -- NULL = no Lagoon target yet: such instances are skipped
    lagoon_project text,
    lagoon_environment text,
    -- the last run that triggered this instance (FK added below)
    deployment_run_id bigint,
    -- copied from the latest Lagoon deployment row seen by the poller;
    -- last_deployment_status is Lagoon's raw status text
    last_deployment_name text,
    last_deployment_status text,
    last_deployed_at timestamptz,
    last_deploy_triggered_at timestamptz,
    -- next scheduled redeploy (cadence + jitter, or failure backoff);
    -- NULL = due now
    next_redeploy_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER app_instances_touch BEFORE UPDATE ON app_instances
    FOR EACH ROW EXECUTE FUNCTION rw_touch_updated_at();

-- The due selection reads only this index: its predicate holds the fixed
-- eligibility filters, its key the due time with NULL sorted as "always
-- due". A query matches it with
--   WHERE NOT is_trial
--     AND status IN ('running-healthy-unclaimed', 'running-healthy-claimed')
--     AND COALESCE(next_redeploy_at, '-infinity'::timestamptz) <= now()
-- so its cost follows the due set, not the fleet.
CREATE INDEX app_instances_due_idx
    ON app_instances (COALESCE(next_redeploy_at, '-infinity'::timestamptz))
    WHERE NOT is_trial
      AND status IN ('running-healthy-unclaimed', 'running-healthy-claimed');

CREATE INDEX app_instances_store_app_idx ON app_instances (store_app_id);
CREATE INDEX app_instances_user_group_idx ON app_instances (user_group_id);

-- One rollout: a set of instances redeployed in chunks. Counts are
-- maintained when the run is finalized and equal its targets then.
CREATE TABLE deployment_runs (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    -- NULL when the run mixes instances of several store apps
    store_app_id bigint REFERENCES store_apps (id),
    trigger_source text NOT NULL
        CHECK (trigger_source IN ('scheduled', 'manual', 'retry')),
    -- operator or process that asked for the run; NULL for the scheduler
    triggered_by text,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'paused', 'completed',
                          'partial_failed', 'failed', 'cancelled')),
    strategy text,
    -- redeploy with LAGOON_VARIABLES_ONLY=true
    variables_only boolean NOT NULL DEFAULT false,
    total_count integer NOT NULL DEFAULT 0 CHECK (total_count >= 0),
    succeeded_count integer NOT NULL DEFAULT 0 CHECK (succeeded_count >= 0),
    failed_count integer NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    -- skipped targets are counted, never failures
    skipped_count integer NOT NULL DEFAULT 0 CHECK (skipped_count >= 0),
    chunk_count integer NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    last_error text
);

CREATE INDEX deployment_runs_status_idx ON deployment_runs (status);
CREATE INDEX deployment_runs_store_app_idx
    ON deployment_runs (store_app_id, created_at DESC);
CREATE INDEX deployment_runs_created_idx ON deployment_runs (created_at DESC);

-- Deleting an old run must not fail, nor scan the fleet: SET NULL plus an
-- index on the referencing column.
ALTER TABLE app_instances
    ADD CONSTRAINT app_instances_deployment_run_fk
    FOREIGN KEY (deployment_run_id) REFERENCES deployment_runs (id)
    ON DELETE SET NULL;

CREATE INDEX app_instances_deployment_run_idx
    ON app_instances (deployment_run_id)
    WHERE deployment_run_id IS NOT NULL;

-- One row per (run, instance): the instance's part in the run.
CREATE TABLE run_targets (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    -- no cascade: an instance with deployment history is not deleted
    instance_id bigint NOT NULL REFERENCES app_instances (id),
    chunk integer NOT NULL CHECK (chunk >= 0),
    -- in flight: claimed, triggered, deploying
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'claimed', 'triggered', 'deploying',
                         'succeeded', 'failed', 'skipped', 'timed_out',
                         'cancelled')),
    -- bulk deploys of this target so far (retries and replays add one)
    attempt integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- Lagoon target as it was when the run was created, so a later rename
    -- does not redirect a rollout in progress
    lagoon_project text,
    lagoon_environment text,
    -- bulk id of the chunk attempt that triggered this target
    bulk_id text CONSTRAINT run_targets_bulk_id_nonempty_chk
        CHECK (bulk_id <> ''),
    deployment_name text,
    -- Lagoon's raw deployment status, as last polled
    lagoon_status text,
    error text,
    -- why a target was skipped (not eligible, no Lagoon target, in flight
    -- elsewhere)
    skip_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    triggered_at timestamptz,
    finished_at timestamptz,
    UNIQUE (run_id, instance_id)
);

CREATE TRIGGER run_targets_touch BEFORE UPDATE ON run_targets
    FOR EACH ROW EXECUTE FUNCTION rw_touch_updated_at();

CREATE INDEX run_targets_run_chunk_idx ON run_targets (run_id, chunk);
-- an instance's deployment history, newest first
CREATE INDEX run_targets_instance_idx
    ON run_targets (instance_id, created_at DESC);
-- The backstop of "no instance is in flight in two runs": claiming a target
-- whose instance is in flight elsewhere fails with a unique violation
-- (SQLSTATE 23505), whatever Redis says. Terminal rows may repeat freely.
CREATE UNIQUE INDEX run_targets_in_flight_uidx ON run_targets (instance_id)
    WHERE state IN ('claimed', 'triggered', 'deploying');

-- One row per (run, chunk): one bulk deploy mutation and its polling.
CREATE TABLE run_chunks (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    chunk integer NOT NULL CHECK (chunk >= 0),
    -- triggering: the mutation is being sent (a crash here leaves the
    -- outcome unknown until the chunk is retried)
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'triggering', 'triggered', 'done',
                         'failed')),
    -- trigger attempts of this chunk; a poll event carrying an older
    -- attempt is a duplicate
    attempt integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- Lagoon's bulk id (server generated) and the name we gave the bulk
    bulk_id text CONSTRAINT run_chunks_bulk_id_nonempty_chk
        CHECK (bulk_id <> ''),
    bulk_name text CONSTRAINT run_chunks_bulk_name_nonempty_chk
        CHECK (bulk_name <> ''),
    poll_attempts integer NOT NULL DEFAULT 0 CHECK (poll_attempts >= 0),
    target_count integer NOT NULL DEFAULT 0 CHECK (target_count >= 0),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    triggered_at timestamptz,
    finished_at timestamptz,
    UNIQUE (run_id, chunk),
    -- A bulk id exactly where there is one, never a sentinel: a triggered
    -- chunk has its bulk id and name; pending, triggering and failed
    -- chunks have none. A done chunk may go either way because a chunk
    -- whose every target was skipped finishes without ever calling Lagoon,
    -- so it has no bulk to point to.
    CONSTRAINT run_chunks_bulk_id_chk CHECK (
        (state = 'triggered' AND bulk_id IS NOT NULL
             AND bulk_name IS NOT NULL)
        OR (state IN ('pending', 'triggering', 'failed') AND bulk_id IS NULL)
        OR (state = 'done'))
);

CREATE TRIGGER run_chunks_touch BEFORE UPDATE ON run_chunks
    FOR EACH ROW EXECUTE FUNCTION rw_touch_updated_at();

-- the poller finds a chunk by the bulk id Lagoon reports
CREATE INDEX run_chunks_bulk_id_idx ON run_chunks (bulk_id)
    WHERE bulk_id IS NOT NULL;

-- Append-only audit of run status changes; from_status NULL = creation.
CREATE TABLE run_transitions (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    from_status text,
    to_status text NOT NULL,
    reason text,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX run_transitions_run_idx ON run_transitions (run_id, id);

-- Transactional outbox: rows are inserted with the state they announce and
-- relayed to Kafka; published_at is set on the delivery report. topic is the
-- logical name: the configured prefix is applied at relay time, so a prefix
-- change does not strand unsent rows.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL CHECK (topic IN ('batches', 'poll')),
    msg_key text NOT NULL,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

-- the relay reads unsent rows in id order; sent rows drop out of the index
CREATE INDEX outbox_unpublished_idx ON outbox (id)
    WHERE published_at IS NULL;
