"""Attention mask: exhaustive comparison with a brute-force reference, and padding-free positions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.mask import attention_mask, token_positions


def reference_mask(history_valid: list[bool], candidate_valid: list[bool]) -> np.ndarray:
    """One example's [T, T] mask from the rules, spelled out token by token."""
    roles = ["customer"] + ["history"] * len(history_valid) + ["candidate"] * len(candidate_valid)
    valid = [True] + list(history_valid) + list(candidate_valid)
    size = len(roles)
    out = np.zeros((size, size), dtype=bool)
    for q in range(size):
        for k in range(size):
            if q == k:
                allowed = True  # every token sees itself (a padded row is never empty)
            elif not valid[k]:
                allowed = False  # padding is never a key of another token
            elif roles[q] == "candidate":
                allowed = roles[k] != "candidate"  # customer + history, no other candidate
            else:
                allowed = roles[k] != "candidate" and k < q  # causal over customer + history
            out[q, k] = allowed
    return out


def all_patterns(length: int) -> list[tuple[bool, ...]]:
    return list(itertools.product([False, True], repeat=length))


@pytest.mark.parametrize("hist_len,num_candidates", [(0, 2), (1, 1), (3, 0), (3, 2), (4, 3)])
def test_mask_matches_reference_for_every_padding_pattern(hist_len: int, num_candidates: int) -> None:
    # Every combination of valid/padded history and candidate slots (not only left padding).
    pairs = list(itertools.product(all_patterns(hist_len), all_patterns(num_candidates)))
    history = np.array([h for h, _ in pairs], dtype=bool).reshape(len(pairs), hist_len)
    candidates = np.array([c for _, c in pairs], dtype=bool).reshape(len(pairs), num_candidates)
    mask = np.asarray(attention_mask(history, candidates if num_candidates else None))
    size = 1 + hist_len + num_candidates
    assert mask.shape == (len(pairs), 1, size, size) and mask.dtype == bool
    for row, (h, c) in enumerate(pairs):
        np.testing.assert_array_equal(mask[row, 0], reference_mask(list(h), list(c)), err_msg=f"h={h} c={c}")


def test_every_row_attends_to_something_even_when_all_padded() -> None:
    mask = np.asarray(attention_mask(np.zeros((1, 5), bool), np.zeros((1, 3), bool)))
    assert mask.any(axis=-1).all()
    # A padded candidate still sees the customer and itself, nothing else.
    np.testing.assert_array_equal(mask[0, 0, 6], [True, False, False, False, False, False, True, False, False])


def test_left_padded_example_spelled_out() -> None:
    # customer, history [pad, a, b], candidates [x, pad]
    mask = np.asarray(attention_mask(np.array([[False, True, True]]), np.array([[True, False]])))[0, 0].astype(int)
    expected = np.array([
        # c  p  a  b  x  pad
        [1, 0, 0, 0, 0, 0],  # customer
        [1, 1, 0, 0, 0, 0],  # padded history slot: customer + itself
        [1, 0, 1, 0, 0, 0],  # a: customer, a (not the padding before it)
        [1, 0, 1, 1, 0, 0],  # b: causal
        [1, 0, 1, 1, 1, 0],  # candidate x: customer + history + itself
        [1, 0, 1, 1, 0, 1],  # padded candidate
    ])
    np.testing.assert_array_equal(mask, expected)


def test_positions_anchor_newest_step_and_share_candidate_position() -> None:
    pos = np.asarray(token_positions(4, 3, anchor=10))
    np.testing.assert_array_equal(pos, [0, 7, 8, 9, 10, 11, 11, 11])


def test_extra_left_padding_keeps_every_real_token_position() -> None:
    short = np.asarray(token_positions(5, 2, anchor=8))
    longer = np.asarray(token_positions(9, 2, anchor=8))
    assert short[0] == longer[0] == 0
    np.testing.assert_array_equal(longer[-7:], short[-7:])  # the last 5 history slots + candidates
