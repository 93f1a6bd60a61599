-- 0021_target_run_ref: run_targets.run_id loses its per-row foreign key;
-- statement-level triggers check it and keep ON DELETE CASCADE. And
-- room on run_targets' pages for a whole version of every row.
--
-- Why the key goes: a run's targets are inserted a few thousand rows per
-- statement (rw_runs.c), and the key was checked once per row: a SELECT
-- ... FOR KEY SHARE of the same run row five thousand times, 71 ms of a
-- 179 ms insert of 5,000 targets (auto_explain on the rollout benchmark),
-- 14 us per instance. One statement per inserted statement does the same
-- check: it writes the distinct runs the new rows name (an update that
-- changes nothing: a concurrent delete of such a run waits for this
-- transaction, and one that committed first leaves nothing to update)
-- and refuses the insert with SQLSTATE 23503 when one is missing. An
-- update rather than the key's FOR KEY SHARE lock, so that a transaction
-- at REPEATABLE READ or SERIALIZABLE that deletes the run after this one
-- committed fails with a serialization error (40001), as it did with the
-- key, instead of leaving the new targets behind (its snapshot would not
-- see them). One row version per run per insert statement: the producer
-- inserts a run's targets a few thousand rows at a time.
-- A target's run_id never changes (run_targets_identity_fixed), so
-- updates need no check.
--
-- What the key did on delete stays: deleting runs deletes their targets
-- (the retention deletes them first, in batches, as before), once per
-- statement, through run_targets_run_chunk_idx, in the same
-- statement as the runs (their markers and build logs go with them, by
-- their own triggers and keys). A transaction that deletes a run waits
-- for any transaction that is inserting targets into it (the update
-- above) and then, at READ COMMITTED, sees and deletes those targets
-- too; at REPEATABLE READ or SERIALIZABLE it fails with 40001. TRUNCATE
-- of deployment_runs takes run_targets along (below), as the key's
-- CASCADE did, and now also when it names every other table that
-- references the runs without CASCADE (the key refused that).
--
-- The triggers run with the privileges of the statement's user, as
-- 0020's do (the key's checks ran as the table's owner): rollwave's
-- daemons use one role that owns the schema; a role given only some
-- privileges needs UPDATE on deployment_runs to insert targets and
-- DELETE on run_targets to delete runs.
--
-- Dropping the key takes both tables exclusively for a moment; behind a
-- long reader that request would queue everything else. It waits 5 s at
-- most and then fails the migration (nothing applied): run `rollwavectl
-- migrate` again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE run_targets DROP CONSTRAINT run_targets_run_id_fkey;

CREATE FUNCTION rw_targets_run_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    locked bigint;
BEGIN
    SELECT count(DISTINCT run_id) INTO wanted FROM rw_new;
    UPDATE deployment_runs r SET id = r.id
    WHERE r.id = ANY (ARRAY(SELECT DISTINCT run_id FROM rw_new));
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked < wanted THEN
        RAISE EXCEPTION 'insert or update on table "run_targets" violates '
                        'foreign key constraint "run_targets_run_id_fkey"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = 'A run the new targets name is not present in '
                           'table "deployment_runs".',
                  TABLE = 'run_targets',
                  CONSTRAINT = 'run_targets_run_id_fkey';
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION rw_runs_delete_targets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_targets
    WHERE run_id = ANY (ARRAY(SELECT id FROM rw_old));
    RETURN NULL;
END
$$;

-- Every TRUNCATE of deployment_runs also truncates target_logs (it
-- references the runs: named, or by CASCADE) and holds it open, so the
-- targets cannot be truncated from here: they go by DELETE, whose own key
-- cascades to the (already empty) logs. A DELETE removes what its
-- snapshot sees: at READ COMMITTED every committed target; at REPEATABLE
-- READ or SERIALIZABLE not those committed after the transaction's
-- snapshot, which would stay behind without their run (in flight, with
-- their markers holding their instances for good). There the TRUNCATE is
-- refused unless run_targets is empty on disk (named in the same
-- TRUNCATE, which took it exclusively and left it empty).
CREATE FUNCTION rw_runs_truncate_targets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        IF pg_relation_size('run_targets') > 0 THEN
            RAISE EXCEPTION 'TRUNCATE of deployment_runs at % isolation '
                            'would miss targets committed after this '
                            'transaction''s snapshot',
                            current_setting('transaction_isolation')
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Name run_targets in the TRUNCATE, or run it '
                             'at READ COMMITTED.';
        END IF;
        RETURN NULL;
    END IF;
    DELETE FROM run_targets;
    RETURN NULL;
END
$$;

-- The retention deletes a run's children in batches, one table at a time,
-- finding them by their cascading keys to deployment_runs (0011, 0012):
-- run_targets is named here since its key is gone, in the same order as
-- before (after target_logs, which references it).
CREATE OR REPLACE FUNCTION rw_retention_children(OUT o_table regclass,
                                                 OUT o_column name)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    WITH kids AS (
        SELECT con.conrelid AS rel, a.attname AS col
          FROM pg_constraint con
          JOIN pg_attribute a
            ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
         WHERE con.confrelid = 'deployment_runs'::regclass
           AND con.contype = 'f' AND con.confdeltype = 'c'
           AND array_length(con.conkey, 1) = 1
        UNION
        SELECT 'run_targets'::regclass::oid, 'run_id'::name)
    SELECT k.rel::regclass, k.col
      FROM kids k
     ORDER BY EXISTS (SELECT 1 FROM pg_constraint r
                       WHERE r.confrelid = k.rel AND r.contype = 'f'
                         AND r.conrelid <> k.rel),
              k.rel::regclass::text
$$;

-- a run's targets are many, the runs deleted at once few: through the
-- index, whatever the statistics say
ALTER FUNCTION rw_runs_delete_targets() SET enable_seqscan = off;
ALTER FUNCTION rw_targets_run_check() SET jit = off;
ALTER FUNCTION rw_runs_delete_targets() SET jit = off;

CREATE TRIGGER run_targets_run_exists AFTER INSERT ON run_targets
    REFERENCING NEW TABLE AS rw_new
    FOR EACH STATEMENT EXECUTE FUNCTION rw_targets_run_check();
CREATE TRIGGER deployment_runs_delete_targets AFTER DELETE
    ON deployment_runs REFERENCING OLD TABLE AS rw_old
    FOR EACH STATEMENT EXECUTE FUNCTION rw_runs_delete_targets();
CREATE TRIGGER deployment_runs_truncate_targets AFTER TRUNCATE
    ON deployment_runs
    FOR EACH STATEMENT EXECUTE FUNCTION rw_runs_truncate_targets();

-- A target changes three times on its way (claimed, triggered, its end),
-- each a HOT update (no indexed column changes) only if the row's page
-- has room for its new version. At fillfactor 70 a freshly inserted
-- chunk's page had room for the claim's new versions of about two rows in
-- five, and the rest went to other pages with an entry in each of the
-- table's four indexes (a third of all target updates on the rollout
-- benchmark). At 50 every row's claim fits on its own page; the versions
-- it leaves dead are pruned by the next update of the page. Applies to
-- pages written from now on.
ALTER TABLE run_targets SET (fillfactor = 50);
