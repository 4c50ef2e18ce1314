-- customer_keys for H&M data. Grain: one customer id as the source wrote it (64 hex digits).
-- No time column. visitorid is the BIGINT the warehouse uses everywhere else (int_hm_customer_map:
-- stable across ingests); in_data: listed in this ingest's customers.csv or transactions.
CREATE OR REPLACE TABLE customer_keys AS
SELECT visitorid, customer_key, in_data
FROM int_hm_customer_map
ORDER BY visitorid
