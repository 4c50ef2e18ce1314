-- latest_recommendations: the newest complete run only; grain (customer_id, rank).
-- customer_key / item_key: the ids exactly as the source wrote them (customer_keys / item_keys:
-- H&M's hex customer ids and zero-led article ids; for Retail Rocket the decimal ids), the
-- decimal id when the mapping lacks one.
CREATE OR REPLACE VIEW latest_recommendations AS
SELECT
    r.*,
    coalesce(c.customer_key, r.customer_id::VARCHAR) AS customer_key,
    coalesce(i.item_key, r.item_id::VARCHAR) AS item_key
FROM recommendations AS r
LEFT JOIN customer_keys AS c ON r.customer_id = c.visitorid
LEFT JOIN item_keys AS i ON r.item_id = i.itemid
WHERE r.run_id = (
    SELECT run_id FROM recommendation_runs ORDER BY published_at DESC, run_id DESC LIMIT 1
)
