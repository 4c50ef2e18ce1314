-- Grain: one item that is or ever was in the vocabulary. Time column: none.
-- Publishes the new stable item ids (run inside the build's publishing transaction).
CREATE OR REPLACE TABLE item_index AS
SELECT * FROM seq_item_index_next ORDER BY item_idx
