-- incumbent_lists: an incumbent system's validated lists; grain (incumbent, customer_id, rank).
-- Time column: loaded_at. Ids are the source data's (events.visitorid / itemid), as in
-- latest_recommendations. `recs compare` replaces an incumbent's rows on every load.
CREATE TABLE IF NOT EXISTS incumbent_lists (
    incumbent   VARCHAR NOT NULL,
    customer_id BIGINT NOT NULL,
    rank        INTEGER NOT NULL,
    item_id     BIGINT NOT NULL,
    score       DOUBLE,
    loaded_at   TIMESTAMP
)
