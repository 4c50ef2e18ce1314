-- Grain: as stg_item_properties (one categoryid/available property row); created empty when
-- the data directory has no item_properties_part*.csv. Time column: "timestamp" (ms).
CREATE OR REPLACE TEMP TABLE stg_item_properties (
    "timestamp" BIGINT,
    itemid BIGINT,
    property VARCHAR,
    value BIGINT,
    usable BOOLEAN
)
