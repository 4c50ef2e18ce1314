-- Grain: one item with events (all time). Time column: none, counts span the whole log.
-- The vocabulary is every item with >= $min_item_events events; only these make steps.
CREATE OR REPLACE TEMP TABLE seq_item_counts AS
SELECT
    itemid,
    count(*) AS n_events,
    count(*) >= $min_item_events AS in_vocab
FROM events
GROUP BY itemid
