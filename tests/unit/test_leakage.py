"""The leakage guard: sequences hold only actions strictly before the time they are asked for.

`assert_before` passes on what `ActionLog` returns, fails on a sequence that leaks (so the check can fail), and is
wired into the example builders. The last test checks real ranking examples independently of the guard: every
element of a returned sequence is traced back to the events and found strictly before its example's request time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data.contracts import ACTIONS
from components.data.dataset import Dataset
from components.features.sequence import (
    PAD_ACTION,
    PAD_PIN,
    SEQUENCE_ACTIONS,
    ActionLog,
    LeakageError,
    Sequences,
    assert_before,
)
from components.train import examples
from components.train.examples import Catalog, ranking_examples, read_events, retrieval_examples

pytestmark = pytest.mark.unit
DAY_MS = 86_400_000


def _events(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "pin_id", "action", "ts"])


@pytest.fixture
def log() -> ActionLog:
    # user 1 acts at 1000, 2000 and exactly 3000; user 2 has two actions tied at 2000 (pin order breaks the tie)
    return ActionLog(
        _events(
            [
                (1, 10, "click", 1_000),
                (1, 11, "repin", 2_000),
                (1, 12, "hide", 3_000),
                (1, 13, "impression", 2_500),
                (2, 21, "click", 2_000),
                (2, 20, "repin", 2_000),
            ]
        )
    )


def _sequences(pin_ids, ts, lengths) -> Sequences:
    pin_ids = np.asarray(pin_ids, dtype=np.int64)
    return Sequences(
        pin_ids=pin_ids,
        actions=np.where(pin_ids == PAD_PIN, PAD_ACTION, 1).astype(np.int8),
        ts=np.asarray(ts, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
    )


def test_guard_passes_on_action_log_output(log):
    users, at = np.array([1, 1, 2, 2, 3]), np.array([3_000, 3_001, 2_000, 2_001, 5_000])
    seq = log.sequences_at(users, at, max_len=4)
    assert seq.lengths.tolist() == [2, 3, 0, 2, 0]  # the action at exactly 3000 is out at t=3000, in at t=3001
    assert_before(seq, at)


def test_guard_fails_when_an_action_at_exactly_t_leaks_in(log):
    at = np.array([2_500, 3_000])
    leaky = log.sequences_at(np.array([1, 1]), at + 1, max_len=4)  # asked one ms late: row 1 holds the 3000 action
    assert leaky.ts[1, 0] == 3_000
    with pytest.raises(LeakageError) as err:
        assert_before(leaky, at)
    msg = str(err.value)
    assert "row 1 element 0" in msg and "pin 12" in msg and "ts 3000" in msg and "time 3000" in msg
    assert "1 of 2 rows leak" in msg
    assert isinstance(err.value, ValueError)


def test_guard_names_the_first_offending_row_of_a_hand_built_sequence():
    seq = _sequences(
        pin_ids=[[5, 4, PAD_PIN], [7, 6, 5], [9, 8, PAD_PIN]],
        ts=[[90, 80, 0], [300, 150, 100], [250, 200, 0]],  # row 1: 150 >= 150 (element 1); row 2: 250, 200 >= 200
        lengths=[2, 3, 2],
    )
    with pytest.raises(LeakageError, match=r"row 1 element 0 \(pin 7, action click, ts 300\).* time 150; 2 of 3"):
        assert_before(seq, np.array([100, 150, 200]))
    assert_before(seq, np.array([100, 301, 251]))  # the same arrays at later times are fine


def test_guard_ignores_padding_but_not_content_beyond_the_length():
    empty = _sequences([[PAD_PIN, PAD_PIN]], [[0, 0]], [0])
    assert_before(empty, np.array([0]))  # padding has ts 0: at t=0 it would "leak" if it were checked
    understated = _sequences([[7, 6]], [[40, 50]], [1])  # length says 1, but element 1 carries a pin
    with pytest.raises(LeakageError, match="row 0 element 1"):
        assert_before(understated, np.array([45]))


def test_guard_rejects_times_that_do_not_match_the_rows(log):
    seq = log.sequences_at(np.array([1, 2]), np.array([3_000, 3_000]))
    with pytest.raises(ValueError, match="one time per row"):
        assert_before(seq, np.array([3_000]))


def test_example_builders_fail_loudly_if_sequences_leak(tiny_world, monkeypatch):
    """A future change that cut sequences a day late must not produce training data silently."""
    ds = Dataset(tiny_world)
    ev, log = read_events(ds)
    cat = Catalog.load(ds)
    start, end = int(ev.ts.min()), int(ev.ts.max()) + 1
    ranking_examples(ev, cat, log, start, end, max_examples=2_000, seed=0)  # the real builders pass
    retrieval_examples(ev, cat, log, start, end)

    honest = ActionLog.sequences_at

    def a_day_late(self, users, at_ts, max_len=100):
        return honest(self, users, np.asarray(at_ts) + DAY_MS, max_len)

    monkeypatch.setattr(ActionLog, "sequences_at", a_day_late)
    with pytest.raises(LeakageError):
        ranking_examples(ev, cat, log, start, end, max_examples=2_000, seed=0)
    with pytest.raises(LeakageError):
        retrieval_examples(ev, cat, log, start, end)
    with pytest.raises(LeakageError):
        users = np.arange(cat.n_users)
        examples.user_features(cat, log, users, np.full(len(users), end - DAY_MS))


def _late_elements(ev: pd.DataFrame, ex: dict[str, np.ndarray]) -> pd.DataFrame:
    """Sequence elements of ranking examples `ex` that no action strictly before the example's time explains.

    Independent of the guard and of ActionLog: each example's time comes from its impression in the events, each
    sequence element is matched back to the user's actions of that pin and action, and the k-th occurrence of one
    (pin, action) in a row needs at least k matching actions strictly before the example's time.
    """
    # the example's time: its impression's ts, found by (request_id, pin_id) (unique among impressions)
    imp = ev.loc[ev.action == "impression", ["request_id", "pin_id", "user_id", "ts"]]
    assert not imp.duplicated(["request_id", "pin_id"]).any()
    keys = pd.DataFrame({"request_id": ex["request_id"], "pin_id": ex["pin_id"]})
    found = keys.merge(imp, on=["request_id", "pin_id"], how="left", validate="one_to_one")
    assert found["ts"].notna().all() and (found["user_id"].to_numpy() == ex["user_id"]).all()
    at = found["ts"].to_numpy(dtype=np.int64)

    # the returned sequence elements, one row each (padding is pin PAD_PIN and action PAD_ACTION, nothing else)
    pins, acts = ex["seq_pin_ids"], ex["seq_actions"]
    filled = pins != PAD_PIN
    assert ((acts == PAD_ACTION) == ~filled).all()
    assert (np.diff(filled.astype(np.int8), axis=1) <= 0).all()  # padding only at the end of a row
    row, col = np.nonzero(filled)
    elements = pd.DataFrame(
        {
            "row": row,
            "user_id": ex["user_id"][row],
            "pin_id": pins[row, col],
            "action": np.asarray(ACTIONS)[acts[row, col]],
            "at": at[row],
        }
    )
    assert set(elements["action"]) <= set(SEQUENCE_ACTIONS)
    elements["k"] = elements.groupby(["row", "pin_id", "action"]).cumcount() + 1
    actions = ev.loc[ev.action.isin(SEQUENCE_ACTIONS), ["user_id", "pin_id", "action", "ts"]]
    pairs = elements.merge(actions, on=["user_id", "pin_id", "action"], how="left")
    assert pairs["ts"].notna().all(), "a sequence element matches no action of its user"
    pairs["before"] = pairs["ts"] < pairs["at"]
    n_before = pairs.groupby(["row", "pin_id", "action", "k"])["before"].sum().reset_index()
    return n_before[n_before["k"] > n_before["before"]]


def test_ranking_examples_hold_only_actions_before_their_request_time(tiny_world, monkeypatch):
    ds = Dataset(tiny_world)
    ev, log = read_events(ds)
    cat, end = Catalog.load(ds), int(ev.ts.max()) + 1
    ex = ranking_examples(ev, cat, log, 0, end, max_examples=None, seed=0)
    n, width = ex["seq_pin_ids"].shape
    assert n == int((ev.action == "impression").sum()) and width == 100
    assert (ex["seq_pin_ids"] != PAD_PIN).sum(axis=1).max() > 20  # long sequences are covered, not only short ones
    late = _late_elements(ev, ex)
    assert late.empty, f"{len(late)} sequence elements have no action strictly before their example's time"

    # the check itself can fail: the same examples cut a day late, with the guard switched off, are caught
    honest = ActionLog.sequences_at
    monkeypatch.setattr(examples, "assert_before", lambda seq, at_ts: None)
    monkeypatch.setattr(
        ActionLog, "sequences_at", lambda self, users, at_ts, max_len=100: honest(self, users, at_ts + DAY_MS, max_len)
    )
    assert not _late_elements(ev, ranking_examples(ev, cat, log, 0, end, max_examples=None, seed=0)).empty


def test_retrieval_examples_see_nothing_of_their_own_request(tiny_world):
    """The user tower runs once per request: a repin on slot 5 is trained with the user as of the request, not
    with the click on slot 2 of the same slate. Checked by counting, independently of ActionLog: each example's
    sequence holds min(20, the user's sequence actions strictly before the request's first impression)."""
    ds = Dataset(tiny_world)
    ev, log = read_events(ds)
    cat, end = Catalog.load(ds), int(ev.ts.max()) + 1
    ex = retrieval_examples(ev, cat, log, 0, end)
    pos = ev[ev.action.isin(examples.POSITIVE_ACTIONS)]
    request_ts = ev[ev.action == "impression"].groupby("request_id")["ts"].min()
    at = request_ts.reindex(pos.request_id).to_numpy(dtype=np.int64)
    acted = ev[ev.action.isin(SEQUENCE_ACTIONS)].sort_values("ts")
    times = {u: g.ts.to_numpy() for u, g in acted.groupby("user_id")}
    expected = np.array(
        [
            np.searchsorted(times.get(u, np.array([], np.int64)), t, side="left")
            for u, t in zip(pos.user_id, at, strict=True)
        ]
    )
    filled = (ex["seq_pin_ids"] != PAD_PIN).sum(axis=1)
    assert (np.minimum(expected, examples.RETRIEVAL_SEQ_LEN) == filled).all()
    # the same count at each action's own time differs: some slates hold more than one engagement
    own = np.array([np.searchsorted(times[u], t, side="left") for u, t in zip(pos.user_id, pos.ts, strict=True)])
    assert (np.minimum(own, examples.RETRIEVAL_SEQ_LEN) != filled).any()
