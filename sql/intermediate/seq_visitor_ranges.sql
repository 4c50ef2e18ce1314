-- Grain: one row. Time column: none. The number of events, the smallest and largest visitorid
-- and approximate visitorid quantiles at $fractions: recs/sequences.py reads the sorted events in
-- the visitor ranges they bound (any bounds give the same tables; these only balance the ranges).
SELECT
    count(*) AS n_events,
    min(visitorid) AS first_visitorid,
    max(visitorid) AS last_visitorid,
    approx_quantile(visitorid, $fractions::FLOAT[]) AS cuts
FROM events
