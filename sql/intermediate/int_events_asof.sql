-- events. Grain: one clean event (a data row of events.csv that passed every check).
-- Time column: "timestamp" (ms; event_time is the same instant as TIMESTAMP).
-- categoryid / root_categoryid / available: the item's state as of the event, by one ASOF join
-- over int_item_states (item_snapshots, where each property is carried forward separately,
-- plus the first state for events before the first snapshot). Items never recorded in
-- item_properties: categoryid 0 (unknown), root_categoryid 0, available 1.
CREATE OR REPLACE TABLE events AS
SELECT
    e."timestamp",
    e.visitorid,
    e.event,
    e.itemid,
    e.transactionid,
    epoch_ms(e."timestamp") AS event_time,
    coalesce(s.categoryid, 0)::BIGINT AS categoryid,
    coalesce(s.available, 1)::TINYINT AS available,
    coalesce(s.root_categoryid, 0)::BIGINT AS root_categoryid
FROM int_events_checked AS e
ASOF LEFT JOIN int_item_states AS s
    ON e.itemid = s.itemid AND e."timestamp" >= s."timestamp"
WHERE e.reason IS NULL
