-- eval_metrics: one row per (run_id, section, model, split, metric, k). Time column: created_at.
-- section: retrieval (next item over the corpus), ranking (AUC on positives + sampled negatives),
-- end_to_end (retrieve + rank top lists). Baselines are evaluated on the same rows.
CREATE TABLE IF NOT EXISTS eval_metrics (
    run_id     VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    split      VARCHAR NOT NULL,
    metric     VARCHAR NOT NULL,
    k          INTEGER,
    value      DOUBLE,
    section    VARCHAR,
    created_at TIMESTAMP
)
