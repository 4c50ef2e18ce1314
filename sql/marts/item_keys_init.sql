-- Grain: one item id as the source wrote it. Time column: none.
-- Creates the empty mapping table on the first ingest; an H&M ingest keeps the ids it holds
-- (in_data: the key occurs in the current data).
CREATE TABLE IF NOT EXISTS item_keys (
    itemid BIGINT,
    item_key VARCHAR,
    author VARCHAR,
    price DOUBLE,
    in_data BOOLEAN
)
