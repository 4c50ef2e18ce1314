-- Grain: one customer id as the source wrote it. Time column: none.
-- Creates the empty mapping table on the first ingest; an H&M ingest keeps the ids it holds
-- (in_data: the key occurs in the current data).
CREATE TABLE IF NOT EXISTS customer_keys (
    visitorid BIGINT,
    customer_key VARCHAR,
    in_data BOOLEAN
)
