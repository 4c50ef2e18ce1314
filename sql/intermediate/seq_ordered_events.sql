-- Grain: one event of a visitor with $first_visitorid <= visitorid < $end_visitorid (all items).
-- Time column: timestamp (ms). recs/sequences.py reads the visitors in a few such ranges, so
-- DuckDB sorts a fraction of the events at a time (less memory, no spilling).
-- Every event in step order: per visitor by (timestamp, event rank view<addtocart<transaction,
-- itemid); rows tied on all of these are ordered by (category, root) in recs/sequences.py
-- (cheaper than two more sort keys). item_idx is the vocabulary id, 0 for events on items
-- outside the vocabulary (they count towards n_events but make no steps). The collapse into
-- steps and the list cutting run vectorised in recs/sequences.py over this sorted stream.
SELECT
    e.visitorid,
    e.timestamp,
    CASE e.event WHEN 'view' THEN 0 WHEN 'addtocart' THEN 1 ELSE 2 END::TINYINT AS event_rank,
    coalesce(v.item_idx, 0)::INTEGER AS item_idx,
    e.categoryid::INTEGER AS categoryid,
    e.root_categoryid::INTEGER AS root_categoryid
FROM events AS e
LEFT JOIN seq_item_ids AS v ON e.itemid = v.itemid AND v.in_vocab
WHERE e.visitorid >= $first_visitorid AND e.visitorid < $end_visitorid
ORDER BY e.visitorid, e.timestamp, event_rank, e.itemid
