"""Job health: counters, consumer lag and push latency, as Prometheus metrics and a JSON summary.

The counters are plain integers owned by `StreamMetrics` (they go into the checkpoint, so a restarted job continues
counting where the crashed one's last checkpoint left off); the Prometheus registry, when prometheus_client is
installed, mirrors them in a registry of its own so several processors in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

COUNTERS = ("events_in", "invalid", "ignored", "applied", "late", "too_old", "duplicates", "pushes", "users_pushed")

try:  # kserve depends on it, so it is normally there; the JSON summary works without it
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError:  # pragma: no cover
    CollectorRegistry = None


class _Prometheus:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counters = {
            name: Counter(
                f"homefeed_stream_{name}", f"stream processor: {name.replace('_', ' ')}", registry=self.registry
            )
            for name in COUNTERS
        }
        self.lag_events = Gauge("homefeed_stream_lag_events", "events read but not yet pushed", registry=self.registry)
        self.lag_event_ms = Gauge(
            "homefeed_stream_lag_event_time_ms", "newest event time read minus newest pushed", registry=self.registry
        )
        self.push_seconds = Histogram("homefeed_stream_push_seconds", "push latency", registry=self.registry)


@dataclass
class StreamMetrics:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    push_latencies: list[float] = field(default_factory=list)  # seconds, this process only
    newest_read_ts: int = 0
    newest_pushed_ts: int = 0
    unpushed: int = 0

    def __post_init__(self) -> None:
        self.prometheus = _Prometheus() if CollectorRegistry is not None else None

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n
        if self.prometheus is not None and n:
            self.prometheus.counters[name].inc(n)

    def read(self, n: int, newest_ts: int) -> None:
        self.inc("events_in", n)
        self.unpushed += n
        self.newest_read_ts = max(self.newest_read_ts, newest_ts)
        self._lag()

    def pushed(self, n_users: int, seconds: float) -> None:
        self.inc("pushes")
        self.inc("users_pushed", n_users)
        self.push_latencies.append(seconds)
        self.unpushed = 0
        self.newest_pushed_ts = self.newest_read_ts
        if self.prometheus is not None:
            self.prometheus.push_seconds.observe(seconds)
        self._lag()

    def _lag(self) -> None:
        if self.prometheus is not None:
            self.prometheus.lag_events.set(self.unpushed)
            self.prometheus.lag_event_ms.set(self.newest_read_ts - self.newest_pushed_ts)

    def summary(self) -> dict:
        """The JSON summary: counters, lag and push latency percentiles (milliseconds; null before any push)."""
        lat = np.asarray(self.push_latencies) * 1000

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 3) if len(lat) else None

        return {
            "counters": dict(self.counts),
            "lag": {"events": self.unpushed, "event_time_ms": self.newest_read_ts - self.newest_pushed_ts},
            "push_latency_ms": {"p50": pct(50), "p99": pct(99), "n": len(lat)},
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def to_json(self) -> dict:
        return {"counts": self.counts, "newest_read_ts": self.newest_read_ts, "newest_pushed_ts": self.newest_pushed_ts}

    def restore(self, data: dict) -> None:
        """Continue from a checkpoint; the Prometheus counters start at the restored values."""
        for name, value in data["counts"].items():
            self.counts[name] = 0
            self.inc(name, int(value))
        self.newest_read_ts = self.newest_pushed_ts = int(data["newest_pushed_ts"])
