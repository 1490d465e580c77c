"""The stream processor against a real Feast store: final online sequences equal ActionLog's, crash or not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from components.data.contracts import DeadLetter
from components.data.dataset import Dataset
from components.features.sequence import ActionLog
from components.features.store import build_feature_store, online_user_features
from components.stream.processor import DEAD_LETTER_SOURCE, StreamProcessor
from components.stream.sources import EventQueue, open_source

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _expected(events: pd.DataFrame, users) -> pd.DataFrame:
    end = int(events["ts"].max()) + 1
    seq = ActionLog(events).sequences_at(np.asarray(users), np.full(len(users), end))
    rows = [seq.row(i) for i in range(len(users))]
    return pd.DataFrame({"pin_ids": [r["pin_ids"] for r in rows], "ts": [r["ts"] for r in rows]})


def _online(store, users) -> pd.DataFrame:
    got = online_user_features(store, list(users))
    return got[["user_id", "seq_pin_ids", "seq_actions", "seq_ts", "seq_len"]]


def _store(world: Path, out: Path, events: pd.DataFrame):
    """A store built at the mid-point of the events; the stream then replays ALL events from the start into an empty
    state, which takes each user's mid-point sequence from the online store at their first push: the events before
    the mid-point are found there (duplicates), the later ones added, and the result is the whole log's sequence."""
    mid = int(events["ts"].quantile(0.5))
    return build_feature_store(world, out, as_of_ts=mid)


def test_stream_ends_at_action_log_sequences(tiny_world, tmp_path):
    events = Dataset(tiny_world).read("events")
    store = _store(tiny_world, tmp_path / "fs", events)
    proc = StreamProcessor(store, tmp_path / "ckpt.json", DeadLetter(tmp_path / "dead"), batch=5_000)
    summary = proc.run(open_source(Dataset(tiny_world).path("events")))
    users = np.sort(events["user_id"].unique())
    got, want = _online(store, users), _expected(events, users)
    assert got["seq_pin_ids"].tolist() == want["pin_ids"].tolist()
    assert got["seq_ts"].tolist() == want["ts"].tolist()
    counters = summary["counters"]
    assert counters["events_in"] == len(events) and counters["invalid"] == 0
    assert counters["ignored"] == int((events["action"] == "impression").sum())
    # the actions before the store's cut-off were in the seeded sequences (or older than their oldest); the later
    # ones were pushed in batches
    acts = events[events["action"] != "impression"]
    assert counters["duplicates"] + counters["too_old"] == int((acts["ts"] < int(events["ts"].quantile(0.5))).sum())
    assert counters["pushes"] >= 2


def test_a_first_start_without_the_replay_keeps_each_users_history(tiny_world, tmp_path):
    """A processor with neither a checkpoint nor the features step's replay (a cluster's first start) on the events
    after the store's cut-off: each user's history comes from the online store, so the sequences end as the whole
    log's, not as the live events alone."""
    events = Dataset(tiny_world).read("events")
    mid = int(events["ts"].quantile(0.5))
    store = build_feature_store(tiny_world, tmp_path / "fs", as_of_ts=mid)
    later = events[events["ts"] >= mid]
    later.to_parquet(tmp_path / "later.parquet")
    proc = StreamProcessor(store, tmp_path / "ckpt.json", batch=2_000)
    summary = proc.run(open_source(tmp_path / "later.parquet"))
    users = np.sort(later.loc[later["action"] != "impression", "user_id"].unique())
    got, want = _online(store, users), _expected(events, users)
    assert got["seq_pin_ids"].tolist() == want["pin_ids"].tolist()
    assert got["seq_ts"].tolist() == want["ts"].tolist()
    assert summary["counters"]["seeded"] > 0 and summary["counters"]["duplicates"] == 0

    # the same events again, from a processor that lost its state: every one is found in the online sequences
    again = StreamProcessor(store, tmp_path / "ckpt-2.json", batch=2_000).run(open_source(tmp_path / "later.parquet"))
    assert again["counters"]["applied"] == 0 and again["counters"]["duplicates"] > 0
    assert _online(store, users)["seq_pin_ids"].tolist() == want["pin_ids"].tolist()


def test_invalid_events_go_to_dead_letter_with_reason(tiny_world, tmp_path):
    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    good = {
        "user_id": 1,
        "pin_id": 2,
        "action": "click",
        "ts": 1_767_226_387_455,
        "request_id": 0,
        "surface": "homefeed",
    }
    bad = [
        {k: v for k, v in good.items() if k != "user_id"},
        {**good, "action": "like"},
        {**good, "ts": 1_767_226_387},
    ]
    source = tmp_path / "events.jsonl"
    lines = [json.dumps(r) for r in [good, *bad]] + ["{not json"]
    source.write_text("\n".join(lines) + "\n")
    proc = StreamProcessor(store, None, DeadLetter(tmp_path / "dead"))
    summary = proc.run_source(source)
    dead = DeadLetter(tmp_path / "dead").read(DEAD_LETTER_SOURCE)
    assert [d["row"] for d in dead] == [1, 2, 3, 4]
    reasons = [" ".join(e["field"] + ": " + e["reason"] for e in d["errors"]) for d in dead]
    assert "user_id: missing value" in reasons[0]
    assert "action: invalid value" in reasons[1]
    assert "looks like epoch seconds" in reasons[2]
    assert "not valid JSON" in reasons[3]
    assert summary["counters"]["invalid"] == 4 and summary["counters"]["applied"] == 1
    online = _online(store, [1])  # the user's history (seeded from the store) with the one valid click in its place
    assert (2, good["ts"]) in zip(online["seq_pin_ids"][0], online["seq_ts"][0], strict=True)


