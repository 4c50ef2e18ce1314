-- stg_incumbent_rows: every row of an incumbent file (temp table incumbent_raw, all VARCHAR),
-- typed, with the reason it is kept out (NULL = kept). Grain: one input row. No time column.
-- Reasons, first that applies: missing_value, non_numeric_customer_id, non_numeric_rank,
-- non_numeric_item_id, bad_rank (< 1), non_numeric_score, unknown_customer (no event in the
-- warehouse), unknown_item (not in items), duplicate_rank (every row of a (customer, rank)
-- that appears twice: which one is meant is unknowable), duplicate_item (an item again lower in
-- the same customer's list: the first rank is kept).
CREATE OR REPLACE TEMP TABLE stg_incumbent_rows AS
WITH typed AS (
    SELECT
        source_file,
        raw_customer_id,
        raw_rank,
        raw_item_id,
        raw_score,
        TRY_CAST(trim(raw_customer_id) AS DOUBLE) AS customer_num,
        TRY_CAST(trim(raw_rank) AS DOUBLE) AS rank_num,
        TRY_CAST(trim(raw_item_id) AS DOUBLE) AS item_num,
        TRY_CAST(trim(raw_score) AS DOUBLE) AS score_num
    FROM incumbent_raw
),
checked AS (
    SELECT
        *,
        CASE
            WHEN coalesce(trim(raw_customer_id), '') = '' OR coalesce(trim(raw_rank), '') = ''
                 OR coalesce(trim(raw_item_id), '') = '' THEN 'missing_value'
            WHEN customer_num IS NULL OR NOT isfinite(customer_num) OR customer_num <> floor(customer_num)
                THEN 'non_numeric_customer_id'
            WHEN rank_num IS NULL OR NOT isfinite(rank_num) OR rank_num <> floor(rank_num) THEN 'non_numeric_rank'
            WHEN item_num IS NULL OR NOT isfinite(item_num) OR item_num <> floor(item_num) THEN 'non_numeric_item_id'
            WHEN rank_num < 1 OR rank_num > 2147483647 THEN 'bad_rank'
            WHEN coalesce(trim(raw_score), '') <> '' AND score_num IS NULL THEN 'non_numeric_score'
        END AS type_reason
    FROM typed
),
known AS (
    SELECT
        c.*,
        CASE
            WHEN c.type_reason IS NOT NULL THEN c.type_reason
            WHEN v.visitorid IS NULL THEN 'unknown_customer'
            WHEN i.itemid IS NULL THEN 'unknown_item'
        END AS known_reason
    FROM checked AS c
    LEFT JOIN (SELECT DISTINCT visitorid FROM events) AS v
        ON c.type_reason IS NULL AND v.visitorid = c.customer_num::BIGINT
    LEFT JOIN items AS i
        ON c.type_reason IS NULL AND i.itemid = c.item_num::BIGINT
),
ranked AS (
    SELECT
        *,
        count(*) FILTER (WHERE known_reason IS NULL)
            OVER (PARTITION BY customer_num, rank_num) AS n_same_rank
    FROM known
),
deduplicated AS (
    SELECT
        *,
        CASE
            WHEN known_reason IS NOT NULL THEN known_reason
            WHEN n_same_rank > 1 THEN 'duplicate_rank'
        END AS rank_reason
    FROM ranked
)
SELECT
    source_file,
    raw_customer_id,
    raw_rank,
    raw_item_id,
    raw_score,
    CASE WHEN rank_reason IS NULL THEN customer_num::BIGINT END AS customer_id,
    CASE WHEN rank_reason IS NULL THEN rank_num::INTEGER END AS rank,
    CASE WHEN rank_reason IS NULL THEN item_num::BIGINT END AS item_id,
    CASE WHEN rank_reason IS NULL THEN score_num END AS score,
    CASE
        WHEN rank_reason IS NOT NULL THEN rank_reason
        WHEN row_number() OVER (PARTITION BY rank_reason IS NULL, customer_num, item_num ORDER BY rank_num) > 1
            THEN 'duplicate_item'
    END AS reason
FROM deduplicated
