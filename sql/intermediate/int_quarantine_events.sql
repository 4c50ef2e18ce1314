-- quarantine_events. Grain: one rejected data row of events.csv, by physical line_number
-- (the header is line 1). Time column: "timestamp" (ms, NULL when it does not parse).
-- raw_line is the line's text without its terminator, from the Arrow table
-- `stg_quarantined_lines` that recs.ingest registers (the raw lines of exactly these rows);
-- parsed columns are filled where they parse (all NULL for wrong_column_count).
CREATE OR REPLACE TABLE quarantine_events AS
SELECT
    r.line_number,
    rtrim(q.raw_line, E'\r\n') AS raw_line,
    p."timestamp",
    p.visitorid,
    p.event,
    p.itemid,
    p.transactionid,
    r.reason
FROM int_events_rejected AS r
JOIN stg_events_parsed AS p ON r.line_number = p.line_number
JOIN stg_quarantined_lines AS q ON r.line_number = q.line_number
ORDER BY r.line_number
