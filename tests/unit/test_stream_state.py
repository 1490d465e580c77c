"""SequenceState: the streaming last-N equals ActionLog's definition, whatever the arrival order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data.contracts import ACTIONS
from components.data.dataset import Dataset
from components.features.sequence import ActionLog
from components.stream.state import Outcome, SequenceState

pytestmark = pytest.mark.unit
CLICK = ACTIONS.index("click")


def test_newest_first_and_cap():
    s = SequenceState(max_len=3)
    for i in range(5):
        assert s.add(1, 100 + i, "click", 1_000 + i, i) == Outcome.APPLIED
    assert s.sequence(1) == [(1004, 104, CLICK), (1003, 103, CLICK), (1002, 102, CLICK)]


def test_delayed_event_inserted_at_its_place_and_counted_late():
    s = SequenceState(max_len=5)
    s.add(1, 10, "click", 1_000, 0)
    s.add(1, 30, "repin", 3_000, 0)
    assert s.add(1, 20, "hide", 2_000, 0) == Outcome.LATE
    assert [e[1] for e in s.sequence(1)] == [30, 20, 10]


def test_ties_in_time_broken_by_pin_id_newest_first():
    s = SequenceState()
    s.add(1, 5, "click", 1_000, 0)
    s.add(1, 9, "click", 1_000, 0)
    s.add(1, 7, "click", 1_000, 0)
    assert [e[1] for e in s.sequence(1)] == [9, 7, 5]


def test_too_old_dropped_when_full():
    s = SequenceState(max_len=2)
    s.add(1, 1, "click", 2_000, 0)
    s.add(1, 2, "click", 3_000, 0)
    assert s.add(1, 3, "click", 1_000, 0) == Outcome.TOO_OLD
    assert [e[1] for e in s.sequence(1)] == [2, 1]
    assert s.add(1, 4, "click", 2_500, 0) == Outcome.LATE  # newer than the oldest held: enters, evicts it
    assert [e[1] for e in s.sequence(1)] == [2, 4]


def test_exact_duplicates_ignored_impressions_ignored():
    s = SequenceState()
    assert s.add(1, 1, "click", 1_000, 7) == Outcome.APPLIED
    assert s.add(1, 1, "click", 1_000, 7) == Outcome.DUPLICATE
    assert s.add(1, 1, "click", 1_000, 8) == Outcome.APPLIED  # another request: a distinct action
    assert len(s.sequence(1)) == 2
    assert s.add(1, 2, "impression", 2_000, 7) == Outcome.IGNORED
    assert len(s.sequence(1)) == 2


def test_checkpoint_round_trip():
    s = SequenceState(max_len=3)
    s.add(4, 1, "repin", 1_000, 2)
    assert SequenceState.from_json(s.to_json()) == s


def _shuffled_within(events: pd.DataFrame, max_delay_ms: int, seed: int) -> pd.DataFrame:
    """Arrival order: each event delayed by up to `max_delay_ms`, then sorted by arrival; plus some re-sent events."""
    rng = np.random.default_rng(seed)
    arrival = events["ts"].to_numpy() + rng.integers(0, max_delay_ms, len(events))
    out = events.iloc[np.argsort(arrival, kind="stable")]
    resent = out.sample(frac=0.05, random_state=seed)
    return pd.concat([out, resent]).reset_index(drop=True)


@pytest.mark.parametrize("max_len", [100, 5])
def test_equals_action_log_after_shuffled_replay_with_duplicates(tiny_world, max_len):
    events = Dataset(tiny_world).read("events")
    arrived = _shuffled_within(events, max_delay_ms=3_600_000, seed=3)
    s = SequenceState(max_len=max_len)
    outcomes = [s.add(*row) for row in arrived[["user_id", "pin_id", "action", "ts", "request_id"]].itertuples(False)]
    assert Outcome.LATE in outcomes and Outcome.DUPLICATE in outcomes
    assert (Outcome.TOO_OLD in outcomes) == (max_len == 5)
    users = np.sort(events["user_id"].unique())
    end = int(events["ts"].max()) + 1
    expected = ActionLog(events).sequences_at(users, np.full(len(users), end), max_len=max_len)
    got = s.sequences_at(users, np.full(len(users), end), max_len=max_len)
    for name in ("pin_ids", "actions", "ts", "lengths"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


def test_a_seeded_sequence_holds_the_history_and_finds_its_events_again():
    s = SequenceState(max_len=3)
    s.add(1, 40, "click", 4_000, 9)  # a live event first, then the online sequence it joins (newest first)
    assert s.seed(1, [(3_000, 30, CLICK), (2_000, 20, CLICK), (1_000, 10, CLICK)]) == 3
    assert s.sequence(1) == [(4_000, 40, CLICK), (3_000, 30, CLICK), (2_000, 20, CLICK)]  # the newest 3
    # the online sequence's events delivered again (their request ids unknown to it): duplicates, not new actions
    assert s.add(1, 30, "click", 3_000, 5) == Outcome.DUPLICATE
    assert s.add(1, 10, "click", 1_000, 5) == Outcome.TOO_OLD
    # a different action on the same pin at the same time is an action of its own
    assert s.add(1, 30, "repin", 3_000, 5) == Outcome.LATE  # applied, before the newest held
    assert s.seed(1, [(4_000, 40, CLICK)]) == 0  # already held: not added twice
