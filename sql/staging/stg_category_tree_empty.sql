-- Grain: as stg_category_tree (one tree row); created empty when there is no category_tree.csv.
-- No time column.
CREATE OR REPLACE TEMP TABLE stg_category_tree (
    categoryid BIGINT,
    parentid BIGINT,
    usable BOOLEAN
)
