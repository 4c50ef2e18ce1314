"""`recs generate`: the generator of the chosen data format (Retail Rocket or H&M)."""
from __future__ import annotations

from pathlib import Path

GENERATOR_FORMATS = ("retailrocket", "hm")


def generate_data(out: Path, scale: str = "small", seed: int = 0, data_format: str = "retailrocket") -> dict:
    """Write `data_format`'s CSVs into `out`: recs.generate.generate (Retail Rocket: events.csv,
    item properties, category tree) or recs.generate_hm.generate_hm (H&M: transactions_train.csv,
    articles.csv, customers.csv). Returns the generator's summary."""
    if data_format == "hm":
        from recs.generate_hm import generate_hm

        return generate_hm(out, scale=scale, seed=seed)
    if data_format != "retailrocket":
        raise ValueError(f"unknown data format {data_format!r}: choose one of {', '.join(GENERATOR_FORMATS)}")
    from recs.generate import generate

    return generate(out, scale=scale, seed=seed)
