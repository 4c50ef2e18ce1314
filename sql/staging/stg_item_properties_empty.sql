-- Grain: as stg_item_properties (one categoryid/available property row); created empty when
-- the data directory has no item_properties_part*.csv. Time column: "timestamp" (ms).
-- A working table of the ingest transaction, stored in the database file rather than TEMP: there
-- it is compressed and evictable (a 2.76M-row TEMP table spills to a temp file instead, ~2x
-- slower); recs.ingest drops it before COMMIT, so readers never see it.
CREATE OR REPLACE TABLE stg_item_properties (
    "timestamp" BIGINT,
    itemid BIGINT,
    property VARCHAR,
    value BIGINT,
    usable BOOLEAN
)
