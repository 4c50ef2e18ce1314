-- events when no item has a recorded property (no usable item_properties rows). Grain: one
-- clean event. Time column: "timestamp" (ms). Same columns as int_events_asof.sql; every
-- item is unknown: categoryid 0, root_categoryid 0, available 1. A separate statement because
-- DuckDB's ASOF join still sorts the whole left side when the right side is empty (~1 s here).
CREATE OR REPLACE TABLE events AS
SELECT
    "timestamp",
    visitorid,
    event,
    itemid,
    transactionid,
    epoch_ms("timestamp") AS event_time,
    0::BIGINT AS categoryid,
    1::TINYINT AS available,
    0::BIGINT AS root_categoryid
FROM int_events_checked
WHERE reason IS NULL
