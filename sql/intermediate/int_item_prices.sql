-- item_prices. Grain: one item with at least one usable price record (any item of
-- item_properties, with or without events). Time column: price_timestamp (ms, the latest
-- record). price: the latest recorded value (two values at the latest instant: the smaller);
-- min_price / max_price over all records; n_records: how many price records the item has.
CREATE OR REPLACE TABLE item_prices AS
SELECT
    itemid,
    arg_max(price, ("timestamp", -price)) AS price,
    max("timestamp") AS price_timestamp,
    min(price) AS min_price,
    max(price) AS max_price,
    count(*) AS n_records
FROM stg_item_prices
WHERE usable
GROUP BY itemid
ORDER BY itemid
