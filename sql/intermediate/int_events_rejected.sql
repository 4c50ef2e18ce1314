-- Grain: one data row of events.csv that fails a check (by line_number); clean rows are absent.
-- Time column: none (the checks read stg_events_parsed."timestamp", ms).
-- reason: the first failing check, in this order:
--   malformed (stg_events_parsed.malformed_reason), unknown_event,
--   transaction_without_transactionid, transactionid_on_non_transaction,
--   duplicate (all five parsed fields equal to an earlier line's; the first one is kept),
--   nonpositive_id, timestamp_out_of_range (more than $window_ms from the median timestamp of
--   the well-formed rows; quantile_disc, so the median is an actual timestamp and deterministic).
-- Only the rejected rows are stored: events and quarantine_events join back to
-- stg_events_parsed, so the 2.76M clean rows are not copied one more time.
CREATE OR REPLACE TEMP TABLE int_events_rejected AS
WITH well_formed AS (
    SELECT *, hash("timestamp", visitorid, event, itemid, transactionid) AS row_hash
    FROM stg_events_parsed
    WHERE malformed_reason IS NULL
),
well_formed_median AS (
    SELECT quantile_disc("timestamp", 0.5) AS median_ts FROM well_formed
),
repeated_hashes AS (
    -- A cheap one-key aggregate narrows the exact (five-key window) check to the few rows
    -- that can be repeats at all.
    SELECT row_hash FROM well_formed GROUP BY row_hash HAVING count(*) > 1
),
later_copies AS (
    SELECT line_number
    FROM (
        SELECT
            line_number,
            row_number() OVER (
                PARTITION BY "timestamp", visitorid, event, itemid, transactionid
                ORDER BY line_number
            ) AS occurrence
        FROM well_formed
        SEMI JOIN repeated_hashes USING (row_hash)
    )
    WHERE occurrence > 1
),
checked AS (
    SELECT
        p.line_number,
        CASE
            WHEN p.malformed_reason IS NOT NULL THEN p.malformed_reason
            WHEN p.event NOT IN ('view', 'addtocart', 'transaction') THEN 'unknown_event'
            WHEN p.event = 'transaction' AND p.transactionid IS NULL THEN 'transaction_without_transactionid'
            WHEN p.event <> 'transaction' AND p.transactionid IS NOT NULL THEN 'transactionid_on_non_transaction'
            WHEN d.line_number IS NOT NULL THEN 'duplicate'
            WHEN p.visitorid <= 0 OR p.itemid <= 0 OR p.transactionid <= 0 THEN 'nonpositive_id'
            -- HUGEINT: a garbage timestamp far from the median must not overflow the subtraction.
            WHEN abs(p."timestamp"::HUGEINT - m.median_ts) > $window_ms THEN 'timestamp_out_of_range'
        END AS reason
    FROM stg_events_parsed AS p
    LEFT JOIN later_copies AS d ON p.line_number = d.line_number
    CROSS JOIN well_formed_median AS m
)
SELECT line_number, reason
FROM checked
WHERE reason IS NOT NULL
