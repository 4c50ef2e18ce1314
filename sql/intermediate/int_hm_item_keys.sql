-- item_keys for H&M data. Grain: one article_id as the source wrote it (leading zero kept).
-- No time column. itemid: the stable BIGINT of int_hm_item_map. author: the product_code (all
-- colours of one product; the plan's "author"), from articles.csv. price: the item's latest
-- price (the mean over the rows of its last day with a clean transaction; NULL without one).
CREATE OR REPLACE TABLE item_keys AS
WITH articles AS (
    SELECT article_key, arg_min(product_code, line_number) AS product_code
    FROM stg_hm_articles
    GROUP BY article_key
),
last_day AS (
    SELECT e.itemid, max(e."timestamp" // 86400000) AS day
    FROM stg_events_parsed AS e
    ANTI JOIN int_events_rejected AS r ON e.line_number = r.line_number
    GROUP BY e.itemid
),
prices AS (
    SELECT e.itemid, avg(e.price) AS price
    FROM stg_events_parsed AS e
    JOIN last_day AS l ON e.itemid = l.itemid AND e."timestamp" // 86400000 = l.day
    ANTI JOIN int_events_rejected AS r ON e.line_number = r.line_number
    GROUP BY e.itemid
)
SELECT m.itemid, m.item_key, a.product_code AS author, p.price, m.in_data
FROM int_hm_item_map AS m
LEFT JOIN articles AS a ON m.item_key = a.article_key
LEFT JOIN prices AS p ON m.itemid = p.itemid
ORDER BY m.itemid
