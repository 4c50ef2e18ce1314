-- Grain: one data row of articles.csv (25 columns, quoted text allowed). No time column.
-- Source: the Arrow table `stg_hm_article_rows` that recs.ingest_hm reads with a CSV parser
-- (line_number = data row number + 1, i.e. the file's order; the columns used, as text;
-- article_id_code: the code of the article_id text, shared with the transactions').
-- A row is usable when article_id is digits and the three category codes (index_group_no,
-- section_no, product_type_no) parse within their ranges (see stg_hm_category_tree.sql).
CREATE OR REPLACE TEMP TABLE stg_hm_articles AS
SELECT
    line_number,
    article_id AS article_key,
    article_id_code AS article_code,
    product_code,
    parse_bigint(index_group_no) AS index_group_no,
    parse_bigint(section_no) AS section_no,
    parse_bigint(product_type_no) AS product_type_no,
    colour_group_code,
    coalesce(regexp_full_match(article_id, '[0-9]{1,20}')
             AND parse_bigint(index_group_no) BETWEEN 1 AND 99
             AND parse_bigint(section_no) BETWEEN 0 AND 999
             AND parse_bigint(product_type_no) BETWEEN -1 AND 9998, false) AS usable
FROM stg_hm_article_rows
