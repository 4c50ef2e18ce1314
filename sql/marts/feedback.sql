-- feedback: one row per rating a merchandiser gave on the side-by-side page (`recs ui`).
-- Grain: feedback_id (one submission). Time column: given_at (UTC).
-- kind 'list': rating 1..5 of a whole list, item_id NULL; kind 'item': thumbs on one item,
-- rating +1 (up) or -1 (down). customer: the customer id as text, 'persona:<name>' or
-- 'history:<item ids>' (customer_id is set for real customers only). system: ours | incumbent.
-- Rows arrive as parquet files under warehouse/feedback/ and are folded in by the next writer
-- (recs/feedback.py).
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id VARCHAR   NOT NULL,
    given_at    TIMESTAMP NOT NULL,
    customer    VARCHAR   NOT NULL,
    customer_id BIGINT,
    system      VARCHAR   NOT NULL,
    kind        VARCHAR   NOT NULL,
    item_id     BIGINT,
    rating      INTEGER   NOT NULL,
    run_id      VARCHAR,
    incumbent   VARCHAR
)
