-- 0018_in_flight_by_key: the markers' triggers find the markers they drop
-- through the primary key, and do nothing for a statement whose targets
-- neither enter nor leave flight.
--
-- Why: 0016's update trigger dropped leaving targets' markers with a join
-- that the planner ran as a hash join over a sequential scan of
-- target_in_flight. The table turns over all its rows every few seconds
-- of a rollout, so its pages hold far more dead row versions than live
-- ones (the statistics see the live ones only), and the scan ran at every
-- update of run_targets: 3-4 ms of the claim's, the record of an accepted
-- bulk's and the poller's statements, each about 4-10 ms in all
-- (auto_explain on the rollout benchmark), even for the record, whose
-- targets stay in flight (claimed -> triggered).
--
-- Now the trigger collects the leaving targets' (instance, target) pairs
-- first, in the statement that decides which leave, deletes only when
-- there are any, and finds each marker through the primary key
-- (instance_id). The planner is kept off sequential scans inside these
-- functions: its estimate of the table follows the live rows, the cost of
-- scanning it follows the dead ones. The insert runs only when a target
-- enters flight.
--
-- Replacing the identity trigger below waits for run_targets' writers:
-- at most 5 s, then the migration fails whole and can be run again.
SET LOCAL lock_timeout = '5s';

CREATE OR REPLACE FUNCTION rw_in_flight_upd() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    out_inst bigint[];
    out_tgt bigint[];
    any_in boolean;
BEGIN
    SELECT array_agg(o.instance_id) FILTER (
               WHERE o.state IN ('claimed', 'triggered', 'deploying')
                 AND n.state NOT IN ('claimed', 'triggered', 'deploying')),
           array_agg(o.id) FILTER (
               WHERE o.state IN ('claimed', 'triggered', 'deploying')
                 AND n.state NOT IN ('claimed', 'triggered', 'deploying')),
           bool_or(n.state IN ('claimed', 'triggered', 'deploying')
                   AND o.state NOT IN ('claimed', 'triggered', 'deploying'))
        INTO out_inst, out_tgt, any_in
        FROM rw_old o JOIN rw_new n ON n.id = o.id;
    -- leaving flight first, then entering it: a statement that moves one
    -- target out and another of the same instance in stays legal
    IF out_inst IS NOT NULL THEN
        DELETE FROM target_in_flight f
        USING unnest(out_inst, out_tgt) AS x(instance_id, target_id)
        WHERE f.instance_id = x.instance_id AND f.target_id = x.target_id;
    END IF;
    IF any_in THEN
        INSERT INTO target_in_flight (instance_id, target_id, run_id)
        SELECT n.instance_id, n.id, n.run_id
        FROM rw_new n JOIN rw_old o ON o.id = n.id
        WHERE n.state IN ('claimed', 'triggered', 'deploying')
          AND o.state NOT IN ('claimed', 'triggered', 'deploying');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rw_in_flight_del() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    out_inst bigint[];
    out_tgt bigint[];
BEGIN
    -- every deleted target's marker, whatever its state says: a marker
    -- left behind by a write that bypassed the triggers goes with its
    -- target instead of holding the instance for good
    SELECT array_agg(o.instance_id), array_agg(o.id) INTO out_inst, out_tgt
        FROM rw_old o;
    IF out_inst IS NOT NULL THEN
        DELETE FROM target_in_flight f
        USING unnest(out_inst, out_tgt) AS x(instance_id, target_id)
        WHERE f.instance_id = x.instance_id AND f.target_id = x.target_id;
    END IF;
    RETURN NULL;
END
$$;

ALTER FUNCTION rw_in_flight_upd() SET enable_seqscan = off;
ALTER FUNCTION rw_in_flight_del() SET enable_seqscan = off;

-- A target's id is fixed as well as its instance and run (0016): the
-- markers are matched to their targets by id, so a changed id would leave
-- its marker behind, holding the instance for good.
CREATE OR REPLACE FUNCTION rw_target_identity_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'run_targets.id, instance_id and run_id cannot change '
        '(target %)', OLD.id USING ERRCODE = 'check_violation';
END
$$;

-- (CREATE OR REPLACE TRIGGER takes SHARE ROW EXCLUSIVE, as CREATE
-- TRIGGER does: readers of run_targets go on; a DROP TRIGGER would take
-- the table exclusively)
CREATE OR REPLACE TRIGGER run_targets_identity_fixed
    BEFORE UPDATE OF id, instance_id, run_id ON run_targets
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR OLD.instance_id IS DISTINCT FROM NEW.instance_id
          OR OLD.run_id IS DISTINCT FROM NEW.run_id)
    EXECUTE FUNCTION rw_target_identity_fixed();
