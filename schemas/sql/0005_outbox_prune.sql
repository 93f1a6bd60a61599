-- 0005_outbox_prune: published outbox rows are deleted after a retention
-- (ROLLWAVE_OUTBOX_RETENTION_S) in small batches, oldest first. Without
-- this index each batch would read every row of the table; unpublished rows
-- are never candidates and stay out of it.
CREATE INDEX outbox_published_idx ON outbox (published_at)
    WHERE published_at IS NOT NULL;
