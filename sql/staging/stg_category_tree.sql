-- Grain: one row of category_tree.csv ($path). No time column.
-- Roots have an empty parentid. A row is usable when categoryid is a positive integer and
-- parentid is empty or an integer; a parentid <= 0 is read as "no parent" (0 means unknown).
CREATE OR REPLACE TEMP TABLE stg_category_tree AS
WITH parsed AS (
    SELECT
        parse_bigint(categoryid) AS categoryid,
        parse_bigint(parentid) AS parentid,
        parentid IS NULL OR parentid = '' AS is_root_row
    FROM read_csv(
        $path,
        columns = {'categoryid': 'VARCHAR', 'parentid': 'VARCHAR'},
        header = true, auto_detect = false
    )
)
SELECT
    categoryid,
    CASE WHEN parentid > 0 THEN parentid END AS parentid,
    coalesce(categoryid > 0 AND (is_root_row OR parentid IS NOT NULL), false) AS usable
FROM parsed
