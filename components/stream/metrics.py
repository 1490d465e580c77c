"""Job health: counters, consumer lag, push latency and freshness, as Prometheus metrics and a JSON summary.

The counters are plain integers owned by `StreamMetrics` (they go into the checkpoint, so a restarted job continues
counting where the crashed one's last checkpoint left off). The processor adds to them once per chunk (`add`), not
once per event. Prometheus reads them at scrape time through a collector of its own registry (one registry per
`StreamMetrics`, so several processors in one process do not collide): nothing is mirrored per event or per chunk.

Why a collector rather than prometheus_client's Counter/Gauge/Histogram objects: those store their values through a
process-wide value class, and importing `feast.metrics` (Feast does on `materialize`) sets PROMETHEUS_MULTIPROC_DIR
in the process, which switches every metric created afterwards to files keyed by metric name, shared by every
registry of the process: a second processor in the same process would then report the first one's counts too.
(Per-event `Counter.inc` also took a lock per call: a tenth of the processor's time.)

Freshness is the processor's own contribution to an event's way to the model: from the moment the processor read
the event from its source (the wall time its chunk was read) to the moment the Feast write that carried the event's
user returned, so that an online read from then on sees it. What happened before the event reached the processor
(producer to broker, time in a Kafka topic, or in the `EventQueue` before `read` took it) is not included. It is
kept for the events that changed a sequence (applied or late: impressions, duplicates and too-old events never
become visible), weighted by their count, in the JSON summary as `freshness_ms` {p50, p99, n} and as the Prometheus
histogram `homefeed_stream_freshness_seconds`.

`serve` exposes the registry over HTTP at /metrics for a Prometheus scrape. A replica of the sharded processor
(components/stream/shards.py) runs one processor per shard it owns; `serve_shards` exposes them together, every
series labelled with its `shard`, plus `homefeed_stream_shards_owned`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

COUNTERS = (
    "events_in",
    "invalid",
    "ignored",
    "applied",
    "late",
    "too_old",
    "duplicates",
    "seeded",
    "pushes",
    "users_pushed",
)  # seeded: entries taken from the online store at a user's first push (processor.py)
# seconds; the stream's freshness target is sub-second, a slow store or a large batch shows in the upper buckets
FRESHNESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)  # Prometheus' default

try:  # kserve depends on it, so it is normally there; the JSON summary works without it
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
except ImportError:  # pragma: no cover
    CollectorRegistry = None


class _WeightedHistogram:
    """Histogram buckets fed (value, count) pairs: one freshness per chunk stands for every event it carried
    (prometheus_client's `Histogram.observe` takes one observation per call)."""

    def __init__(self, buckets: tuple[float, ...]):
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self.sum = 0.0
        self.lock = threading.Lock()  # a scrape reads from the server's thread

    def observe(self, values, weights) -> None:
        values, weights = np.asarray(values, np.float64), np.asarray(weights, np.int64)
        with self.lock:  # le semantics: a value equal to a bound falls in that bound's bucket
            np.add.at(self.counts, np.searchsorted(self.bounds, values, side="left"), weights)
            self.sum += float(np.dot(values, weights))

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """The cumulative buckets (Prometheus' form, +Inf last) and the sum."""
        with self.lock:
            cumulative, total = np.cumsum(self.counts), self.sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", int(cumulative[-1])))
        return buckets, total


class _Collector:
    """The Prometheus view of some `StreamMetrics`, built at scrape time: `source()` -> {label: metrics}: one
    processor's under the label "" (no label), or, `sharded`, a replica's shards' under their shard numbers."""

    def __init__(self, source, sharded: bool = False):
        self.source, self.sharded = source, sharded

    def describe(self):
        return []  # names are only known at collect; the registry then calls collect at scrape time only

    def collect(self):
        found = dict(self.source())
        labels = ["shard"] if self.sharded else []

        def values(key: str) -> list[str]:
            return [key] if labels else []

        for name in COUNTERS:
            family = CounterMetricFamily(
                f"homefeed_stream_{name}", f"stream processor: {name.replace('_', ' ')}", labels=labels
            )
            for key, m in found.items():
                family.add_metric(values(key), dict(m.counts)[name])
            yield family
        gauges = {
            "homefeed_stream_lag_events": ("events read but not yet pushed", lambda m: m.unpushed),
            "homefeed_stream_lag_event_time_ms": (
                "newest event time read minus newest pushed",
                lambda m: m.newest_read_ts - m.newest_pushed_ts,
            ),
        }
        for name, (documentation, value) in gauges.items():
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for key, m in found.items():
                family.add_metric(values(key), value(m))
            yield family
        histograms = {
            "homefeed_stream_push_seconds": ("push latency (this process)", "_push_hist"),
            "homefeed_stream_freshness_seconds": (
                "event read by the processor -> its user's Feast push returned, per applied event (this process)",
                "_fresh_hist",
            ),
        }
        for name, (documentation, attribute) in histograms.items():
            family = HistogramMetricFamily(name, documentation, labels=labels)
            for key, m in found.items():
                buckets, total = getattr(m, attribute).snapshot()
                family.add_metric(values(key), buckets, total)
            yield family
        if self.sharded:
            yield GaugeMetricFamily("homefeed_stream_shards_owned", "shards this replica processes", value=len(found))


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value v with at least q% of the total weight at or below v (numpy's 'inverted_cdf' method)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    at = int(np.searchsorted(cum, q / 100 * cum[-1], side="left"))
    return float(values[order][min(at, len(values) - 1)])


@dataclass
class StreamMetrics:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    push_latencies: list[float] = field(default_factory=list)  # seconds, this process only
    freshness: list[float] = field(default_factory=list)  # seconds per (chunk, push), this process only
    freshness_weights: list[int] = field(default_factory=list)  # events each freshness stands for
    newest_read_ts: int = 0
    newest_pushed_ts: int = 0
    unpushed: int = 0

    def __post_init__(self) -> None:
        self._push_hist = _WeightedHistogram(PUSH_BUCKETS)
        self._fresh_hist = _WeightedHistogram(FRESHNESS_BUCKETS)
        self.registry = None
        if CollectorRegistry is not None:
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(_Collector(lambda: {"": self}))
        self._server = None

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def add(self, counts: dict[str, int]) -> None:
        """Add a chunk's totals."""
        for name, n in counts.items():
            self.counts[name] += n

    def read(self, n: int, newest_ts: int) -> None:
        self.inc("events_in", n)
        self.unpushed += n
        self.newest_read_ts = max(self.newest_read_ts, newest_ts)

    def pushed(self, n_users: int, seconds: float) -> None:
        self.inc("pushes")
        self.inc("users_pushed", n_users)
        self.push_latencies.append(seconds)
        self.unpushed = 0
        self.newest_pushed_ts = self.newest_read_ts
        self._push_hist.observe([seconds], [1])

    def fresh(self, seconds: list[float], weights: list[int]) -> None:
        """One push's freshness: `seconds[i]` for `weights[i]` events (one entry per chunk the push carried)."""
        self.freshness.extend(seconds)
        self.freshness_weights.extend(weights)
        if seconds:
            self._fresh_hist.observe(seconds, weights)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve the registry at http://HOST:PORT/metrics from a daemon thread; returns the port (0 picks a free
        one). Stopped by `stop_serving` or with the process."""
        if self.registry is None:  # pragma: no cover
            raise RuntimeError("prometheus_client is not installed: no /metrics endpoint")
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_address[1]

    def stop_serving(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def summary(self) -> dict:
        """The JSON summary: counters, lag, push latency and freshness percentiles (milliseconds; null before any
        push). Freshness percentiles are weighted by the number of events each measurement stands for."""
        lat = np.asarray(self.push_latencies) * 1000

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 3) if len(lat) else None

        fresh, weights = np.asarray(self.freshness) * 1000, np.asarray(self.freshness_weights, dtype=np.int64)

        def fresh_pct(q: float) -> float | None:
            return round(weighted_percentile(fresh, weights, q), 3) if len(fresh) else None

        return {
            "counters": dict(self.counts),
            "lag": {"events": self.unpushed, "event_time_ms": self.newest_read_ts - self.newest_pushed_ts},
            "push_latency_ms": {"p50": pct(50), "p99": pct(99), "n": len(lat)},
            "freshness_ms": {"p50": fresh_pct(50), "p99": fresh_pct(99), "n": int(weights.sum())},
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def to_json(self) -> dict:
        return {"counts": self.counts, "newest_read_ts": self.newest_read_ts, "newest_pushed_ts": self.newest_pushed_ts}

    def restore(self, data: dict) -> None:
        """Continue from a checkpoint; the Prometheus counters start at the restored values."""
        for name, value in data["counts"].items():
            self.counts[name] = int(value)
        self.newest_read_ts = self.newest_pushed_ts = int(data["newest_pushed_ts"])


def serve_shards(source, port: int, host: str = "127.0.0.1") -> int:
    """Serve the metrics of the processors `source()` returns ({shard: StreamMetrics}, asked at every scrape) at
    http://HOST:PORT/metrics from a daemon thread, each series labelled with its shard; returns the port."""
    if CollectorRegistry is None:  # pragma: no cover
        raise RuntimeError("prometheus_client is not installed: no /metrics endpoint")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(lambda: {str(shard): m for shard, m in source().items()}, sharded=True))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]
