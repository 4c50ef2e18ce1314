-- Grain: as stg_hm_customers (one customers.csv row); created empty without customers.csv.
CREATE OR REPLACE TEMP TABLE stg_hm_customers (line_number BIGINT, customer_code UINTEGER)
