"""Stream metrics: per-chunk counting, weighted freshness, the /metrics endpoint, ticks and the time-based push.

The processor runs here against a stand-in store that records pushes (tests/integration/test_stream.py runs it
against a real Feast store).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from feast import FileSource, PushSource
from prometheus_client import generate_latest

from components.features.store import SEQUENCE_PUSH
from components.stream.metrics import StreamMetrics, weighted_percentile
from components.stream.processor import StreamProcessor
from components.stream.sources import TICK, EventQueue

pytestmark = pytest.mark.unit
T0 = 1_767_226_387_455


class _Store:
    """What the processor needs of a Feast store: the views its push source feeds, `write_to_online_store` (records
    each written frame) and `get_online_features` (an empty store)."""

    def __init__(self) -> None:
        self.pushes: list = []
        source = PushSource(name=SEQUENCE_PUSH, batch_source=FileSource(path="unused.parquet", timestamp_field="ts"))
        self.views = [SimpleNamespace(name="user_action_sequence", stream_source=source)]

    def list_feature_views(self) -> list:
        return self.views

    def write_to_online_store(self, view, df) -> None:
        self.pushes.append(df)

    def get_online_features(self, features, entity_rows):  # an empty online store: nobody has a sequence yet
        users = [row["user_id"] for row in entity_rows]
        empty = {"user_id": users} | {ref.split(":")[1]: [None] * len(users) for ref in features}
        return SimpleNamespace(to_dict=lambda: empty)


def _event(i: int, user: int = 1, action: str = "click") -> dict:
    return {"user_id": user, "pin_id": 100 + i, "action": action, "ts": T0 + i, "request_id": i, "surface": "homefeed"}


def test_weighted_percentile_equals_the_expanded_sample():
    rng = np.random.default_rng(0)
    values, weights = rng.random(50), rng.integers(1, 20, 50)
    expanded = np.repeat(values, weights)
    for q in (0, 1, 50, 90, 99, 100):
        want = np.percentile(expanded, q, method="inverted_cdf")
        assert weighted_percentile(values, weights, q) == pytest.approx(want)


def test_counters_updated_once_per_chunk_not_per_event(monkeypatch):
    proc = StreamProcessor(_Store(), batch=2_000, max_delay_ms=None)
    calls = []
    add = proc.metrics.add
    monkeypatch.setattr(proc.metrics, "add", lambda counts: (calls.append(counts), add(counts)))
    events = [_event(i, user=i % 7, action="impression" if i % 3 else "click") for i in range(2_000)]
    summary = proc.run(enumerate(events))
    assert len(calls) == -(-len(events) // proc.chunk)  # one update per chunk of 512
    assert summary["counters"]["events_in"] == 2_000
    assert summary["counters"]["applied"] == 667 and summary["counters"]["ignored"] == 1_333
    text = generate_latest(proc.metrics.registry).decode()
    assert "homefeed_stream_events_in_total 2000.0" in text
    assert "homefeed_stream_applied_total 667.0" in text
    assert "homefeed_stream_pushes_total 1.0" in text
    assert 'homefeed_stream_push_seconds_bucket{le="+Inf"} 1.0' in text


def test_two_processors_in_one_process_keep_their_own_counts(monkeypatch, tmp_path):
    """Feast's metrics module sets PROMETHEUS_MULTIPROC_DIR in the process, which makes prometheus_client's own
    metric objects share values by name across registries; the stream's collector must not."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = StreamMetrics(), StreamMetrics()
    first.read(5, T0)
    second.read(7, T0)
    assert "homefeed_stream_events_in_total 5.0" in generate_latest(first.registry).decode()
    assert "homefeed_stream_events_in_total 7.0" in generate_latest(second.registry).decode()


def test_freshness_summary_and_histogram_are_weighted_by_applied_events():
    metrics = StreamMetrics()
    metrics.fresh([0.02, 0.3], [3, 1])
    metrics.fresh([2.0], [1])
    summary = metrics.summary()
    assert summary["freshness_ms"] == {"p50": 20.0, "p99": 2000.0, "n": 5}
    text = generate_latest(metrics.registry).decode()
    assert 'homefeed_stream_freshness_seconds_bucket{le="0.025"} 3.0' in text
    assert 'homefeed_stream_freshness_seconds_bucket{le="0.5"} 4.0' in text
    assert 'homefeed_stream_freshness_seconds_bucket{le="+Inf"} 5.0' in text
    assert "homefeed_stream_freshness_seconds_count 5.0" in text
    assert "homefeed_stream_freshness_seconds_sum 2.36" in text
    assert StreamMetrics().summary()["freshness_ms"] == {"p50": None, "p99": None, "n": 0}


def test_processor_summary_has_freshness_for_each_applied_event():
    proc = StreamProcessor(_Store(), batch=100)
    summary = proc.run(
        enumerate([_event(i, user=i % 5, action="click" if i % 2 else "impression") for i in range(500)])
    )
    fresh = summary["freshness_ms"]
    assert fresh["n"] == summary["counters"]["applied"] == 250
    assert 0 < fresh["p50"] <= fresh["p99"] < 10_000


def test_metrics_served_over_http():
    metrics = StreamMetrics()
    metrics.read(42, T0)
    port = metrics.serve(0)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        metrics.stop_serving()
    assert response.status_code == 200
    assert "homefeed_stream_events_in_total 42.0" in response.text
    assert "homefeed_stream_freshness_seconds_count" in response.text


def test_queue_ticks_while_empty_without_advancing_offsets():
    queue = EventQueue()
    queue.put(_event(0))
    got = []

    def consume():
        got.extend(queue.read(tick_ms=10))

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.1)
    queue.put(_event(1))
    queue.close()
    reader.join(5)
    records = [item for item in got if item is not TICK]
    assert [offset for offset, _ in records] == [0, 1]
    assert sum(item is TICK for item in got) >= 3


def test_time_based_push_before_batch_is_full():
    store = _Store()
    proc = StreamProcessor(store, batch=1_000, max_delay_ms=50)
    queue = EventQueue()
    runner = threading.Thread(target=proc.run, args=(queue.read(tick_ms=10),))
    runner.start()
    for i in range(3):
        queue.put(_event(i))
    deadline = time.monotonic() + 5
    while not store.pushes and time.monotonic() < deadline:
        time.sleep(0.01)
    pushed_before_close = len(store.pushes)
    queue.close()
    runner.join(5)
    assert pushed_before_close == 1, "3 events < batch: only the time rule can have pushed them"
    assert store.pushes[0]["seq_len"].tolist() == [3]
    assert proc.metrics.summary()["freshness_ms"]["n"] == 3
    assert proc.metrics.summary()["freshness_ms"]["p99"] >= 50


def test_no_time_based_push_when_disabled():
    store = _Store()
    proc = StreamProcessor(store, batch=1_000, max_delay_ms=None)
    queue = EventQueue()
    runner = threading.Thread(target=proc.run, args=(queue.read(tick_ms=10),))
    runner.start()
    queue.put(_event(0))
    time.sleep(0.2)
    assert not store.pushes
    queue.close()
    runner.join(5)
    assert len(store.pushes) == 1  # the final flush
