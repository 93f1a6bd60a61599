-- 0020_instance_run_ref: app_instances.deployment_run_id loses its foreign
-- key; triggers on deployment_runs keep what ON DELETE SET NULL did.
--
-- Why: the record of an accepted bulk sets the column on every instance
-- of the chunk, and the key was checked once per row: a SELECT ... FOR
-- KEY SHARE of the same run row fifty times per chunk, while the other
-- daemons' transactions held key-share locks on that row too (a
-- multixact per change). That was about 1.1 ms of the record's 3-4 ms
-- (auto_explain on the rollout benchmark), 22 us per instance. The
-- record is the column's only writer, and it names the run of the chunk
-- it moves in the same statement, a chunk whose own foreign key holds the
-- run: the check could not fail.
--
-- What the key did on delete stays: deleting runs clears the instances
-- that still name them, once per statement, through
-- app_instances_deployment_run_idx (the retention clears them in batches
-- before, 0011, and finds none left here); TRUNCATE of deployment_runs,
-- which the key turned into a TRUNCATE of app_instances (CASCADE) or an
-- error, now clears the column instead.
--
-- Dropping the key takes both tables exclusively for a moment; behind a
-- long reader of app_instances that request would queue the platform's
-- own queries. It waits 5 s at most and then fails the migration (nothing
-- applied): run `rollwavectl migrate` again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE app_instances DROP CONSTRAINT app_instances_deployment_run_fk;

CREATE FUNCTION rw_runs_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE app_instances SET deployment_run_id = NULL
    WHERE deployment_run_id = ANY (ARRAY(SELECT id FROM rw_old));
    RETURN NULL;
END
$$;

CREATE FUNCTION rw_runs_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE app_instances SET deployment_run_id = NULL
    WHERE deployment_run_id IS NOT NULL;
    RETURN NULL;
END
$$;

-- the fleet is large, the runs deleted at once few: through the index
ALTER FUNCTION rw_runs_deleted() SET enable_seqscan = off;
ALTER FUNCTION rw_runs_truncated() SET enable_seqscan = off;
ALTER FUNCTION rw_runs_deleted() SET jit = off;
ALTER FUNCTION rw_runs_truncated() SET jit = off;

CREATE TRIGGER deployment_runs_clear_instances AFTER DELETE
    ON deployment_runs REFERENCING OLD TABLE AS rw_old
    FOR EACH STATEMENT EXECUTE FUNCTION rw_runs_deleted();
CREATE TRIGGER deployment_runs_truncate_instances AFTER TRUNCATE
    ON deployment_runs
    FOR EACH STATEMENT EXECUTE FUNCTION rw_runs_truncated();
