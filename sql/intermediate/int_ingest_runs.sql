-- ingest_runs. Grain: one ingest run (appended by flows/ingest.py after the load commits).
-- Time column: started_at (UTC).
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    rows_read BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL
)
