"""A tiny warehouse the side-by-side page can show: the tiny trained models' scoring run published,
and an incumbent `shop` whose lists share known items with ours.

`shop`'s list for a customer: our items at ranks 1, 3, 5 (so those are "in both", at shop ranks
1, 2, 3), then the most popular items not in our list. Shared with test_ui_page.py and
test_ui_browser.py; built once per session (the scoring run compiles the serving models).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.trained_fixtures import TinyTrained, _once, copy_warehouse

SHOP = "shop"
SHARED_OUR_RANKS = (1, 3, 5)
TOP_N = 10

SHOP_LISTS = """
INSERT INTO incumbent_lists
WITH ours AS (SELECT customer_id, rank, item_id FROM latest_recommendations),
shared AS (
    SELECT customer_id, row_number() OVER (PARTITION BY customer_id ORDER BY rank) AS rank, item_id
    FROM ours WHERE list_contains($shared, rank)
),
popular AS (SELECT itemid AS item_id, row_number() OVER (ORDER BY n_events DESC, itemid) AS pop FROM items),
others AS (
    SELECT c.customer_id, p.item_id, p.pop FROM (SELECT DISTINCT customer_id FROM ours) AS c, popular AS p
    WHERE p.pop <= 60 AND NOT EXISTS (SELECT 1 FROM ours AS o WHERE o.customer_id = c.customer_id AND o.item_id = p.item_id)
),
filler AS (
    SELECT customer_id, len($shared) + row_number() OVER (PARTITION BY customer_id ORDER BY pop) AS rank, item_id
    FROM others
)
SELECT $name, customer_id, rank, item_id, 1.0 / rank, TIMESTAMP '2026-12-01 08:00:00'
FROM (SELECT * FROM shared UNION ALL SELECT * FROM filler) WHERE rank <= $top_n
"""


@dataclass(frozen=True)
class PublishedWarehouse:
    warehouse_dir: Path
    checkpoint_dir: Path
    run: dict  # score_all_customers summary
    customer_id: int  # the most active customer (the page's default)


def add_shop_incumbent(warehouse_dir: Path, name: str = SHOP, top_n: int = TOP_N) -> None:
    from recs.warehouse import connect, run_sql

    with connect(warehouse_dir) as con:
        run_sql(con, "marts/incumbent_lists")
        con.execute(SHOP_LISTS, {"shared": list(SHARED_OUR_RANKS), "name": name, "top_n": top_n})


def _make(trained: TinyTrained, root: Path) -> PublishedWarehouse:
    from recs.scoring import score_all_customers
    from recs.ui.data import suggested_customers

    warehouse = copy_warehouse(trained.warehouse_dir, root / "warehouse")
    run = score_all_customers(warehouse, trained.checkpoint_dir, top_n=TOP_N, progress=False)
    add_shop_incumbent(warehouse)
    top = suggested_customers(warehouse, SHOP, limit=1)[0]["customer_id"]
    return PublishedWarehouse(warehouse, trained.checkpoint_dir, run, int(top))


@pytest.fixture(scope="session")
def published_warehouse(tiny_trained: TinyTrained, tmp_path_factory: pytest.TempPathFactory) -> PublishedWarehouse:
    """Read-only: copy it (`copy_warehouse`) to write feedback or publish."""
    return _once("published_warehouse", lambda: _make(tiny_trained, tmp_path_factory.mktemp("ui")))
