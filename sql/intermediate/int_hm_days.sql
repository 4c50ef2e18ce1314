-- Grain: one distinct t_dat text of transactions_train.csv (stg_hm_day_keys: code -> text).
-- Time column: day. day is NULL unless t_dat is exactly YYYY-MM-DD and a real date. first_line
-- is the day's first line in the file: a row's time of day is its distance in lines from it
-- (int_hm_events_parsed). Checked once per distinct value (two years: ~730), not once per row.
CREATE OR REPLACE TEMP TABLE int_hm_days AS
WITH first_lines AS (
    SELECT day_code, min(line_number) AS first_line
    FROM stg_hm_transactions
    WHERE n_fields = 5
    GROUP BY day_code
)
SELECT
    f.day_code,
    k.t_dat,
    f.first_line,
    CASE WHEN regexp_full_match(k.t_dat, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN TRY_CAST(k.t_dat AS DATE) END AS day
FROM first_lines AS f
JOIN stg_hm_day_keys AS k ON f.day_code = k.code
