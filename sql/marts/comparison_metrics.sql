-- comparison_metrics: one figure comparing systems' lists. Grain: (run_id, incumbent, segment,
-- system, metric, k). Time column: none (run_id names the recommendation run compared).
-- system: ours | incumbent | both (agreement) | popularity (persona probes); segment: all,
-- history-length and root-category segments (recs compare) or persona:<name> (recs personas).
CREATE TABLE IF NOT EXISTS comparison_metrics (
    run_id    VARCHAR NOT NULL,
    incumbent VARCHAR NOT NULL,
    segment   VARCHAR NOT NULL,
    system    VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,
    k         INTEGER,
    value     DOUBLE
)
