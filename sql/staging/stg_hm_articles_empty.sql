-- Grain: as stg_hm_articles (one articles.csv row); created empty without articles.csv.
CREATE OR REPLACE TEMP TABLE stg_hm_articles (
    line_number BIGINT, article_key VARCHAR, article_code UINTEGER, product_code VARCHAR, index_group_no BIGINT,
    section_no BIGINT, product_type_no BIGINT, colour_group_code VARCHAR, usable BOOLEAN
)
