-- events. Grain: one clean event (a data row of events.csv that int_events_rejected did not
-- reject). Time column: "timestamp" (ms; event_time is the same instant as TIMESTAMP).
-- categoryid / root_categoryid / available: the item's state as of the event. An as-of join,
-- written as an equi-join on itemid plus the state's validity interval [valid_from, valid_to)
-- from int_item_states (exactly one state covers any instant): DuckDB's ASOF operator sorts both
-- sides and took twice as long at full scale. Items never recorded in item_properties:
-- categoryid 0 (unknown), root_categoryid 0, available 1.
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
FROM stg_events_parsed AS e
ANTI JOIN int_events_rejected AS r ON e.line_number = r.line_number
LEFT JOIN int_item_states AS s
    ON e.itemid = s.itemid AND e."timestamp" >= s.valid_from AND e."timestamp" < s.valid_to
