-- recommendation_runs: one row per published (complete) scoring run. Time column: published_at.
-- A run is visible to readers exactly when its row exists here.
CREATE TABLE IF NOT EXISTS recommendation_runs (
    run_id         VARCHAR PRIMARY KEY,
    published_at   TIMESTAMP NOT NULL,
    generated_at   TIMESTAMP,
    model_version  VARCHAR,
    n_customers    BIGINT,
    n_rows         BIGINT,
    share_fallback DOUBLE,
    duration_s     DOUBLE,
    top_n          INTEGER
)
