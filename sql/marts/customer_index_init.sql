-- Grain: one visitor ever seen by a build. Time column: none.
-- Creates the empty stable-id table on the first build; later builds read it.
CREATE TABLE IF NOT EXISTS customer_index (
    customer_idx INTEGER,
    visitorid BIGINT,
    n_events BIGINT,
    n_steps BIGINT,
    in_training BOOLEAN
)
