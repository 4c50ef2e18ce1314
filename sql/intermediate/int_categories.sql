-- categories. Grain: one category. No time column.
-- Nodes: the tree's categories (one parent each: the smallest if a category repeats), plus
-- parents the tree never lists and categories item_properties uses but the tree lacks, both as
-- roots. root_categoryid is the top ancestor (recursive walk down from the roots, at most
-- $max_depth levels); depth is 0 for a root. A category in a parent cycle never reaches a root:
-- it is its own root with depth NULL. Without a tree every category is its own root.
CREATE OR REPLACE TABLE categories AS
WITH RECURSIVE
tree AS (
    SELECT categoryid, min(parentid) AS parentid
    FROM stg_category_tree
    WHERE usable
    GROUP BY categoryid
),
referenced AS (
    SELECT parentid AS categoryid FROM tree WHERE parentid IS NOT NULL
    UNION
    SELECT categoryid FROM int_item_category_snapshots WHERE categoryid > 0
),
nodes AS (
    SELECT categoryid, parentid FROM tree
    UNION ALL
    SELECT r.categoryid, NULL::BIGINT AS parentid
    FROM referenced AS r
    ANTI JOIN tree AS t ON r.categoryid = t.categoryid
),
walk (categoryid, root_categoryid, depth) AS (
    SELECT categoryid, categoryid, 0
    FROM nodes
    WHERE parentid IS NULL
    UNION ALL
    SELECT n.categoryid, w.root_categoryid, w.depth + 1
    FROM walk AS w
    JOIN nodes AS n ON n.parentid = w.categoryid
    WHERE w.depth < $max_depth
)
SELECT
    n.categoryid,
    n.parentid,
    coalesce(w.root_categoryid, n.categoryid) AS root_categoryid,
    w.depth
FROM nodes AS n
LEFT JOIN walk AS w ON n.categoryid = w.categoryid
ORDER BY n.categoryid
