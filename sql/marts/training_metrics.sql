-- training_metrics: one row per (run_id, model, step, metric) of a training run. Time column:
-- created_at. run_id = model_version of the run (the same across a kill and its resume, so a
-- resumed run replaces its own later steps instead of adding rows); model = retrieval | ranking;
-- variant = the checkpoint directory (retrieval, ranking, retrieval_serving). Metrics: train_loss
-- (and the task's other train_* terms, grad_norm), learning_rate, steps_per_s, examples_per_s every
-- log_every steps; val_* at every evaluation.
CREATE TABLE IF NOT EXISTS training_metrics (
    run_id        VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    step          INTEGER NOT NULL,
    metric        VARCHAR NOT NULL,
    value         DOUBLE,
    model_version VARCHAR,
    variant       VARCHAR,
    created_at    TIMESTAMP
)
