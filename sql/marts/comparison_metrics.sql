-- comparison_metrics: our published run against an incumbent; grain (run_id, incumbent,
-- segment, system, metric, k). Time column: computed_at. system: ours / incumbent, or both for
-- agreement metrics and differences (ours - incumbent, with ci_low / ci_high: a paired bootstrap
-- 95% interval). Segments: all, history:<bucket>, root:<root category> (recs compare) and
-- persona:<name> (recs personas). n_customers: the customers behind the value.
CREATE TABLE IF NOT EXISTS comparison_metrics (
    run_id      VARCHAR NOT NULL,
    incumbent   VARCHAR NOT NULL,
    segment     VARCHAR NOT NULL,
    system      VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    k           INTEGER,
    value       DOUBLE,
    ci_low      DOUBLE,
    ci_high     DOUBLE,
    n_customers BIGINT,
    computed_at TIMESTAMP
)
