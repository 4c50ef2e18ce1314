"""model/data.py on hand-written sequence tables (tests/sequence_fixtures.py)."""
from __future__ import annotations

import pickle
from collections import Counter

import jax
import numpy as np
import pytest

from model.batch import RetrievalBatch
from model.data import (
    RetrievalBatchSource, SequenceTables, eval_arrays, left_pad_lists, make_loader,
    negative_sampler, restore_iterator_state, save_iterator_state, serving_histories,
)
from tests.sequence_fixtures import (
    customer_row, example_row, item_row, tiny_sequences, tiny_step, write_sequences,
)

H = 4  # shorter than the fixture's longest history (5 steps) to exercise truncation


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_sequences(tmp_path_factory.mktemp("wh"))


@pytest.fixture(scope="module")
def tables(tiny_dir) -> SequenceTables:
    return SequenceTables.load(tiny_dir, history_len=H)


def assert_trees_equal(a, b) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)


def test_left_pad_lists_truncates_keeping_latest():
    import pyarrow as pa

    col = pa.array([[1, 2, 3, 4, 5], [], None, [7]], pa.list_(pa.int32()))
    out, lengths = left_pad_lists(col, 3)
    np.testing.assert_array_equal(out, [[3, 4, 5], [0, 0, 0], [0, 0, 0], [0, 0, 7]])
    np.testing.assert_array_equal(lengths, [3, 0, 0, 1])


def test_load_arrays_left_padded_and_truncated(tables):
    train = tables.split("train")
    assert len(train) == 5
    np.testing.assert_array_equal(train.customer_idx, [1, 1, 2, 3, 4])
    np.testing.assert_array_equal(train.visitorid, [9001, 9001, 9002, 9003, 9004])
    np.testing.assert_array_equal(train.window_start_ts, [100, 130, 210, 350, 400])
    hist = train.history
    assert hist.item.shape == (5, H) and hist.item.dtype == np.int32 and hist.action.dtype == np.int8
    # Customer 3 has 5 history steps: the oldest (item 1) is dropped, most recent last.
    np.testing.assert_array_equal(hist.item, [[0, 0, 0, 0], [0, 1, 2, 1], [0, 0, 0, 4], [2, 3, 4, 5], [0, 0, 0, 0]])
    np.testing.assert_array_equal(hist.category[3], [11, 12, 21, 21])
    np.testing.assert_array_equal(hist.root[1], [0, 1, 1, 1])
    np.testing.assert_array_equal(hist.action[1], [0, 4, 4, 2])
    np.testing.assert_array_equal(hist.length, [0, 3, 1, 4, 0])
    win = train.window
    assert win.item.shape == (5, 3)  # M = the longest window
    np.testing.assert_array_equal(win.item, [[1, 2, 1], [0, 3, 3], [0, 0, 5], [0, 6, 1], [2, 4, 6]])
    np.testing.assert_array_equal(win.action[1], [0, 4, 1])
    np.testing.assert_array_equal(win.length, [3, 2, 1, 2, 3])
    np.testing.assert_array_equal(train.candidate_item, [[0, 1, 2], [0, 0, 3], [0, 0, 5], [0, 6, 1], [2, 4, 6]])
    np.testing.assert_array_equal(train.candidate_label, [[0, 6, 4], [0, 0, 5], [0, 0, 4], [0, 4, 4], [4, 2, 1]])
    np.testing.assert_array_equal(train.candidate_category[4], [11, 21, 22])


