"""The SASRec protocol of `homefeed eval seqrec` on hand-made files: split, inputs, negatives, metrics, bad input."""

import numpy as np
import pytest

from components.evaluate.seqrec import (
    SeqrecDataError,
    candidates,
    history_before,
    leave_one_out,
    load_sequences,
    sample_negatives,
    training_data,
)
from components.metrics import hr_ndcg_at_k, sampled_rank

pytestmark = pytest.mark.unit


def _write(tmp_path, lines, name="seq.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture
def three_users(tmp_path):
    # user 7: 10 20 30 40 50 (5 items); user 3: 60 70 (train-only); user 9: 10 60 80 (3 items); user 7's lines are
    # interleaved with the others: the file's order within a user is the time order
    lines = ["7 10", "3 60", "7 20", "9 10", "7 30", "3 70", "9 60", "7 40", "9 80", "7 50"]
    return load_sequences(_write(tmp_path, lines), "sasrec")


def _items(seq, rows):
    return [seq.item_ids[seq.item[r]] for r in rows]


def test_leave_one_out_holds_out_the_last_two_items_and_keeps_short_users_for_training(three_users):
    seq = three_users
    split = leave_one_out(seq)
    assert seq.user_ids[seq.user[split.test]].tolist() == [7, 9]  # user 3 (2 items) is never evaluated
    assert _items(seq, split.test) == [50, 80] and _items(seq, split.val) == [40, 60]
    by_user = {int(seq.user_ids[u]): _items(seq, split.train[seq.user[split.train] == u]) for u in range(3)}
    assert by_user == {3: [60, 70], 7: [10, 20, 30], 9: [10]}


def test_training_examples_predict_each_train_item_from_the_train_items_before_it(three_users):
    seq = three_users
    ex = training_data(seq, leave_one_out(seq)).examples
    ids = seq.item_ids
    got = [
        (int(seq.user_ids[u]), int(ids[p]), [int(ids[i]) for i in s if i >= 0])
        for u, p, s in zip(ex["user_id"], ex["pin_id"], ex["seq_pin_ids"], strict=True)
    ]
    # newest first; no validation or test item is ever a target or an input
    assert got == [(3, 70, [60]), (7, 20, [10]), (7, 30, [20, 10])]
    assert ex["seq_pin_ids"].shape == (3, 20) and ex["declared"].shape == (3, 1)
    np.testing.assert_allclose(np.exp(ex["log_q"]), 1 / 3)  # each positive is one third of all positives


def test_the_test_input_includes_the_validation_item(three_users):
    seq = three_users
    split = leave_one_out(seq)
    val_in, test_in = history_before(seq, split.val), history_before(seq, split.test)
    assert [seq.item_ids[i] for i in val_in[0] if i >= 0] == [30, 20, 10]
    assert [seq.item_ids[i] for i in test_in[0] if i >= 0] == [40, 30, 20, 10]  # 40 is user 7's validation item


def test_inputs_keep_only_the_last_20_items(tmp_path):
    seq = load_sequences(_write(tmp_path, [f"1 {i}" for i in range(1, 31)]), "sasrec")
    test_in = history_before(seq, leave_one_out(seq).test)[0]
    assert (seq.item_ids[test_in] == np.arange(29, 9, -1)).all()


def test_movielens_orders_by_timestamp_then_line_and_takes_the_folder(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    lines = ["1\t5\t3\t300", "1\t6\t1\t100", "1\t7\t5\t200", "1\t8\t4\t200", "2\t5\t2\t50"]
    _write(folder, lines, "u.data")
    seq = load_sequences(folder, "movielens")  # every rating, low ones too, is an interaction
    assert seq.item_ids[seq.item[seq.user == 0]].tolist() == [6, 7, 8, 5]
    assert _items(seq, leave_one_out(seq).test) == [5]


def test_negatives_are_distinct_unseen_items_100_of_them_or_all_that_remain():
    rng = np.random.default_rng(0)
    history = np.array([0, 3, 4, 5, 99, 150])
    for _ in range(50):
        neg = sample_negatives(history, 200, 100, rng)
        assert len(neg) == 100 == len(set(neg.tolist()))
        assert not set(neg.tolist()) & set(history.tolist()) and neg.min() >= 0 and neg.max() < 200
    small = sample_negatives(history[:5], 103, 100, rng)  # only 98 unseen: all of them, none repeated
    assert sorted(small.tolist()) == sorted(set(range(103)) - set(history.tolist()))
    # uniform over the unseen: every unseen item of a 20-item catalogue drawn about equally often
    counts = np.bincount(np.concatenate([sample_negatives(history[:4], 20, 5, rng) for _ in range(4000)]), minlength=20)
    assert counts[history[:4]].sum() == 0
    unseen = np.delete(counts, history[:4])
    assert unseen.min() > 0.85 * unseen.mean() and unseen.max() < 1.15 * unseen.mean()


def test_candidates_exclude_the_whole_history_and_pad_a_short_catalogue(tmp_path):
    lines = [f"1 {i}" for i in range(1, 6)] + [f"2 {i}" for i in range(6, 200)]
    seq = load_sequences(_write(tmp_path, lines), "sasrec")
    split = leave_one_out(seq)
    cand = candidates(seq, split.val, np.random.default_rng(0))
    assert cand.shape == (2, 101)
    assert seq.item_ids[cand[0, 0]] == 4 and seq.item_ids[cand[1, 0]] == 198
    u1 = cand[0, 1:]  # 199 items, user 1 saw 5 of them (the test item 5 included): 100 negatives
    assert len(set(u1.tolist())) == 100 and not set(seq.item_ids[u1].tolist()) & {1, 2, 3, 4, 5}
    u2 = cand[1, 1:]  # user 2 saw 194: only 5 unseen items, the rest of the row is padding
    assert sorted(seq.item_ids[u2[u2 >= 0]].tolist()) == [1, 2, 3, 4, 5] and (u2 == -1).sum() == 95


def test_hr_and_ndcg_at_10_on_hand_computed_ranks():
    got = hr_ndcg_at_k(np.array([0, 1, 9, 10, 57]), k=10)
    assert got["HR@10"] == pytest.approx(3 / 5)
    assert got["NDCG@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)


def test_sampled_rank_counts_higher_negatives_breaks_ties_at_random_and_ignores_padding():
    rng = np.random.default_rng(0)
    pos = np.array([0.5, 0.5, 3.0])
    neg = np.array([[0.9, 0.1, 0.2, np.nan], [0.9, 0.5, 0.5, 0.1], [3.0, 3.0, 3.0, 3.0]])
    ranks = np.stack([sampled_rank(pos, neg, rng) for _ in range(3000)])
    assert (ranks[:, 0] == 1).all()  # one higher, NaN (padding) never counts
    assert set(ranks[:, 1].tolist()) == {1, 2, 3}  # one higher and two ties: anywhere from 1 to 3
    assert ranks[:, 2].mean() == pytest.approx(2.0, abs=0.1)  # four ties: uniform over 0..4


@pytest.mark.parametrize(
    ("lines", "fmt", "message"),
    [
        (["1 2", "1 3 4"], "sasrec", ":2: expected 2 fields (user item), got 3"),
        (["1 2", "1 x"], "sasrec", ":2: not integers"),
        (["1\t2\t5\t100"], "sasrec", ":1: expected 2 fields"),  # u.data read as a sequence file
        (["1 2"], "movielens", ":1: expected 4 fields (user item rating timestamp), got 2"),
        (["1 2", "1 3", "2 4", "2 5"], "sasrec", "no user has 3 or more items: nothing to evaluate"),
        ([], "sasrec", "holds no user item lines"),
    ],
)
def test_a_bad_file_is_a_clear_error(tmp_path, lines, fmt, message):
    with pytest.raises(SeqrecDataError) as err:
        leave_one_out(load_sequences(_write(tmp_path, lines), fmt))
    assert message in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a file of user item rating timestamp lines"):
        load_sequences(tmp_path, "movielens")  # a folder without u.data
