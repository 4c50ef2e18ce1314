-- compare_list_items: both systems' lists for the customers both cover, cut to the first
-- $max_k items. Grain: (system, customer_id, position). No time column (the run's lists and
-- the incumbent's as loaded). position: 1-based order by rank (an incumbent's ranks may have
-- gaps). Item attributes are the latest (items); seen: the customer has any event on the item.
WITH ours AS (
    SELECT customer_id, rank, item_id FROM recommendations WHERE run_id = $run_id
),
theirs AS (
    SELECT customer_id, rank, item_id FROM incumbent_lists WHERE incumbent = $incumbent
),
both_cover AS (
    SELECT DISTINCT customer_id FROM ours
    INTERSECT
    SELECT DISTINCT customer_id FROM theirs
),
lists AS (
    SELECT 'ours' AS system, * FROM ours SEMI JOIN both_cover USING (customer_id)
    UNION ALL
    SELECT 'incumbent' AS system, * FROM theirs SEMI JOIN both_cover USING (customer_id)
),
positioned AS (
    SELECT *, row_number() OVER (PARTITION BY system, customer_id ORDER BY rank, item_id) AS position
    FROM lists
)
SELECT
    p.system,
    p.customer_id,
    p.position,
    p.item_id,
    coalesce(i.categoryid, 0) AS categoryid,
    coalesce(i.root_categoryid, 0) AS root_categoryid,
    coalesce(i.available, 1) = 1 AS available,
    coalesce(i.n_events, 0) AS n_events,
    s.itemid IS NOT NULL AS seen
FROM positioned AS p
LEFT JOIN items AS i ON i.itemid = p.item_id
LEFT JOIN (SELECT DISTINCT visitorid, itemid FROM events) AS s
    ON s.visitorid = p.customer_id AND s.itemid = p.item_id
WHERE p.position <= $max_k
ORDER BY p.system, p.customer_id, p.position
