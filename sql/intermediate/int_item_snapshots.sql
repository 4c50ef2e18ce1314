-- item_snapshots. Grain: one (itemid, "timestamp") at which either property was recorded.
-- Time column: "timestamp" (ms). Each property is carried forward on its own (the latest value
-- at or before the snapshot; categoryid and available change at different times); before a
-- property's first record its first record is used, since properties were logged from the
-- start; never recorded: categoryid 0 (unknown), available 1.
CREATE OR REPLACE TABLE item_snapshots AS
WITH records AS (
    SELECT itemid, "timestamp", categoryid, NULL::TINYINT AS available
    FROM int_item_category_snapshots
    UNION ALL
    SELECT itemid, "timestamp", NULL::BIGINT AS categoryid, available
    FROM int_item_available_snapshots
),
snapshot_times AS (
    -- max() skips NULLs: a time with both records keeps both values.
    SELECT itemid, "timestamp", max(categoryid) AS categoryid, max(available) AS available
    FROM records
    GROUP BY itemid, "timestamp"
)
SELECT
    itemid,
    "timestamp",
    coalesce(
        last_value(categoryid IGNORE NULLS) OVER up_to_now,
        first_value(categoryid IGNORE NULLS) OVER whole_history,
        0
    )::BIGINT AS categoryid,
    coalesce(
        last_value(available IGNORE NULLS) OVER up_to_now,
        first_value(available IGNORE NULLS) OVER whole_history,
        1
    )::TINYINT AS available
FROM snapshot_times
WINDOW
    up_to_now AS (PARTITION BY itemid ORDER BY "timestamp" ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
    whole_history AS (PARTITION BY itemid ORDER BY "timestamp" ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
ORDER BY itemid, "timestamp"
