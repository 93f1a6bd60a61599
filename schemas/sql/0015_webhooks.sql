-- 0015_webhooks: run-event webhooks (docs/DESIGN.md section 12,
-- "Webhooks"). A subscription names the events it wants, for one store app
-- or for the whole fleet (store_app_id NULL). rw_run_transition writes one
-- delivery per matching subscription in the statement that moves the run,
-- so a delivery exists exactly when its event happened; the producers'
-- deliverers send them and record the outcome.
CREATE TABLE webhooks (
    id bigserial PRIMARY KEY,
    store_app_id bigint REFERENCES store_apps (id) ON DELETE CASCADE,
    url text NOT NULL
        CHECK (url ~ '^https?://[^/?#[:space:]]+'),
    events text[] NOT NULL
        CHECK (cardinality(events) > 0
               AND array_position(events, NULL) IS NULL
               AND events <@ ARRAY['run.started', 'run.paused',
                                   'run.resumed', 'run.finished',
                                   'run.failed', 'run.cancelled']),
    -- the HMAC key of the signature; shown once by `webhook add`
    secret text NOT NULL CHECK (length(secret) >= 16),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text
);

CREATE INDEX webhooks_store_app_idx ON webhooks (store_app_id);

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    webhook_id bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    -- cascades so the retention removes deliveries with their run
    run_id bigint NOT NULL REFERENCES deployment_runs (id) ON DELETE CASCADE,
    event text NOT NULL,
    -- the exact body that is signed and sent
    payload text NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- pending: when the next attempt may start (a claim pushes it by the
    -- lease, so a deliverer that dies mid-request only delays it)
    next_at timestamptz NOT NULL DEFAULT now(),
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx
    ON webhook_deliveries (webhook_id, state);
CREATE INDEX webhook_deliveries_run_idx ON webhook_deliveries (run_id);
