"""Agreement between two ranked lists of item ids (one customer's list from two systems).

Pure per-list functions; `recs.compare` averages them over customers. A list is a sequence of
distinct item ids, best first (a repeated id counts once, at its first rank).

- `overlap(a, b, k)`: |A@k ∩ B@k| / k, where k is cut to the longer list when both are shorter
  (two identical 5-item lists agree fully at k = 10).
- `jaccard(a, b, k)`: |A@k ∩ B@k| / |A@k ∪ B@k|.
- `rbo(a, b, p)`: extrapolated rank-biased overlap RBO_ext (Webber, Moffat & Zobel 2010, "A
  similarity measure for indefinite rankings", eq. 32), which handles lists of unequal length:
  it assumes the items seen beyond the shorter list's end agree at the rate seen so far. Unlike
  the common packages it neither truncates to the shorter list nor uses p = 1.
- `spearman(a, b)`, `kendall(a, b)`: rank correlations of the items both lists hold (their order
  within each list); None when fewer than 2 are shared. They say nothing about the items only one
  list holds, so report them beside overlap.
"""
from __future__ import annotations

from typing import Sequence

RBO_P = 0.9


def _distinct(items: Sequence, k: int | None = None) -> list:
    """The list without repeats (first occurrence kept), cut to k."""
    out = list(dict.fromkeys(items))
    return out if k is None else out[:k]


def overlap(a: Sequence, b: Sequence, k: int) -> float | None:
    """Share of the top k the two lists have in common (None when both are empty)."""
    a, b = _distinct(a, k), _distinct(b, k)
    depth = min(k, max(len(a), len(b)))
    return len(set(a) & set(b)) / depth if depth else None


def jaccard(a: Sequence, b: Sequence, k: int) -> float | None:
    """|A ∩ B| / |A ∪ B| of the two top-k sets (None when both are empty)."""
    a, b = set(_distinct(a, k)), set(_distinct(b, k))
    union = a | b
    return len(a & b) / len(union) if union else None


def rbo(a: Sequence, b: Sequence, p: float = RBO_P) -> float | None:
    """RBO_ext of two (possibly unequal-length) ranked lists, Webber et al. 2010 eq. 32.

    With S the shorter list (length s), L the longer (length l), X_d the overlap of their top d
    (for d > s: all of S against L's top d):

        RBO_ext = (1-p)/p * ( sum_{d=1..l} X_d/d p^d + sum_{d=s+1..l} X_s (d-s)/(s d) p^d )
                  + ( (X_l - X_s)/l + X_s/s ) p^l

    1 for identical lists, 0 for disjoint ones; None when both are empty, 0 when only one is.
    """
    if not 0 < p < 1:
        raise ValueError(f"rbo needs 0 < p < 1, got {p}")
    a, b = _distinct(a), _distinct(b)
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    s, l = len(short), len(long_)
    if l == 0:
        return None
    if s == 0:
        return 0.0
    seen_short, seen_long = set(), set()
    x = 0  # X_d
    x_s = 0
    total = 0.0
    for d in range(1, l + 1):
        item_l = long_[d - 1]
        if d <= s:
            item_s = short[d - 1]
            x += (item_s in seen_long) + (item_l in seen_short) + (item_s == item_l)
            seen_short.add(item_s)
            seen_long.add(item_l)
            if d == s:
                x_s = x
        else:
            x += item_l in seen_short
        total += x / d * p ** d
        if d > s:
            total += x_s * (d - s) / (s * d) * p ** d
    return (1 - p) / p * total + ((x - x_s) / l + x_s / s) * p ** l


def _shared_positions(a: Sequence, b: Sequence) -> tuple[list[int], list[int]]:
    """Positions in a and in b of the items both lists hold (in a's order)."""
    a, b = _distinct(a), _distinct(b)
    where_b = {item: i for i, item in enumerate(b)}
    pairs = [(i, where_b[item]) for i, item in enumerate(a) if item in where_b]
    return [i for i, _ in pairs], [j for _, j in pairs]


def _ranks(positions: list[int]) -> list[int]:
    order = sorted(range(len(positions)), key=positions.__getitem__)
    out = [0] * len(positions)
    for r, i in enumerate(order):
        out[i] = r
    return out


def spearman(a: Sequence, b: Sequence) -> float | None:
    """Spearman's rho of the shared items' ranks within each list (no ties: 1 - 6 Σd² / n(n²-1))."""
    pa, pb = _shared_positions(a, b)
    n = len(pa)
    if n < 2:
        return None
    ra, rb = _ranks(pa), _ranks(pb)
    d2 = sum((x - y) ** 2 for x, y in zip(ra, rb))
    return 1 - 6 * d2 / (n * (n * n - 1))


def kendall(a: Sequence, b: Sequence) -> float | None:
    """Kendall's tau of the shared items' order (no ties: (concordant - discordant) / pairs)."""
    pa, pb = _shared_positions(a, b)
    n = len(pa)
    if n < 2:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            score += 1 if (pa[i] - pa[j]) * (pb[i] - pb[j]) > 0 else -1
    return score / (n * (n - 1) / 2)


def list_agreement(a: Sequence, b: Sequence, k: int, p: float = RBO_P) -> dict[str, float | None]:
    """Every agreement measure of the two lists' top k."""
    a, b = _distinct(a, k), _distinct(b, k)
    return {"overlap": overlap(a, b, k), "jaccard": jaccard(a, b, k), "rbo": rbo(a, b, p),
            "spearman": spearman(a, b), "kendall": kendall(a, b)}
