-- Grain: one customer_id spelling (customer_key) with its BIGINT visitorid. No time column.
-- Stable ids: keys already in customer_keys keep their id; new keys get the next ids (after the
-- largest held), customers.csv's keys in file order first, then keys only the transactions name
-- in order of first appearance. A key is valid when it is 64 hex digits (H&M's hashed ids);
-- checked once per distinct key. customer_code: the key's code in this ingest's rows (NULL for
-- a held key the data no longer names); in_data: the key occurs in this ingest's files.
CREATE OR REPLACE TEMP TABLE int_hm_customer_map AS
WITH seen AS (
    SELECT customer_code, min(line_number) AS order_key
    FROM stg_hm_customers
    GROUP BY customer_code
    UNION ALL
    SELECT customer_code, 1000000000000 + min(line_number) AS order_key
    FROM stg_hm_transactions
    WHERE n_fields = 5
    GROUP BY customer_code
),
valid AS (
    SELECT s.customer_code, k.customer_key, min(s.order_key) AS order_key
    FROM seen AS s
    JOIN stg_hm_customer_keys AS k ON s.customer_code = k.code
    WHERE regexp_full_match(k.customer_key, '[0-9A-Fa-f]{64}')
    GROUP BY ALL
),
new_keys AS (
    SELECT v.* FROM valid AS v ANTI JOIN customer_keys AS k USING (customer_key)
)
SELECT v.customer_code, k.visitorid, k.customer_key, v.customer_key IS NOT NULL AS in_data
FROM customer_keys AS k
LEFT JOIN valid AS v USING (customer_key)
UNION ALL
SELECT
    customer_code,
    (SELECT coalesce(max(visitorid), 0) FROM customer_keys) + row_number() OVER (ORDER BY order_key) AS visitorid,
    customer_key,
    true AS in_data
FROM new_keys
