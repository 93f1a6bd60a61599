-- 0008_waves: the waves of a run (docs/DESIGN.md, "Waves").
--
-- A run is cut into waves of chunks at creation; only the running wave's
-- batches are in the outbox. A wave is released (its batches written)
-- by one guarded transition under the run-row lock, so it happens once;
-- a bake is a not_before time here, released by the producer's sweep,
-- never a sleeping process. Chunks never span waves and keep their
-- run-global numbers.

CREATE TABLE run_waves (
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    wave integer NOT NULL CHECK (wave >= 1),
    first_chunk integer NOT NULL CHECK (first_chunk >= 0),
    last_chunk integer NOT NULL CHECK (last_chunk >= first_chunk),
    -- targets planned into the wave (skipped ones are in no wave)
    target_count integer NOT NULL CHECK (target_count >= 0),
    -- pending: not released; baking: the previous wave is done, released
    -- at not_before; awaiting_promotion: manual bake, released by
    -- `rollwavectl run promote`; running: its batches are out; done: every
    -- chunk closed; cancelled: its run was aborted
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'baking', 'awaiting_promotion',
                         'running', 'done', 'cancelled')),
    not_before timestamptz,
    -- written when the wave ends (the run-count rule)
    succeeded_count integer,
    failed_count integer,
    -- failures an operator accepted by resuming a run this wave paused
    failures_accepted integer NOT NULL DEFAULT 0
        CHECK (failures_accepted >= 0),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, wave)
);

-- the sweep's release: baking waves whose bake is over
CREATE INDEX run_waves_baking_idx ON run_waves (not_before)
    WHERE state = 'baking';

-- Append-only audit of wave state changes, written in the statement that
-- makes the change (promotions name the operator here).
CREATE TABLE wave_transitions (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    wave integer NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    reason text,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX wave_transitions_run_idx ON wave_transitions (run_id, id);

-- NULL: a run created before waves existed (one wave of everything)
ALTER TABLE deployment_runs
    ADD COLUMN current_wave integer CHECK (current_wave >= 1),
    ADD COLUMN failures_accepted integer NOT NULL DEFAULT 0
        CHECK (failures_accepted >= 0);
