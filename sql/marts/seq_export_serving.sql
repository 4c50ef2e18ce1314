-- Grain: one customer in customer_index (every visitor, also those the filters dropped).
-- Time column: last_ts (ms, NULL without vocabulary steps).
-- Writes sequences/serving/ parquet from the Arrow table registered as seq_serving_rows,
-- already in customer_idx order.
COPY (SELECT * FROM seq_serving_rows) TO $path (FORMAT parquet)