def test_load_lookups(tables):
    np.testing.assert_array_equal(tables.item_ids, [0, 101, 102, 103, 104, 105, 106, 107])
    np.testing.assert_array_equal(tables.item_category, [0, 11, 11, 12, 21, 21, 22, 22])
    np.testing.assert_array_equal(tables.item_root, [0, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(tables.item_popularity, [0, 50, 40, 30, 20, 10, 5, 0])
    np.testing.assert_array_equal(tables.customer_visitorid, [0, 9001, 9002, 9003, 9004, 9005])
    assert tables.num_items == 7
    np.testing.assert_array_equal(tables.item_idx_of(np.array([105, 0, 999, 101])), [5, 0, 0, 1])
    assert tables.meta["train_end_ts"] == 1000


def test_load_reads_many_files_in_order_and_pickles_as_spec(tmp_path):
    rows = [example_row(c, 9000 + c, [tiny_step(1, 4, c)], [tiny_step(2, 4, c + 1)]) for c in range(1, 8)]
    seq = write_sequences(tmp_path, items=[item_row(i, 100 + i, 11, 1, 5) for i in (1, 2)],
                          customers=[customer_row(c, 9000 + c) for c in range(1, 8)],
                          splits={"train": rows}, rows_per_file=2)
    assert len(list((seq / "train").glob("*.parquet"))) == 4
    tables = SequenceTables.load(seq, splits=("train",), history_len=2)
    np.testing.assert_array_equal(tables.split("train").customer_idx, np.arange(1, 8))
    clone = pickle.loads(pickle.dumps(tables))  # reloads from parquet
    np.testing.assert_array_equal(clone.split("train").history.item, tables.split("train").history.item)
    assert len(pickle.dumps(tables)) < 1_000


def test_retrieval_batch_targets_are_window_steps_only(tables):
    source = RetrievalBatchSource(tables, "train", 5, seed=0)
    batch = source[0]
    assert isinstance(batch, RetrievalBatch)
    order = np.argsort(source.rows(0))
    hist = batch.history.item_id[order]
    tgt = batch.target.item_id[order]
    # L = H + M - 1 = 6; S = history ++ window (padding dropped), input S[:-1], target S[1:].
    np.testing.assert_array_equal(hist, [
        [0, 0, 0, 0, 101, 102],  # no history: S = 1 2 1
        [0, 0, 101, 102, 101, 103],  # S = 1 2 1 | 3 3
        [0, 0, 0, 0, 0, 104],  # S = 4 | 5
        [0, 102, 103, 104, 105, 106],  # S = 2 3 4 5 | 6 1 (history truncated to 4)
        [0, 0, 0, 0, 102, 104],  # S = 2 4 6
    ])
    np.testing.assert_array_equal(tgt, [
        [0, 0, 0, 0, 102, 101],
        [0, 0, 0, 0, 103, 103],  # history targets (2, 1) are zeroed
        [0, 0, 0, 0, 0, 105],
        [0, 0, 0, 0, 106, 101],
        [0, 0, 0, 0, 104, 106],
    ])
    np.testing.assert_array_equal(batch.target.category_id[order][3], [0, 0, 0, 0, 22, 11])
    np.testing.assert_array_equal(batch.target.root_id[order][1], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(batch.history.action[order][1], [0, 0, 4, 4, 2, 4])
    np.testing.assert_array_equal(batch.history.category_id[order][2], [0, 0, 0, 0, 0, 21])
    np.testing.assert_array_equal(batch.history.customer_id[order], [9001, 9001, 9002, 9003, 9004])
    for leaf in jax.tree.leaves(batch):
        assert leaf.dtype == np.int32 and leaf.shape[0] == 5


def test_retrieval_each_window_step_trained_once_per_epoch(tables):
    source = RetrievalBatchSource(tables, "train", 1, seed=3, num_epochs=1)
    assert len(source) == 5
    targets = Counter()
    for step in range(len(source)):
        t = source[step].target.item_id
        targets.update(t[t > 0].tolist())
    # All window steps except the first step of a window with no history before it.
    expected = Counter([102, 101, 103, 103, 105, 106, 101, 104, 106])
    assert targets == expected


def test_batches_deterministic_and_reshuffled_per_epoch(tables):
    a = RetrievalBatchSource(tables, "train", 2, seed=7, num_epochs=3)
    b = RetrievalBatchSource(tables, "train", 2, seed=7, num_epochs=3)
    assert a.batches_per_epoch == 2 and len(a) == 6  # 5 rows: last partial batch dropped
    for step in range(len(a)):
        assert_trees_equal(a[step], b[step])
    expected = np.random.default_rng([7, 1]).permutation(5)
    np.testing.assert_array_equal(np.concatenate([a.rows(2), a.rows(3)]), expected[:4])
    epochs = [tuple(np.concatenate([a.rows(2 * e), a.rows(2 * e + 1)])) for e in range(3)]
    assert all(len(set(e)) == 4 for e in epochs)
    assert len(set(epochs)) > 1  # reshuffled
    other_seed = RetrievalBatchSource(tables, "train", 2, seed=8)
    np.testing.assert_array_equal(np.concatenate([other_seed.rows(0), other_seed.rows(1)]),
                                  np.random.default_rng([8, 0]).permutation(5)[:4])
    with pytest.raises(IndexError):
        a[6]


def test_negative_sampler(tables):
    sampler = negative_sampler(tables, num_negatives=50, seed=0)
    items, logq = sampler(3)
    again, logq_again = sampler(3)
    np.testing.assert_array_equal(items.item_id, again.item_id)
    assert not np.array_equal(items.item_id, sampler(4)[0].item_id)
    assert items.item_id.shape == (50,) and (items.item_id > 0).all()
    idx = tables.item_idx_of(items.item_id)
    np.testing.assert_array_equal(items.category_id, tables.item_category[idx])
    weights = np.array([0, 50, 40, 30, 20, 10, 5, 1], float) ** 0.75  # 0 train events count as 1
    expected = np.log(weights[1:] / weights.sum())
    np.testing.assert_allclose(sampler.item_logq[1:], expected, rtol=1e-6)
    np.testing.assert_allclose(logq, sampler.item_logq[idx])
    np.testing.assert_allclose(sampler.logq_of(np.array([[101, 0], [107, 555]])),
                               [[expected[0], 0.0], [expected[6], 0.0]], rtol=1e-6)


def test_eval_arrays(tables):
    ev = eval_arrays(tables, "train")
    np.testing.assert_array_equal(ev.next_item_idx, [1, 3, 5, 6, 2])
    np.testing.assert_array_equal(ev.history.item_id[3], [102, 103, 104, 105])
    np.testing.assert_array_equal(ev.candidates.item_id[0], [0, 101, 102])
    np.testing.assert_array_equal(ev.labels[0], [0, 6, 4])
    test = eval_arrays(tables, "test")
    np.testing.assert_array_equal(test.next_item_idx, [2])


def test_serving_histories_chunks_all_customers(tables):
    chunks = list(serving_histories(tables, chunk_rows=2))
    assert [len(c.customer_idx) for c in chunks] == [2, 2, 1]
    customer = np.concatenate([c.customer_idx for c in chunks])
    items = np.concatenate([c.history.item_id for c in chunks])
    np.testing.assert_array_equal(customer, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(items, [[103, 103, 102, 107], [0, 104, 105, 101], [104, 105, 106, 101],
                                          [0, 102, 104, 106], [0, 0, 0, 0]])
    np.testing.assert_array_equal(chunks[2].history.customer_id, [9005])
    np.testing.assert_array_equal(chunks[0].history_item_idx[0], [3, 3, 2, 7])


def test_loader_resume_from_saved_state(tables, tmp_path):
    source = RetrievalBatchSource(tables, "train", 2, seed=0, num_epochs=4)
    n = len(source)  # 8 steps
    straight = list(make_loader(source, prefetch=2))
    assert len(straight) == n
    for step in (0, 5):
        assert_trees_equal(straight[step], source[step])
    first = make_loader(source, prefetch=2)
    head = [next(first) for _ in range(n // 2)]
    save_iterator_state(first, tmp_path / "data_iter.json")
    resumed = restore_iterator_state(make_loader(source, prefetch=2), tmp_path / "data_iter.json")
    tail = list(resumed)
    assert len(head) + len(tail) == n
    for a, b in zip(head + tail, straight):
        assert_trees_equal(a, b)
    from_step = list(make_loader(source, start_step=n // 2, prefetch=0))
    for a, b in zip(from_step, straight[n // 2:]):
        assert_trees_equal(a, b)


def test_loader_state_in_orbax_checkpoint(tables, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    source = RetrievalBatchSource(tables, "train", 2, seed=0, num_epochs=3)
    it = make_loader(source)
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
        expected = next(it)
        fresh = make_loader(source)
        manager.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh)))
    assert_trees_equal(next(fresh), expected)


def test_loader_with_worker_process(tables):
    source = RetrievalBatchSource(tables, "train", 2, seed=0, num_epochs=2)
    it = make_loader(source, start_step=1, prefetch=1, worker_count=1)
    try:
        got = list(it)
    finally:
        it.close()
    assert len(got) == len(source) - 1
    for step, batch in enumerate(got, start=1):
        assert_trees_equal(batch, source[step])


def test_synthetic_sequences_follow_the_contract(tmp_path):
    from tests.sequence_fixtures import synthetic_sequences

    tables = SequenceTables.load(synthetic_sequences(tmp_path, num_rows=300, num_items=50, num_customers=20),
                                 splits=("train",), history_len=8, window_len=16)
    train = tables.split("train")
    assert train.history.item.shape == (300, 8) and train.window.item.shape == (300, 16)
    assert (train.window.length >= 1).all() and (train.history.length <= 8).all()
    batch = RetrievalBatchSource(tables, "train", 32)[0]
    assert batch.history.item_id.shape[0] == 32
