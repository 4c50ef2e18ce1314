-- Grain: one row describing the latest sequence build. Time column: train_end_ts / val_end_ts (ms).
-- Published with item_index and customer_index in one transaction.
CREATE OR REPLACE TABLE sequence_meta AS
SELECT
    $train_end_ts::BIGINT AS train_end_ts,
    $val_end_ts::BIGINT AS val_end_ts,
    $min_user_events::INTEGER AS min_user_events,
    $min_item_events::INTEGER AS min_item_events,
    $history_len::INTEGER AS history_len,
    $max_candidates::INTEGER AS max_candidates,
    $train_quantile::DOUBLE AS train_quantile,
    $val_quantile::DOUBLE AS val_quantile,
    $collapse_repeats::BOOLEAN AS collapse_repeats,
    $n_items::BIGINT AS n_items,
    $n_item_ids::BIGINT AS n_item_ids,
    $n_customers::BIGINT AS n_customers,
    $n_in_training::BIGINT AS n_in_training,
    $n_filtered_events::BIGINT AS n_filtered_events,
    $n_train::BIGINT AS n_train,
    $n_val::BIGINT AS n_val,
    $n_test::BIGINT AS n_test,
    $n_serving::BIGINT AS n_serving
