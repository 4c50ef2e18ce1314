-- int_events_rejected for H&M data. Grain: one data row of transactions_train.csv that fails a
-- check (by line_number); clean rows are absent. Time column: none (reads "timestamp", ms).
-- reason: stg_events_parsed.malformed_reason, else timestamp_out_of_range (more than $window_ms
-- from the median timestamp of the well-formed rows, quantile_disc). No duplicate check: a
-- repeated row is another unit bought, not an error.
CREATE OR REPLACE TEMP TABLE int_events_rejected AS
WITH well_formed_median AS (
    SELECT quantile_disc("timestamp", 0.5) AS median_ts FROM stg_events_parsed WHERE malformed_reason IS NULL
)
SELECT
    p.line_number,
    coalesce(p.malformed_reason, 'timestamp_out_of_range') AS reason
FROM stg_events_parsed AS p
CROSS JOIN well_formed_median AS m
WHERE p.malformed_reason IS NOT NULL OR abs(p."timestamp"::HUGEINT - m.median_ts) > $window_ms
