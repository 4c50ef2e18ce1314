-- recommendations: one row per (run_id, customer_id, rank). Time column: generated_at.
-- customer_id / item_id are the ORIGINAL visitorid / itemid; rank starts at 1.
-- Rows of a run become visible together with its recommendation_runs row (one transaction).
CREATE TABLE IF NOT EXISTS recommendations (
    run_id        VARCHAR   NOT NULL,
    customer_id   BIGINT    NOT NULL,
    rank          INTEGER   NOT NULL,
    item_id       BIGINT    NOT NULL,
    score         DOUBLE,
    p_transaction DOUBLE,
    p_addtocart   DOUBLE,
    p_view        DOUBLE,
    source        VARCHAR,
    model_version VARCHAR,
    generated_at  TIMESTAMP
)
