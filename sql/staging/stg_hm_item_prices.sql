-- stg_item_prices for H&M data. Grain: one clean transaction row (its price is a record of the
-- item's price at that time). Time column: "timestamp" (ms, as in events). int_item_prices then
-- keeps each item's latest price (ties at one instant: the smaller), its min / max and count.
CREATE OR REPLACE TABLE stg_item_prices AS
SELECT e."timestamp", e.itemid, e.price, true AS usable
FROM stg_events_parsed AS e
ANTI JOIN int_events_rejected AS r ON e.line_number = r.line_number
