-- Grain: one row. Time column: none. Vocabulary size and number of assigned item ids.
SELECT
    count(*) FILTER (WHERE in_vocab) AS n_items,
    count(*) AS n_item_ids
FROM seq_item_index_next
