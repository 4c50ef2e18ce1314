-- Grain: one visitor ever seen by a build. Time column: none.
-- Publishes the stable customer ids from the Arrow table registered as seq_customer_rows
-- (already in customer_idx order), inside the build's publishing transaction.
CREATE OR REPLACE TABLE customer_index AS
SELECT * FROM seq_customer_rows
