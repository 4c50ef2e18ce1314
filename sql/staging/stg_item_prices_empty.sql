-- Grain: as stg_item_prices (one price property row); created empty when the data directory
-- has no item_properties_part*.csv. Time column: "timestamp" (ms).
CREATE OR REPLACE TABLE stg_item_prices (
    "timestamp" BIGINT,
    itemid BIGINT,
    price DOUBLE,
    usable BOOLEAN
)
