-- items. Grain: one item with at least one clean event. Time column: last_timestamp (ms, its
-- latest event). categoryid / root_categoryid / available are the item's latest state (its
-- last item_snapshots row, even if later than its last event); no snapshots: 0 / 0 / 1.
CREATE OR REPLACE TABLE items AS
WITH event_counts AS (
    SELECT
        itemid,
        count(*) AS n_events,
        count(*) FILTER (WHERE event = 'view') AS n_views,
        count(*) FILTER (WHERE event = 'addtocart') AS n_addtocarts,
        count(*) FILTER (WHERE event = 'transaction') AS n_transactions,
        max("timestamp") AS last_timestamp
    FROM events
    GROUP BY itemid
),
latest_state AS (
    SELECT
        itemid,
        arg_max(categoryid, "timestamp") AS categoryid,
        arg_max(available, "timestamp") AS available
    FROM item_snapshots
    GROUP BY itemid
)
SELECT
    c.itemid,
    coalesce(s.categoryid, 0)::BIGINT AS categoryid,
    coalesce(k.root_categoryid, 0)::BIGINT AS root_categoryid,
    coalesce(s.available, 1)::TINYINT AS available,
    c.n_events,
    c.n_views,
    c.n_addtocarts,
    c.n_transactions,
    c.last_timestamp
FROM event_counts AS c
LEFT JOIN latest_state AS s ON c.itemid = s.itemid
LEFT JOIN categories AS k ON s.categoryid = k.categoryid
ORDER BY c.itemid
