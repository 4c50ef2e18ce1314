-- Grain: one (itemid, "timestamp") at which item_properties recorded a categoryid.
-- Time column: "timestamp" (ms). Two different values at the same instant: the larger wins
-- (arbitrary but deterministic; the files carry no finer order).
CREATE OR REPLACE TEMP TABLE int_item_category_snapshots AS
SELECT itemid, "timestamp", max(value) AS categoryid
FROM stg_item_properties
WHERE usable AND property = 'categoryid'
GROUP BY itemid, "timestamp"
