-- 0014_lagoon_read: when the poller last asked Lagoon about a chunk's bulk
-- (docs/DESIGN.md, "Health gate"). Health checks make a gated chunk's poll
-- events more frequent than the poll interval; Lagoon is asked again only
-- once the interval has passed since this time. A time before the chunk's
-- triggered_at belongs to an earlier attempt of the chunk and counts as
-- never asked.
ALTER TABLE run_chunks ADD COLUMN lagoon_read_at timestamptz;
