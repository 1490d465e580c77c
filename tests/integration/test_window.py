"""A retraining's window of the event log (components/data/window.py): its own events, plus the context its
sequences are cut from, and nothing trained on that context."""

from __future__ import annotations

import numpy as np
import pytest

from components.data.dataset import Dataset
from components.data.split import time_split
from components.data.window import window_dataset, window_start
from components.data.world.config import DAY_MS
from components.features.sequence import ActionLog

pytestmark = pytest.mark.integration


def test_a_window_keeps_the_sequences_of_the_whole_log_and_trains_on_its_own_days(tiny_world, tmp_path):
    full = Dataset(tiny_world).read("events")
    manifest = window_dataset(tiny_world, tmp_path / "w", window_days=3)
    windowed = Dataset(tmp_path / "w")
    events = windowed.read("events")
    lo, hi = manifest["window"]["start_ms"], manifest["window"]["end_ms"]
    assert window_start(windowed) == lo and window_start(Dataset(tiny_world)) == 0
    inside = full[(full["ts"] >= lo) & (full["ts"] < hi)]
    assert len(events[events["ts"] >= lo]) == len(inside)  # every event of the window, nothing else after lo
    context = events[events["ts"] < lo]
    assert len(context) == manifest["window"]["context_events"] > 0
    assert set(context["action"]) <= {"click", "repin", "hide"} and context.groupby("user_id").size().max() <= 100
    assert manifest["time_span_ms"][0] >= lo and events["ts"].is_monotonic_increasing
    # the property the context is for: any user's sequence at any time in the window is the whole log's
    users = np.sort(full["user_id"].unique())
    for at in (lo, lo + DAY_MS // 2, hi - 1):
        times = np.full(len(users), at, dtype=np.int64)
        want, got = ActionLog(full).sequences_at(users, times), ActionLog(events).sequences_at(users, times)
        for name in ("pin_ids", "actions", "ts", "lengths"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert (ActionLog(full).sequences_at(users, np.full(len(users), lo)).lengths > 0).any()  # not vacuous
    # the split starts at the window, not at its context
    split = time_split(tmp_path / "w", holdout_days=1, ranking_days=5)
    assert split.ranking_start_ms == lo
