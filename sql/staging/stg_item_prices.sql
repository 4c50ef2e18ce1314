-- Grain: one row of item_properties_part*.csv whose property is the price property
-- ($property, "790": see the README's "Item prices"). Time column: "timestamp" (ms). Source:
-- the files in the $paths list, read as whole lines and split on ',' (as stg_item_properties).
-- A row is usable when its timestamp and itemid parse, itemid > 0, and its value is one number
-- in the hashed-numeric style `n<number>` (e.g. `n5040.000`) greater than 0.
-- A working table of the ingest transaction (dropped by recs.ingest before COMMIT).
CREATE OR REPLACE TABLE stg_item_prices AS
WITH split_lines AS (
    SELECT string_split(line, ',') AS fields
    FROM read_csv(
        $paths,
        columns = {'line': 'VARCHAR'}, header = true, auto_detect = false,
        delim = E'\x01\x02\x03\x04', quote = '', escape = ''
    )
    WHERE contains(line, ',' || $property || ',')
),
relevant AS (
    SELECT
        parse_bigint(fields[1]) AS "timestamp",
        parse_bigint(fields[2]) AS itemid,
        CASE
            WHEN len(fields) = 4 AND regexp_full_match(trim(fields[4]), 'n[0-9]+(\.[0-9]+)?')
            THEN TRY_CAST(substr(trim(fields[4]), 2) AS DOUBLE)
        END AS price
    FROM split_lines
    WHERE fields[3] = $property
)
SELECT
    "timestamp",
    itemid,
    price,
    coalesce("timestamp" > -9223372036854775808 AND itemid > 0 AND price > 0, false) AS usable
FROM relevant
