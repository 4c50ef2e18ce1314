-- ingest_runs: append one run. Grain: one ingest run. Time column: started_at (UTC).
INSERT INTO ingest_runs (run_id, started_at, rows_read, rows_loaded, rows_quarantined)
VALUES ($run_id, $started_at, $rows_read, $rows_loaded, $rows_quarantined)
