-- Grain: one visitor ever seen by a build. Time column: none.
-- Writes sequences/customers/ parquet (customer_idx -> visitorid, counts, in_training) from
-- the Arrow table registered as seq_customer_rows, already in customer_idx order.
COPY (SELECT * FROM seq_customer_rows) TO $path (FORMAT parquet)
