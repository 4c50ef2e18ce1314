-- Grain: one item that is or ever was in the vocabulary. Time column: none
-- (n_train_events counts the item's events, by anyone, with timestamp < $train_end_ts).
-- Ids from seq_item_ids; latest attributes from items (0 = unknown category, 1 = available
-- when unknown). Items that left the vocabulary keep their row with in_vocab = false.
CREATE OR REPLACE TEMP TABLE seq_item_index_next AS
WITH counts AS (
    SELECT
        itemid,
        count(*) AS n_events,
        count(*) FILTER (WHERE timestamp < $train_end_ts) AS n_train_events
    FROM events
    GROUP BY itemid
)
SELECT
    ids.item_idx,
    ids.itemid,
    coalesce(i.categoryid, 0)::BIGINT AS categoryid,
    coalesce(i.root_categoryid, 0)::BIGINT AS root_categoryid,
    coalesce(i.available, 1)::TINYINT AS available,
    coalesce(n.n_events, 0)::BIGINT AS n_events,
    coalesce(n.n_train_events, 0)::BIGINT AS n_train_events,
    ids.in_vocab
FROM seq_item_ids AS ids
LEFT JOIN counts AS n USING (itemid)
LEFT JOIN items AS i USING (itemid)
ORDER BY ids.item_idx
