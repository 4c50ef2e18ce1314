"""Popularity fallback fill: lists topped up to top_n, never with taken or bought items."""
from __future__ import annotations

import numpy as np

from recs.scoring import fill_from_fallback


def test_fill_from_fallback_skips_taken_and_bought_items_in_fallback_order():
    chosen = np.array([[5, 3, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    fallback = np.array([3, 7, 8, 9, 5])
    bought = np.array([[7], [0], [0]])
    filled, from_fallback = fill_from_fallback(chosen, fallback, bought, 4)
    np.testing.assert_array_equal(filled, [[5, 3, 8, 9], [3, 7, 8, 9], [1, 2, 3, 4]])
    np.testing.assert_array_equal(from_fallback, [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])


def test_fill_from_fallback_leaves_slots_empty_when_fallback_runs_out():
    filled, from_fallback = fill_from_fallback(np.array([[2, 0, 0]]), np.array([2, 6]), np.array([[6]]), 3)
    np.testing.assert_array_equal(filled, [[2, 0, 0]])
    assert not from_fallback.any()
