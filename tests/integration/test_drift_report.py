"""Engagement drift with real Evidently: on the tiny world, and on constructed windows where the answer is known."""

import json

import pandas as pd
import pytest

from components.data.dataset import Dataset
from monitoring.drift_report import DAY_MS, engagement_drift_report
from monitoring.engagement import engagement_frame

pytestmark = pytest.mark.integration

ENGAGEMENTS = ("repin", "click", "hide")


@pytest.fixture(scope="module")
def world(tiny_world):
    ds = Dataset(tiny_world)
    return ds.read("events"), ds.read("users")


def _direct_rate(events, action, start, stop):
    """The rate written out from the definition: actions on impressions shown in [start, stop) / those impressions."""
    shown = events[(events.action == "impression") & (events.ts >= start) & (events.ts < stop)]
    keys = set(zip(shown.request_id, shown.pin_id, strict=True))
    acted = events[events.action == action]
    return sum(k in keys for k in zip(acted.request_id, acted.pin_id, strict=True)) / len(shown)


def test_engagement_frame_has_one_row_per_impression_with_its_actions(world):
    events, users = world
    frame = engagement_frame(events, users)
    assert len(frame) == (events.action == "impression").sum()
    assert list(frame.columns) == ["request_id", "pin_id", "user_id", "ts", *ENGAGEMENTS, "segment"]
    for action in ENGAGEMENTS:  # every action in the tiny world follows its impression, so none is lost
        assert frame[action].sum() == (events.action == action).sum()
    segment_of = dict(zip(users.user_id, users.segment, strict=True))
    assert frame.segment.tolist() == [segment_of[u] for u in frame.user_id]
    with pytest.raises(ValueError, match=r"events is missing column\(s\) \['request_id'\]"):
        engagement_frame(events.drop(columns="request_id"))


def test_report_on_the_tiny_world(world, tmp_path):
    events, users = world
    result = engagement_drift_report(events, users, tmp_path, reference_days=7, current_days=1)

    assert (tmp_path / "engagement_drift.html").stat().st_size > 10_000
    saved = json.loads((tmp_path / "engagement_drift.json").read_text())
    drift_values = {m["config"]["column"]: m["value"] for m in saved["metrics"] if "ValueDrift" in m["metric_name"]}
    assert set(drift_values) == {*ENGAGEMENTS, "segment"}

    end = int(events.ts.max()) + 1
    windows = {"reference": (end - 8 * DAY_MS, end - DAY_MS), "current": (end - DAY_MS, end)}
    assert {w: (v["start_ms"], v["end_ms"]) for w, v in result["windows"].items()} == windows
    for action in ENGAGEMENTS:
        got = result["actions"][action]
        assert got["drift_score"] == drift_values[action]
        assert got["method"] == "z" and isinstance(got["drift_detected"], bool)
        assert got["reference_rate"] == pytest.approx(_direct_rate(events, action, *windows["reference"]), abs=1e-12)
        assert got["current_rate"] == pytest.approx(_direct_rate(events, action, *windows["current"]), abs=1e-12)
        assert got["relative_change"] == pytest.approx(got["current_rate"] / got["reference_rate"] - 1)
    assert result["segment_mix"]["drift_score"] == drift_values["segment"]
    assert result["actions_without_impression"] == {a: 0 for a in ENGAGEMENTS}


def _stationary(events):
    """Eight identical days: the tiny world's last day, copied to each of the seven days before it.

    Every day has the same impressions and the same actions on them, so every rate is the same in every window.
    """
    end = int(events.ts.max()) + 1
    day = events[events.ts >= end - DAY_MS]
    step = int(events.request_id.max()) + 1
    copies = [day.assign(ts=day.ts - k * DAY_MS, request_id=day.request_id + k * step) for k in range(8)]
    return pd.concat(copies[::-1], ignore_index=True)


def _remove_current_repins(events):
    current = events.ts >= events.ts.max() + 1 - DAY_MS
    return events[~(current & (events.action == "repin"))]


def _hide_every_clicked_current_impression(events):
    current = events[events.ts >= events.ts.max() + 1 - DAY_MS]
    clicked = current[current.action == "click"]
    hides = current[current.action == "hide"]
    hidden = set(zip(hides.request_id, hides.pin_id, strict=True))
    new = clicked[[k not in hidden for k in zip(clicked.request_id, clicked.pin_id, strict=True)]]
    return pd.concat([events, new.assign(action="hide", ts=new.ts + 1)], ignore_index=True)


@pytest.mark.parametrize(
    ("change", "drifted"),
    [(None, None), (_remove_current_repins, "repin"), (_hide_every_clicked_current_impression, "hide")],
    ids=["unchanged", "repins-removed", "hides-added"],
)
def test_drift_is_detected_only_in_the_changed_column(world, tmp_path, change, drifted):
    events = _stationary(world[0])
    if change is not None:
        events = change(events)
    result = engagement_drift_report(events, None, tmp_path)
    for action, got in result["actions"].items():
        if action == drifted:
            assert got["drift_detected"] and got["drift_score"] < 1e-3
            assert got["current_rate"] != got["reference_rate"]
        else:  # identical rates: the z-test's p-value is 1 up to rounding
            assert not got["drift_detected"] and got["drift_score"] > 0.999
            assert got["current_rate"] == pytest.approx(got["reference_rate"], abs=1e-12)
    assert result["drift_detected"] == (drifted is not None)
    assert "segment_mix" not in result


def test_a_window_without_impressions_is_refused(world, tmp_path):
    events, users = world
    with pytest.raises(ValueError, match="the reference window has no impressions"):
        engagement_drift_report(events, users, tmp_path, reference_days=7, current_days=30)
    assert not (tmp_path / "engagement_drift.html").exists()


def test_rates_are_unchanged_by_event_order(world, tmp_path):
    events, users = world
    shuffled = events.sample(frac=1.0, random_state=3)
    a = engagement_drift_report(events, users, tmp_path / "a")["actions"]
    b = engagement_drift_report(shuffled, users, tmp_path / "b")["actions"]
    assert a == b
