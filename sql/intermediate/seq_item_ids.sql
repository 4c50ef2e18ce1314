-- Grain: one item that is or ever was in the vocabulary. Time column: none.
-- Stable ids: every row of the previous item_index keeps its item_idx; items entering the
-- vocabulary get max(item_idx) + 1, ... in itemid order; 0 is never assigned.
CREATE OR REPLACE TEMP TABLE seq_item_ids AS
WITH previous AS (
    SELECT item_idx, itemid FROM item_index
),
added AS (
    SELECT
        (SELECT coalesce(max(item_idx), 0) FROM previous) + row_number() OVER (ORDER BY c.itemid) AS item_idx,
        c.itemid
    FROM seq_item_counts AS c
    ANTI JOIN previous AS p ON c.itemid = p.itemid
    WHERE c.in_vocab
)
SELECT
    a.item_idx::INTEGER AS item_idx,
    a.itemid::BIGINT AS itemid,
    coalesce(c.in_vocab, false) AS in_vocab
FROM (SELECT * FROM previous UNION ALL SELECT * FROM added) AS a
LEFT JOIN seq_item_counts AS c USING (itemid)
