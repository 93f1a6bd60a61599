-- 0011_retention: deleting old runs in small batches.
--
-- A run older than ROLLWAVE_RETENTION_DAYS (final, counted from its
-- completion) goes with everything that references it. Deleting the run
-- row alone would cascade to all its targets in one statement (a manual
-- run over a whole store app has hundreds of thousands), so each call of
-- rw_retention_batch deletes at most p_batch rows of one table: first
-- the rows of every table that references deployment_runs with ON DELETE
-- CASCADE (found in the catalog, so a table added later is covered), then
-- the instances' references to those runs (set to NULL; their
-- last_deployment_* fields stay), then the runs themselves. The caller
-- repeats it, each call its own short transaction, until it reports
-- nothing left.

-- A run the retention has started to delete: retry and replay refuse it
-- (rw_control.c), so a run is never re-opened half deleted.
ALTER TABLE deployment_runs ADD COLUMN purging_at timestamptz;

-- Final runs, by the time they ended: the retention's scan.
CREATE INDEX deployment_runs_ended_idx
    ON deployment_runs ((COALESCE(completed_at, created_at)), id)
    WHERE status IN ('completed', 'partial_failed', 'failed', 'cancelled');

-- The runs a batch works on: the oldest p_batch final runs ended before
-- p_before with no target in flight (a cancelled run's builds already in
-- Lagoon are still polled to their end).
CREATE FUNCTION rw_retention_runs(p_before timestamptz, p_batch integer)
RETURNS bigint[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(id) FROM (
        SELECT r.id FROM deployment_runs r
         WHERE r.status IN ('completed', 'partial_failed', 'failed',
                            'cancelled')
           AND COALESCE(r.completed_at, r.created_at) < p_before
           AND NOT EXISTS (
               SELECT 1 FROM run_targets t
                WHERE t.run_id = r.id
                  AND t.state IN ('claimed', 'triggered', 'deploying'))
         ORDER BY COALESCE(r.completed_at, r.created_at), r.id
         LIMIT p_batch) s
$$;

-- The tables that reference deployment_runs with ON DELETE CASCADE, and
-- the referencing column.
CREATE FUNCTION rw_retention_children(OUT o_table regclass, OUT o_column name)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT con.conrelid::regclass, a.attname
      FROM pg_constraint con
      JOIN pg_attribute a
        ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
     WHERE con.confrelid = 'deployment_runs'::regclass
       AND con.contype = 'f' AND con.confdeltype = 'c'
       AND array_length(con.conkey, 1) = 1
     ORDER BY con.conrelid::regclass::text
$$;

-- One batch: at most p_batch rows of one table. o_table NULL: nothing
-- is older than p_before any more.
CREATE FUNCTION rw_retention_batch(p_before timestamptz, p_batch integer,
                                   OUT o_table text, OUT o_rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
    runs bigint[];
    c record;
BEGIN
    o_rows := 0;
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION 'retention batch must be at least 1, not %', p_batch;
    END IF;
    runs := rw_retention_runs(p_before, p_batch);
    IF runs IS NULL THEN
        RETURN;
    END IF;
    -- First mark them, in a call of its own: from its commit on, retry and
    -- replay refuse these runs. The status is checked again under the row
    -- lock, so a retry that committed first keeps its run.
    UPDATE deployment_runs SET purging_at = now()
     WHERE id = ANY (runs) AND purging_at IS NULL
       AND status IN ('completed', 'partial_failed', 'failed', 'cancelled');
    GET DIAGNOSTICS o_rows = ROW_COUNT;
    IF o_rows > 0 THEN
        o_table := 'deployment_runs (marked)';
        RETURN;
    END IF;
    runs := ARRAY(SELECT id FROM deployment_runs
                   WHERE id = ANY (runs) AND purging_at IS NOT NULL);
    IF cardinality(runs) = 0 THEN
        o_table := 'deployment_runs';
        RETURN;
    END IF;
    FOR c IN SELECT * FROM rw_retention_children() LOOP
        EXECUTE format('DELETE FROM %s WHERE ctid = ANY (ARRAY('
                       'SELECT ctid FROM %s WHERE %I = ANY ($1) LIMIT $2))',
                       c.o_table, c.o_table, c.o_column)
            USING runs, p_batch;
        GET DIAGNOSTICS o_rows = ROW_COUNT;
        IF o_rows > 0 THEN
            o_table := c.o_table::text;
            RETURN;
        END IF;
    END LOOP;
    -- deployment_run_id checked again: a newer run may have taken the
    -- instance since the ids were read
    UPDATE app_instances SET deployment_run_id = NULL
     WHERE id = ANY (ARRAY(SELECT id FROM app_instances
                            WHERE deployment_run_id = ANY (runs)
                            LIMIT p_batch))
       AND deployment_run_id = ANY (runs);
    GET DIAGNOSTICS o_rows = ROW_COUNT;
    IF o_rows > 0 THEN
        o_table := 'app_instances';
        RETURN;
    END IF;
    DELETE FROM deployment_runs WHERE id = ANY (runs);
    GET DIAGNOSTICS o_rows = ROW_COUNT;
    o_table := 'deployment_runs';
END
$$;

-- What a retention pass would delete, per table (the dry run): the
-- final runs ended before p_before, the rows that reference them, and the
-- instances whose deployment_run_id would be cleared.
CREATE FUNCTION rw_retention_plan(p_before timestamptz,
                                  OUT o_table text, OUT o_rows bigint)
RETURNS SETOF record
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c record;
    old_runs constant text :=
        'SELECT id FROM deployment_runs'
        ' WHERE status IN (''completed'', ''partial_failed'', ''failed'','
        '                  ''cancelled'')'
        '   AND COALESCE(completed_at, created_at) < $1';
BEGIN
    o_table := 'deployment_runs';
    EXECUTE 'SELECT count(*) FROM (' || old_runs || ') s'
        INTO o_rows USING p_before;
    RETURN NEXT;
    FOR c IN SELECT * FROM rw_retention_children() LOOP
        o_table := c.o_table::text;
        EXECUTE format('SELECT count(*) FROM %s WHERE %I IN (%s)',
                       c.o_table, c.o_column, old_runs)
            INTO o_rows USING p_before;
        RETURN NEXT;
    END LOOP;
    o_table := 'app_instances (deployment_run_id cleared)';
    EXECUTE 'SELECT count(*) FROM app_instances WHERE deployment_run_id IN ('
            || old_runs || ')'
        INTO o_rows USING p_before;
    RETURN NEXT;
END
$$;
