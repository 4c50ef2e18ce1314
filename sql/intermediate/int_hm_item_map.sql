-- Grain: one article_id spelling (item_key, leading zeros kept) with its BIGINT itemid. No time
-- column. Stable ids: keys already in item_keys keep their id; new keys get the next ids,
-- articles.csv's in file order first, then articles only the transactions name, in order of
-- first appearance. A key is valid when it is 1-20 digits (checked once per distinct key).
-- "0108775015" and "108775015" are two different keys (the text is the id). article_code: the
-- key's code in this ingest's rows (NULL for a held key no longer named); in_data: named now.
CREATE OR REPLACE TEMP TABLE int_hm_item_map AS
WITH seen AS (
    SELECT article_code, min(line_number) AS order_key
    FROM stg_hm_articles
    GROUP BY article_code
    UNION ALL
    SELECT article_code, 1000000000000 + min(line_number) AS order_key
    FROM stg_hm_transactions
    WHERE n_fields = 5
    GROUP BY article_code
),
valid AS (
    SELECT s.article_code, k.item_key, min(s.order_key) AS order_key
    FROM seen AS s
    JOIN stg_hm_article_keys AS k ON s.article_code = k.code
    WHERE regexp_full_match(k.item_key, '[0-9]{1,20}')
    GROUP BY ALL
),
new_keys AS (
    SELECT v.* FROM valid AS v ANTI JOIN item_keys AS k USING (item_key)
)
SELECT v.article_code, k.itemid, k.item_key, v.item_key IS NOT NULL AS in_data
FROM item_keys AS k
LEFT JOIN valid AS v USING (item_key)
UNION ALL
SELECT
    article_code,
    (SELECT coalesce(max(itemid), 0) FROM item_keys) + row_number() OVER (ORDER BY order_key) AS itemid,
    item_key,
    true AS in_data
FROM new_keys
