-- Grain: one item that is or ever was in the vocabulary. Time column: none.
-- Creates the empty stable-id table on the first build; later builds read it.
CREATE TABLE IF NOT EXISTS item_index (
    item_idx INTEGER,
    itemid BIGINT,
    categoryid BIGINT,
    root_categoryid BIGINT,
    available TINYINT,
    n_events BIGINT,
    n_train_events BIGINT,
    in_vocab BOOLEAN
)
