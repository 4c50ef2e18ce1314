-- Grain: one visitor ever seen by a build. Time column: none.
-- Publishes the stable customer ids from the Arrow table registered as seq_customer_rows
-- (already in customer_idx order), inside the build's publishing transaction.
CREATE OR REPLACE TABLE customer_index AS
SELECT customer_idx, visitorid, n_events::BIGINT AS n_events, n_steps::BIGINT AS n_steps, in_training
FROM seq_customer_rows
