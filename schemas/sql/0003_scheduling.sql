-- 0003_scheduling: the Lagoon-name rule in SQL, a due index per store app,
-- and the record of replayed offset ranges.

-- The Lagoon-name rule of the message codec (rw_codec_check_name in
-- common/rw_codec.h): 1..255 bytes without C0 or C1 control characters.
-- The database is UTF-8, so the codec's "valid UTF-8" holds already. The
-- due selection reports with it which instances cannot be put into a batch
-- message; change it together with the codec. NULL gives NULL.
CREATE FUNCTION rw_lagoon_name_ok(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT octet_length(name) BETWEEN 1 AND 255
       AND name !~ '[\x01-\x1f\x7f-\x9f]'
$$;

-- The due selection walks the enabled store apps and reads, per app, only
-- that app's due instances (rw_runs.c). Keyed by store app first, so the
-- instances of disabled apps are never read, however many there are; same
-- partial predicate as the index it replaces.
CREATE INDEX app_instances_due_app_idx
    ON app_instances (store_app_id,
                      COALESCE(next_redeploy_at, '-infinity'::timestamptz))
    WHERE NOT is_trial
      AND status IN ('running-healthy-unclaimed', 'running-healthy-claimed');
DROP INDEX app_instances_due_idx;

-- Offsets an operator re-opened with rollwavectl replay --execute: on
-- partition of topic, consumer_group will read [from_offset, to_offset)
-- again. Written before the new offsets are committed, so a batch read
-- from that range is known to be replayed, not merely redelivered after a
-- crash. A row whose commit then failed only allows re-attempts in its
-- range, which is harmless.
CREATE TABLE replays (
    id bigserial PRIMARY KEY,
    consumer_group text NOT NULL,
    -- logical topic name: batches | poll
    topic text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    from_offset bigint NOT NULL CHECK (from_offset >= 0),
    -- exclusive: the group's committed offset before the reset
    to_offset bigint NOT NULL,
    requested_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (to_offset > from_offset)
);

-- "The newest replay covering this offset": rows of one partition, newest
-- first; a partition holds few replays, so the range test is a filter.
CREATE INDEX replays_lookup_idx ON replays (topic, partition, id DESC);
