-- 0009_health: the health gate's state on each target (docs/DESIGN.md,
-- "Health gate"). A target of a run whose strategy has a health gate stays
-- deploying after its build completed until an HTTP check of its
-- environment answers 2xx (succeeded) or its attempts run out (failed).
-- Waiting for a check is health_next_at set; the poller clears it when the
-- gate ends, and a new attempt of the target (claimed again) clears all
-- four columns.
ALTER TABLE run_targets
    -- checks made in the current attempt of the target
    ADD COLUMN health_attempts integer NOT NULL DEFAULT 0
        CHECK (health_attempts >= 0),
    -- the next check is due then; NULL = not waiting for a check
    ADD COLUMN health_next_at timestamptz,
    -- what the last failed check saw (HTTP 503, timeout, connect error)
    ADD COLUMN health_error text,
    -- the environment's route as Lagoon reported it with the build
    ADD COLUMN route text;
