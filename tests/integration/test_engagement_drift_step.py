"""The pipeline's `monitor` step (monitoring.drift.engagement_drift): the monitoring job on the latest window, with
real Evidently, on the tiny world and on constructed datasets where the answer is known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from components.data.dataset import Dataset, write_table
from monitoring.drift import DRIFT_SUMMARY, engagement_drift
from monitoring.engagement import ENGAGEMENTS, actions_without_impression, engagement_frame
from monitoring.job import DAY_MS, GROUPS, Windows, grouped

pytestmark = pytest.mark.integration


def _with_events(source: Path, out: Path, events: pd.DataFrame) -> Path:
    """A copy of the dataset `source` whose events are `events` (written as they are, in their order)."""
    shutil.copytree(source, out)
    schema = Dataset(source).read_arrow("events").schema
    write_table(Dataset(out).path("events"), pa.Table.from_pandas(events, schema=schema, preserve_index=False))
    return out


def test_engagement_frame_has_one_row_per_impression_with_its_actions(tiny_world):
    ds = Dataset(tiny_world)
    events, users = ds.read("events"), ds.read("users")
    frame = engagement_frame(events, users)
    assert len(frame) == (events.action == "impression").sum()
    assert list(frame.columns) == ["request_id", "pin_id", "user_id", "ts", *ENGAGEMENTS, "segment"]
    for action in ENGAGEMENTS:  # every action in the tiny world follows its impression, so none is lost
        assert frame[action].sum() == (events.action == action).sum()
    assert actions_without_impression(events) == dict.fromkeys(ENGAGEMENTS, 0)
    segment_of = dict(zip(users.user_id, users.segment, strict=True))
    assert frame.segment.tolist() == [segment_of[u] for u in frame.user_id]
    with pytest.raises(ValueError, match=r"events is missing column\(s\) \['request_id'\]"):
        engagement_frame(events.drop(columns="request_id"))


@pytest.fixture(scope="module")
def tiny(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("drift")
    return {"data": tiny_world, "out": out, "summary": engagement_drift(tiny_world, out, 7, 1)}


def test_the_summary_and_the_reports_are_written(tiny):
    s, out = tiny["summary"], tiny["out"]
    assert json.loads((out / DRIFT_SUMMARY).read_text()) == s
    end = int(Dataset(tiny["data"]).read("events", columns=["ts"])["ts"].max()) + 1
    folder = out / Windows.ending(end, 1, 7).label
    assert Path(s["html"]) == folder / "report.html" and Path(s["json"]) == folder / "report.json"
    assert (folder / "report.html").stat().st_size > 10_000 and "repin" in (folder / "report.html").read_text()
    assert json.loads((folder / "report.json").read_text())["metrics"]
    # the job's own summary beside its report: the step's, less the two keys the pipeline's metadata reads
    job = json.loads((folder / "summary.json").read_text())
    assert job == {k: v for k, v in s.items() if k not in ("actions", "drift_detected")}
    assert s["windows"]["reference"]["start_ms"] == end - 8 * DAY_MS and s["windows"]["current"]["end_ms"] == end
    assert s["model"] is None and not any(k.startswith(("top3_", "score_")) for k in s["mean"])


def test_rates_are_the_engagement_frames_and_the_z_test_decides(tiny):
    s = tiny["summary"]
    ds = Dataset(tiny["data"])
    events, users = ds.read("events"), ds.read("users")
    bounds = {name: (w["start_ms"], w["end_ms"]) for name, w in s["windows"].items()}
    frames = {
        name: engagement_frame(events[(events.ts >= start) & (events.ts < stop)], users)
        for name, (start, stop) in bounds.items()
    }
    assert {name: len(f) for name, f in frames.items()} == {n: w["impressions"] for n, w in s["windows"].items()}
    for action in ENGAGEMENTS:
        got = s["actions"][action]
        ref, cur = frames["reference"][action].mean(), frames["current"][action].mean()
        assert got["reference_rate"] == pytest.approx(ref, abs=1e-12)
        assert got["current_rate"] == pytest.approx(cur, abs=1e-12)
        assert got["relative_change"] == pytest.approx(cur / ref - 1)
        assert got["method"] == "z" and got["threshold"] == 0.05 and 0 <= got["drift_score"] <= 1
        assert got["drift_detected"] == (got["drift_score"] < 0.05)
        core = frames["current"].segment == "core"
        assert s["mean"][f"{action}_core"] == pytest.approx(frames["current"].loc[core, action].mean())
        assert s["mean"][f"{action}_noncore"] == pytest.approx(frames["current"].loc[~core, action].mean())
    assert s["drift_detected"] == any(v["drift_detected"] for v in s["actions"].values())
    assert {"interest", "engaged_interest", "engaged_action", "seq_len", "emb_pc1"} <= set(s["drift"])


def test_a_window_without_impressions_is_refused_and_writes_no_report(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="no impressions"):
        engagement_drift(tiny_world, tmp_path / "r", reference_days=7, current_days=30)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*"))


def test_the_result_does_not_depend_on_the_event_order(tiny, tmp_path):
    events = Dataset(tiny["data"]).read("events").sample(frac=1.0, random_state=3)
    shuffled = engagement_drift(_with_events(tiny["data"], tmp_path / "data", events), tmp_path / "r")
    s = tiny["summary"]
    assert shuffled["windows"] == s["windows"] and shuffled["impressions_by_group"] == s["impressions_by_group"]
    assert shuffled["mean"] == pytest.approx(s["mean"]) and shuffled["reference_mean"] == pytest.approx(
        s["reference_mean"]
    )
    assert shuffled["actions"] == s["actions"]  # 0/1 means and their z-tests: exact in any order
    for column, drift in s["drift"].items():
        assert shuffled["drift"][column]["detected"] == drift["detected"], column
        assert shuffled["drift"][column]["score"] == pytest.approx(drift["score"]), column


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
    return pd.concat([events, new.assign(action="hide", ts=new.ts + 1)], ignore_index=True).sort_values(
        ["ts", "request_id"], kind="stable"
    )


@pytest.mark.parametrize(
    ("change", "drifted"),
    [(None, None), (_remove_current_repins, "repin"), (_hide_every_clicked_current_impression, "hide")],
    ids=["unchanged", "repins-removed", "hides-added"],
)
def test_drift_is_detected_only_in_the_changed_rate(tiny_world, tmp_path, change, drifted):
    events = _stationary(Dataset(tiny_world).read("events"))
    if change is not None:
        events = change(events)
    result = engagement_drift(_with_events(tiny_world, tmp_path / "data", events), tmp_path / "r")
    for action, got in result["actions"].items():
        if action == drifted:
            assert got["drift_detected"] and got["drift_score"] < 1e-3
            assert got["current_rate"] != got["reference_rate"]
        else:  # identical rates, overall and in each group: the z-test's p-value is 1 up to rounding
            for group in GROUPS:
                column = grouped(action, group)
                assert result["mean"][column] == pytest.approx(result["reference_mean"][column], abs=1e-12)
                assert not result["drift"][grouped(f"{action}_flag", group)]["detected"], column
            assert not got["drift_detected"] and got["drift_score"] > 0.999
    if drifted == "repin":
        assert result["mean"]["repin"] == result["mean"]["repin_core"] == result["mean"]["repin_noncore"] == 0
    assert result["drift_detected"] == (drifted is not None)
