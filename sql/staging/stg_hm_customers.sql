-- Grain: one data row of customers.csv (customer_id, FN, Active, club_member_status,
-- fashion_news_frequency, age, postal_code). No time column. Source: the Arrow table
-- `stg_hm_customer_rows` that recs.ingest_hm reads (line_number = data row number + 1;
-- customer_id_code: the code of the customer_id text, shared with the transactions').
-- Only customer_id is used: every customer listed gets an id and a list, also one without
-- transactions (the popularity fallback).
CREATE OR REPLACE TEMP TABLE stg_hm_customers AS
SELECT line_number, customer_id_code AS customer_code
FROM stg_hm_customer_rows
