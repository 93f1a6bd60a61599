-- 0004_recovery: what the chunk state machine and the recovery sweep need.

-- Append-only audit of chunk state changes, written by the one chunk
-- transition function in the same statement as the change.
CREATE TABLE chunk_transitions (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    chunk integer NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    reason text,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX chunk_transitions_run_idx ON chunk_transitions (run_id, chunk, id);

-- When the bulk mutation of a triggering chunk was last sent, or may have
-- been: stamped before each send. The settle window of a trigger in doubt
-- counts from here, not from the claim. NULL = never sent.
ALTER TABLE run_chunks ADD COLUMN sent_at timestamptz;

-- Sends of the current attempt series that never reached Lagoon (or were
-- looked up and not found): a chunk fails for good after
-- ROLLWAVE_TRIGGER_RETRIES of them instead of cycling forever. A retry or
-- replay that re-opens the chunk starts the count again.
ALTER TABLE run_chunks ADD COLUMN send_failures integer NOT NULL DEFAULT 0
    CHECK (send_failures >= 0);

-- The newest replay (replays.id) whose batch already re-attempted this
-- chunk: a second delivery of the same replayed offset changes nothing.
ALTER TABLE run_chunks ADD COLUMN replay_id bigint;

-- The recovery sweep finds open chunks by state and age (updated_at moves
-- with every poll and every transition) through this index only. Open
-- chunks are few, so the index stays small.
CREATE INDEX run_chunks_open_age_idx ON run_chunks (state, updated_at)
    WHERE state IN ('pending', 'triggering', 'triggered');

-- and chunks that finished recently, to release their instance locks when
-- the process that finished them died before it could.
CREATE INDEX run_chunks_finished_idx ON run_chunks (finished_at)
    WHERE finished_at IS NOT NULL;
