-- eval_metrics: one row per (run_id, section, model, split, metric, k). Time column: created_at.
-- section: next_event, next_event_last, window, ranking (model/evaluation.py). Baselines are
-- evaluated on the same rows. model_version: the checkpoints the run measured
-- (`<retrieval model_version>+<ranking model_version>`, from their checkpoint meta).
CREATE TABLE IF NOT EXISTS eval_metrics (
    run_id        VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    split         VARCHAR NOT NULL,
    metric        VARCHAR NOT NULL,
    k             INTEGER,
    value         DOUBLE,
    section       VARCHAR,
    created_at    TIMESTAMP,
    model_version VARCHAR
)
