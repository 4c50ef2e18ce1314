-- Grain: one (itemid, "timestamp") at which item_properties recorded availability.
-- Time column: "timestamp" (ms). Conflicting values at the same instant: available (1) wins.
CREATE OR REPLACE TEMP TABLE int_item_available_snapshots AS
SELECT itemid, "timestamp", max(value)::TINYINT AS available
FROM stg_item_properties
WHERE usable AND property = 'available'
GROUP BY itemid, "timestamp"
