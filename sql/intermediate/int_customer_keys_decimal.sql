-- customer_keys for Retail Rocket data. Grain: one visitorid with a clean event. No time column.
-- The source's ids are integers already: customer_key is the decimal visitorid.
CREATE OR REPLACE TABLE customer_keys AS
SELECT DISTINCT visitorid, visitorid::VARCHAR AS customer_key, true AS in_data
FROM events
ORDER BY visitorid
