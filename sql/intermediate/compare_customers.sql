-- compare_customers: the segments of every customer with events. Grain: customer_id. Time
-- column: none (all history). n_events: the customer's clean events (history length);
-- dominant_root: the root category of most of them (ties: the smallest id; 0 = uncategorised).
WITH per_root AS (
    SELECT e.visitorid AS customer_id, coalesce(i.root_categoryid, 0) AS root_categoryid, count(*) AS n
    FROM events AS e
    LEFT JOIN items AS i USING (itemid)
    GROUP BY 1, 2
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY n DESC, root_categoryid) AS place,
           sum(n) OVER (PARTITION BY customer_id) AS n_events
    FROM per_root
)
SELECT customer_id, n_events::BIGINT AS n_events, root_categoryid AS dominant_root
FROM ranked
WHERE place = 1
ORDER BY customer_id
