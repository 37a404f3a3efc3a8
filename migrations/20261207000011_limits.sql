-- Rate limits: what each key spent in each one-minute window, added to by every `serve`
-- process now and then (see src/limits/rate.rs); old windows are deleted by the sweeper.
CREATE TABLE rate_usage (
    key_id text NOT NULL,
    window_start timestamptz NOT NULL,
    used bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (key_id, window_start)
);
