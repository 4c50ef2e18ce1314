-- Grain: one state of an item: an item_snapshots row with its root_categoryid, valid over
-- [valid_from, valid_to). Time columns: valid_from / valid_to (ms). The first state also covers
-- everything before it (valid_from = smallest BIGINT: properties were recorded from the start
-- of the log) and the last one everything after (valid_to = largest BIGINT), so every instant
-- falls in exactly one state of an item with snapshots.
CREATE OR REPLACE TEMP TABLE int_item_states AS
SELECT
    s.itemid,
    CASE
        WHEN row_number() OVER by_time = 1 THEN -9223372036854775808
        ELSE s."timestamp"
    END AS valid_from,
    coalesce(lead(s."timestamp") OVER by_time, 9223372036854775807) AS valid_to,
    s.categoryid,
    coalesce(k.root_categoryid, 0) AS root_categoryid,
    s.available
FROM item_snapshots AS s
LEFT JOIN categories AS k ON s.categoryid = k.categoryid
WINDOW by_time AS (PARTITION BY s.itemid ORDER BY s."timestamp")
