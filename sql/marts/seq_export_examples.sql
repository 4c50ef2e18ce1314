-- Grain: one example (window) of one split. Time column: window_start_ts (ms).
-- Writes sequences/<split>/ parquet from the Arrow table registered as seq_examples_split,
-- already in (customer_idx, window_start_ts) order (DuckDB preserves insertion order).
COPY (SELECT * FROM seq_examples_split) TO $path (FORMAT parquet, ROW_GROUP_SIZE 8192)
