-- Grain: one data row of events.csv (line 1 is the header). Time column: "timestamp" (ms).
-- The fast twin of stg_events_parsed.sql with the same columns, for a plainly clean file:
-- recs.ingest registers `stg_event_rows`, parsed by Arrow's CSV reader, only when every line has
-- five fields, the three id fields are plain digits within BIGINT and the file holds no byte
-- outside digits , . CR LF and the letters of the event names (so Arrow's integer parsing
-- agrees exactly with parse_bigint). Only bad_transactionid can remain to detect.
-- A working table of the ingest transaction, stored in the database file rather than TEMP: there
-- it is compressed and evictable (a 2.76M-row TEMP table spills to a temp file instead, ~2x
-- slower); recs.ingest drops it before COMMIT, so readers never see it.
CREATE OR REPLACE TABLE stg_events_parsed AS
SELECT
    line_number,
    "timestamp",
    visitorid,
    event,
    itemid,
    parse_bigint(NULLIF(transactionid, '')) AS transactionid,
    CASE
        WHEN transactionid <> '' AND parse_bigint(transactionid) IS NULL THEN 'bad_transactionid'
    END AS malformed_reason
FROM stg_event_rows
