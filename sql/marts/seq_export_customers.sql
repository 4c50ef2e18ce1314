-- Grain: one visitor ever seen by a build. Time column: none.
-- Writes sequences/customers/ parquet (customer_idx -> visitorid, counts, in_training) from
-- the Arrow table registered as seq_customer_rows, already in customer_idx order.
COPY (
    SELECT customer_idx, visitorid, n_events::BIGINT AS n_events, n_steps::BIGINT AS n_steps, in_training
    FROM seq_customer_rows
) TO $path (FORMAT parquet)
