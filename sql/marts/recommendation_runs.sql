-- recommendation_runs: one row per published (complete) scoring run. Time column: published_at.
-- A run is visible to readers exactly when its row exists here. strategy: what ranked the lists
-- (model | item_knn); val_*: validation next-event Recall@20 / MRR@20 of the published strategy
-- and of the best baseline (latest eval_metrics run); guard_warning: why it is not the model, or
-- that it trails a baseline (NULL when it wins).
CREATE TABLE IF NOT EXISTS recommendation_runs (
    run_id         VARCHAR PRIMARY KEY,
    published_at   TIMESTAMP NOT NULL,
    generated_at   TIMESTAMP,
    model_version  VARCHAR,
    n_customers    BIGINT,
    n_rows         BIGINT,
    share_fallback DOUBLE,
    duration_s     DOUBLE,
    top_n          INTEGER,
    strategy              VARCHAR,
    val_recall20          DOUBLE,
    val_mrr20             DOUBLE,
    baseline              VARCHAR,
    baseline_val_recall20 DOUBLE,
    baseline_val_mrr20    DOUBLE,
    guard_warning         VARCHAR
)
