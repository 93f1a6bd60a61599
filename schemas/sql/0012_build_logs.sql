-- 0012_build_logs: the build log of a target's deployment (docs/DESIGN.md,
-- "Build logs"), fetched by the poller after the chunk's commit, redacted
-- before it is stored. One row per target and deployment: a later attempt
-- of the target (a new deployment) gets its own row. Both references
-- cascade, so the retention deletes logs with their run, in batches.
CREATE TABLE target_logs (
    id bigserial PRIMARY KEY,
    target_id bigint NOT NULL REFERENCES run_targets (id) ON DELETE CASCADE,
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    -- the deployment the log belongs to (lagoon-build-xxxxxx)
    deployment_name text NOT NULL,
    -- stored: log holds the redacted text; unavailable: Lagoon could not
    -- read it from its storage (log is NULL, error says why), fetched again
    -- later up to a few attempts
    state text NOT NULL CHECK (state IN ('stored', 'unavailable')),
    attempts integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    -- size of the log as Lagoon sent it, before the cut and the redaction
    bytes_original bigint CHECK (bytes_original >= 0),
    log text,
    error text,
    fetched_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (target_id, deployment_name),
    CHECK (state <> 'stored' OR log IS NOT NULL)
);

CREATE INDEX target_logs_run_idx ON target_logs (run_id);
-- the retry pass reads unavailable logs, oldest fetch first
CREATE INDEX target_logs_unavailable_idx ON target_logs (fetched_at)
    WHERE state = 'unavailable';
