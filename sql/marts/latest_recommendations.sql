-- latest_recommendations: the newest complete run only; grain (customer_id, rank).
CREATE VIEW IF NOT EXISTS latest_recommendations AS
SELECT r.*
FROM recommendations AS r
WHERE r.run_id = (
    SELECT run_id FROM recommendation_runs ORDER BY published_at DESC, run_id DESC LIMIT 1
)
