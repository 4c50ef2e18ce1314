-- Grain: one item that is or ever was in the vocabulary. Time column: none.
-- Writes sequences/items/ parquet (item_idx -> itemid and latest attributes).
COPY (
    SELECT * FROM seq_item_index_next ORDER BY item_idx
) TO $path (FORMAT parquet)
