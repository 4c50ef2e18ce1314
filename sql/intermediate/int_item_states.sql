-- Grain: one (itemid, "timestamp") state of an item: every item_snapshots row with its
-- root_categoryid, plus one sentinel row per item at the smallest BIGINT carrying the item's
-- first state, so an ASOF join also covers events before the first snapshot (properties were
-- recorded from the start of the log) without a second join. Time column: "timestamp" (ms).
CREATE OR REPLACE TEMP TABLE int_item_states AS
WITH snapshots AS (
    SELECT s.itemid, s."timestamp", s.categoryid, coalesce(k.root_categoryid, 0) AS root_categoryid, s.available
    FROM item_snapshots AS s
    LEFT JOIN categories AS k ON s.categoryid = k.categoryid
)
SELECT itemid, "timestamp", categoryid, root_categoryid, available
FROM snapshots
UNION ALL
SELECT
    itemid,
    -9223372036854775808 AS "timestamp",
    arg_min(categoryid, "timestamp") AS categoryid,
    arg_min(root_categoryid, "timestamp") AS root_categoryid,
    arg_min(available, "timestamp") AS available
FROM snapshots
GROUP BY itemid
