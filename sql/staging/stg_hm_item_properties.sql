-- stg_item_properties for H&M data. Grain: one articles.csv row, as a categoryid property of its
-- item. Time column: "timestamp" (0: the catalogue holds for the whole log).
-- value: the item's product-type leaf of the category tree (stg_hm_category_tree.sql), a
-- row is usable when its codes parse (stg_hm_articles.usable). Articles the transactions name
-- but articles.csv lacks get category 0 (unknown), as in Retail Rocket.
CREATE OR REPLACE TABLE stg_item_properties AS
SELECT
    0::BIGINT AS "timestamp",
    m.itemid,
    'categoryid' AS property,
    CASE WHEN a.usable THEN (a.index_group_no * 1000 + a.section_no) * 10000 + a.product_type_no + 1 END AS value,
    a.usable AND m.itemid IS NOT NULL AS usable
FROM stg_hm_articles AS a
LEFT JOIN int_hm_item_map AS m ON a.article_code = m.article_code