def test_embedded_queue_source(tiny_world, tmp_path):
    events = Dataset(tiny_world).read("events")
    store = _store(tiny_world, tmp_path / "fs", events)
    queue = EventQueue()
    for record in events.to_dict(orient="records"):
        queue.put(record)
    queue.close()
    StreamProcessor(store, batch=10_000).run(queue.read())
    users = np.sort(events["user_id"].unique())[:20]
    assert _online(store, users)["seq_pin_ids"].tolist() == _expected(events, users)["pin_ids"].tolist()


def test_metrics_scraped_over_http_and_freshness_in_summary(tiny_world, tmp_path):
    events = Dataset(tiny_world).read("events")
    store = _store(tiny_world, tmp_path / "fs", events)
    proc = StreamProcessor(store, batch=1_000)
    port = proc.metrics.serve(0)
    try:
        summary = proc.run(open_source(Dataset(tiny_world).path("events")))
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        proc.metrics.stop_serving()
    counters = summary["counters"]
    assert f"homefeed_stream_events_in_total {float(len(events))}" in text
    assert f"homefeed_stream_applied_total {float(counters['applied'])}" in text
    assert f"homefeed_stream_pushes_total {float(counters['pushes'])}" in text
    fresh = summary["freshness_ms"]
    assert fresh["n"] == counters["applied"] > 0  # every event that changed a sequence, pushed once
    assert 0 < fresh["p50"] <= fresh["p99"]
    assert f"homefeed_stream_freshness_seconds_count {float(fresh['n'])}" in text
    assert json.loads(json.dumps(summary)) == summary


def test_time_based_push_reaches_the_online_store_before_the_stream_ends(tiny_world, tmp_path):
    """A few events, far fewer than `batch`, then silence without closing: the time rule pushes them."""
    events = Dataset(tiny_world).read("events")
    store = _store(tiny_world, tmp_path / "fs", events)
    reader = FeatureStore(repo_path=str(tmp_path / "fs"))  # a separate client, as a model server would be
    user = 999_999  # not in the world: nothing online before the push
    new = [{"user_id": user, "pin_id": 10 + i, "action": "repin", "ts": int(events["ts"].max()) + i,
            "request_id": i, "surface": "homefeed"} for i in range(3)]  # fmt: skip
    proc = StreamProcessor(store, batch=1_000, max_delay_ms=200)
    queue = EventQueue()
    runner = threading.Thread(target=proc.run, args=(queue.read(),))
    runner.start()
    try:
        for record in new:
            queue.put(record)
        t_put = time.monotonic()
        deadline = t_put + 10
        while time.monotonic() < deadline and pd.isna(_online(reader, [user])["seq_len"].iloc[0]):
            time.sleep(0.02)
        visible_after = time.monotonic() - t_put
        assert runner.is_alive(), "the stream must still be open"
        assert proc.metrics.counts["pushes"] == 1
    finally:
        queue.close()
        runner.join(30)
    online = _online(reader, [user])
    assert online["seq_pin_ids"].tolist()[0] == [12, 11, 10]
    assert 0.2 <= visible_after < 5, visible_after
    assert proc.metrics.summary()["freshness_ms"]["n"] == 3


@pytest.mark.slow
def test_kill_9_and_restart_ends_in_the_same_online_state(tiny_world, tmp_path):
    events = Dataset(tiny_world).read("events")
    source = Dataset(tiny_world).path("events")
    reference = _store(tiny_world, tmp_path / "ref", events)
    StreamProcessor(reference, batch=500).run(open_source(source))
    crashed = _store(tiny_world, tmp_path / "crash", events)
    ckpt = tmp_path / "ckpt.json"
    cmd = [sys.executable, "-m", "homefeed.cli", "stream", str(source), "--features", str(tmp_path / "crash"),
           "--checkpoint", str(ckpt), "--batch", "500", "--summary", str(tmp_path / "summary.json")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ckpt.exists() and proc.poll() is None, "the job ended or stalled before its first checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed_at = json.loads(ckpt.read_text())["offset"]
    assert 0 < resumed_at < len(events)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(ckpt.read_text())["offset"] == len(events)
    users = np.sort(events["user_id"].unique())
    pd.testing.assert_frame_equal(_online(crashed, users), _online(reference, users))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counters"]["events_in"] == len(events)
