-- Grain: one data row of events.csv, i.e. every physical line after the header (line 1) up to
-- the last non-blank line. Time column: "timestamp" (ms since epoch, NULL when malformed).
-- Source: the Arrow table `stg_event_lines` (line_number, raw_line with its line terminator)
-- that recs.ingest registers; lines are split on ',' without any quoting rules.
-- malformed_reason is the first failing structural check (column count, then each numeric
-- field); parsed columns are NULL where they do not parse, and all NULL for a wrong column count.
-- The raw text is not copied here: recs.ingest attaches it to the (few) quarantined rows.
-- A working table of the ingest transaction, stored in the database file rather than TEMP: there
-- it is compressed and evictable (a 2.76M-row TEMP table spills to a temp file instead, ~2x
-- slower); recs.ingest drops it before COMMIT, so readers never see it.
CREATE OR REPLACE TABLE stg_events_parsed AS
WITH split_lines AS (
    SELECT line_number, string_split(raw_line, ',') AS fields
    FROM stg_event_lines
    WHERE line_number > 1
),
parsed AS (
    SELECT
        line_number,
        len(fields) = 5 AS has_five_fields,
        CASE WHEN len(fields) = 5 THEN parse_bigint(fields[1]) END AS "timestamp",
        CASE WHEN len(fields) = 5 THEN parse_bigint(fields[2]) END AS visitorid,
        CASE WHEN len(fields) = 5 THEN fields[3] END AS event,
        CASE WHEN len(fields) = 5 THEN parse_bigint(fields[4]) END AS itemid,
        CASE WHEN len(fields) = 5 THEN rtrim(fields[5], E'\r\n') END AS transactionid_text
    FROM split_lines
)
SELECT
    line_number,
    "timestamp",
    visitorid,
    event,
    itemid,
    parse_bigint(NULLIF(transactionid_text, '')) AS transactionid,
    CASE
        WHEN NOT has_five_fields THEN 'wrong_column_count'
        WHEN "timestamp" IS NULL THEN 'bad_timestamp'
        WHEN visitorid IS NULL THEN 'bad_visitorid'
        WHEN itemid IS NULL THEN 'bad_itemid'
        WHEN transactionid_text <> '' AND parse_bigint(transactionid_text) IS NULL THEN 'bad_transactionid'
    END AS malformed_reason
FROM parsed
