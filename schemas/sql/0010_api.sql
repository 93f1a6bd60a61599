-- 0010_api: what rollwave-api needs (docs/DESIGN.md section 12): bearer
-- tokens kept only as hashes, the audit of the API's writes, and the
-- indexes its keyset pagination of runs walks.
--
-- A token is 32 random bytes; only the SHA-256 of its text is stored. With
-- that much entropy a plain fast hash is enough: there is nothing to guess
-- from the hash, and a salt or a slow hash would only make the per-request
-- look-up by hash impossible.
CREATE TABLE api_tokens (
    id bigserial PRIMARY KEY,
    name text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- lower-case hex SHA-256 of the token text
    token_hash text NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    last_used_at timestamptz
);

-- Every request looks its token up here.
CREATE UNIQUE INDEX api_tokens_hash_uidx ON api_tokens (token_hash);
-- One live token per name: the name is what the audit records.
CREATE UNIQUE INDEX api_tokens_live_name_uidx ON api_tokens (name)
    WHERE revoked_at IS NULL;

-- One row per write the API accepted (schedules and groups have no audit
-- of their own; runs also record the token in triggered_by and in
-- run_transitions).
CREATE TABLE api_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    token_name text NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    status integer NOT NULL,
    detail text
);
CREATE INDEX api_audit_at_idx ON api_audit (at);

-- GET /api/v1/runs pages newest first by id (the cursor is the last id
-- seen); each filter gets an index whose order is that walk.
CREATE INDEX deployment_runs_status_id_idx
    ON deployment_runs (status, id DESC);
CREATE INDEX deployment_runs_app_id_idx
    ON deployment_runs (store_app_id, id DESC);
CREATE INDEX deployment_runs_source_id_idx
    ON deployment_runs (trigger_source, id DESC);
