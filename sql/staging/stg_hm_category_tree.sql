-- stg_category_tree for H&M data. Grain: one node of index_group -> section -> product type.
-- No time column. Why this tree: the index group (Ladieswear, Divided, Menswear,
-- Baby/Children, Sport) is the customer segment, the strongest split of who buys what, so it is
-- the root (root_categoryid); the section is the shop's department within it; the product type
-- (trousers, vest top) is what the garment is. Product types repeat across sections, so a leaf
-- is a (section, product type) pair. Ids keep the codes readable and the levels apart:
-- group = index_group_no (1-99), section = group * 1000 + section_no (1,000-99,999),
-- leaf = section * 10,000 + product_type_no + 1 (>= 10,000,000).
CREATE OR REPLACE TEMP TABLE stg_category_tree AS
SELECT DISTINCT index_group_no AS categoryid, NULL::BIGINT AS parentid, true AS usable
FROM stg_hm_articles WHERE usable
UNION ALL
SELECT DISTINCT index_group_no * 1000 + section_no, index_group_no, true
FROM stg_hm_articles WHERE usable
UNION ALL
SELECT DISTINCT (index_group_no * 1000 + section_no) * 10000 + product_type_no + 1,
       index_group_no * 1000 + section_no, true
FROM stg_hm_articles WHERE usable
