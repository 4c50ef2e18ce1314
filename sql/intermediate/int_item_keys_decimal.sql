-- item_keys for Retail Rocket data. Grain: one item of `items`. No time column.
-- item_key is the decimal itemid; author and price are not known for Retail Rocket (NULL).
CREATE OR REPLACE TABLE item_keys AS
SELECT itemid, itemid::VARCHAR AS item_key, NULL::VARCHAR AS author, NULL::DOUBLE AS price, true AS in_data
FROM items
ORDER BY itemid
