-- Grain: one visitor of the previous build's customer_index. Time column: none.
-- The stable ids to keep; new visitors are appended after max(customer_idx) in Python.
SELECT customer_idx, visitorid
FROM customer_index
ORDER BY customer_idx
