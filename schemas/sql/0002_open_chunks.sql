-- 0002_open_chunks: indexes and defaults found by the rollout benchmark.

-- Finalization checks after every chunk whether its run still has open
-- chunks; without this index that check reads every chunk of the run, so a
-- run of n chunks cost O(n^2) over its life. Open chunks are few.
CREATE INDEX run_chunks_open_idx ON run_chunks (run_id)
    WHERE state NOT IN ('done', 'failed');

-- The outbox sweep relays rows older than a minimum age. now() is the
-- writing transaction's start, so rows of a long transaction looked old the
-- moment they were committed; the wall clock at insert is what is meant.
ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT clock_timestamp();
