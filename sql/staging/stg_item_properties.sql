-- Grain: one row of item_properties_part*.csv whose property is categoryid or available (the
-- only two that matter). Time column: "timestamp" (ms). Source: the files in the $paths list.
-- Files are read as whole lines and split on ',': other properties hold free text (possibly with
-- commas or quotes) that is never interpreted. A row is usable when its timestamp and itemid
-- parse, itemid > 0, and its value is a categoryid >= 0 (0 = unknown) or an availability of 0/1.
-- A working table of the ingest transaction, stored in the database file rather than TEMP: there
-- it is compressed and evictable (a 2.76M-row TEMP table spills to a temp file instead, ~2x
-- slower); recs.ingest drops it before COMMIT, so readers never see it.
CREATE OR REPLACE TABLE stg_item_properties AS
WITH split_lines AS (
    SELECT string_split(line, ',') AS fields
    FROM read_csv(
        $paths,
        columns = {'line': 'VARCHAR'}, header = true, auto_detect = false,
        delim = E'\x01\x02\x03\x04', quote = '', escape = ''
    )
    -- A cheap substring test skips splitting the many lines of other properties.
    WHERE contains(line, ',categoryid,') OR contains(line, ',available,')
),
relevant AS (
    SELECT
        parse_bigint(fields[1]) AS "timestamp",
        parse_bigint(fields[2]) AS itemid,
        fields[3] AS property,
        CASE WHEN len(fields) = 4 THEN parse_bigint(fields[4]) END AS value
    FROM split_lines
    WHERE fields[3] IN ('categoryid', 'available')
)
SELECT
    "timestamp",
    itemid,
    property,
    value,
    coalesce("timestamp" > -9223372036854775808 AND itemid > 0 AND CASE property
        WHEN 'categoryid' THEN value >= 0
        ELSE value IN (0, 1)
    END, false) AS usable
FROM relevant
