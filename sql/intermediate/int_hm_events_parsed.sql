-- stg_events_parsed for H&M data. Grain: one data row of transactions_train.csv (line 1 is the
-- header). Time column: "timestamp" (ms, NULL when t_dat is bad).
-- The same columns as the Retail Rocket stg_events_parsed (so int_quarantine_events,
-- int_events_asof and the rest read either), plus price and sales_channel_id:
-- - every row is an event of type transaction; repeated identical rows are several units of
--   one article and stay separate events (not duplicates);
-- - visitorid / itemid: the stable BIGINT ids of int_hm_customer_map / int_hm_item_map;
-- - "timestamp": t_dat 00:00 UTC + the row's distance in lines from the day's first line, in ms
--   (at most 86,399,999): the order within a day is unknown, so a customer's rows of one day
--   keep the file's order, deterministically, and a day never runs into the next;
-- - transactionid: the basket, one per (customer, day, sales channel): a positive BIGINT hash.
-- malformed_reason: the first failing check (column count, t_dat, customer_id, article_id,
-- price (a finite number > 0), sales_channel_id (1 or 2)).
-- A working table of the ingest transaction, stored in the database file (see stg_events_parsed.sql).
CREATE OR REPLACE TABLE stg_events_parsed AS
WITH typed AS (
    SELECT
        t.line_number,
        t.n_fields,
        d.day,
        d.first_line,
        c.visitorid,
        i.itemid,
        t.price,
        t.sales_channel_id
    FROM stg_hm_transactions AS t
    LEFT JOIN int_hm_days AS d ON t.day_code = d.day_code
    LEFT JOIN int_hm_customer_map AS c ON t.customer_code = c.customer_code
    LEFT JOIN int_hm_item_map AS i ON t.article_code = i.article_code
)
SELECT
    line_number,
    epoch_ms(day::TIMESTAMP) + least(line_number - first_line, 86399999) AS "timestamp",
    visitorid,
    'transaction' AS event,
    itemid,
    (hash(visitorid, day, sales_channel_id) >> 2)::BIGINT + 1 AS transactionid,
    price,
    sales_channel_id,
    CASE
        WHEN n_fields <> 5 THEN 'wrong_column_count'
        WHEN day IS NULL THEN 'bad_t_dat'
        WHEN visitorid IS NULL THEN 'bad_customer_id'
        WHEN itemid IS NULL THEN 'bad_article_id'
        WHEN NOT coalesce(isfinite(price) AND price > 0, false) THEN 'bad_price'
        WHEN sales_channel_id IS NULL THEN 'bad_sales_channel_id'
    END AS malformed_reason
FROM typed
