-- Grain: one data row of transactions_train.csv (line 1 is the header). Time column: day_code
-- (a code of the t_dat text; typed in int_hm_days). Source: the Arrow stream `stg_hm_rows` that
-- recs.ingest_hm registers: line_number, n_fields (the line split on ',' without quoting rules;
-- the fields are NULL unless it has exactly five), the codes of the t_dat, customer_id and
-- article_id texts (stg_hm_day_keys / stg_hm_customer_keys / stg_hm_article_keys map them back),
-- price (NULL unless it parses as a number) and sales_channel_id (1, 2, else NULL).
-- A working table of the ingest transaction, stored in the database file rather than TEMP (see
-- stg_events_parsed.sql); recs.ingest drops it before COMMIT.
CREATE OR REPLACE TABLE stg_hm_transactions AS
SELECT line_number, n_fields, day_code, customer_code, article_code, price, sales_channel_id
FROM stg_hm_rows
