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

-- The retention deletes the children of deployment_runs one table per
-- batch, in this function's order. target_logs also references
-- run_targets: deleting a batch of targets first would cascade to their
-- logs in the same statement, past the batch size. Tables no other child
-- references (logs) now go first; the rest keep their order.
CREATE OR REPLACE FUNCTION rw_retention_children(OUT o_table regclass,
                                                 OUT o_column name)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT con.conrelid::regclass, a.attname
      FROM pg_constraint con
      JOIN pg_attribute a
        ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
     WHERE con.confrelid = 'deployment_runs'::regclass
       AND con.contype = 'f' AND con.confdeltype = 'c'
       AND array_length(con.conkey, 1) = 1
     ORDER BY EXISTS (SELECT 1 FROM pg_constraint r
                       WHERE r.confrelid = con.conrelid AND r.contype = 'f'
                         AND r.conrelid <> con.conrelid),
              con.conrelid::regclass::text
$$;
