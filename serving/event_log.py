"""Impression logging off the request path: what the homefeed predictor served, published to the event bus
(components/stream/bus.py) by a background thread, spooled to local disk while the bus is down, replayed when it
returns.

The request path only builds the events and puts them on an in-memory queue (`log`: no I/O, no lock held across I/O,
a few microseconds per feed). When the queue is full (the bus is slow and the thread behind), the request appends
them to the spool file itself: a local file append, the one bounded cost a feed can pay for logging. The bus is never
called from a request, so its outage cannot fail or slow a feed.

The thread publishes in batches. A batch the bus refuses goes to the spool; while anything is spooled, new batches
are spooled behind it, so events reach the bus in the order they were served. Every `retry_s` the thread seals the
spool file and republishes the sealed files oldest first, deleting each once the bus took all of it. Spool files
left by an earlier process (a container restart) are replayed the same way. A batch is published whole or spooled
whole: after a partial publish it is republished, so the bus may hold an event twice, which the stream processor
ignores as a duplicate (the same record). Nothing is dropped.

Prometheus: homefeed_events_published_total, homefeed_events_spooled_total, homefeed_events_replayed_total,
homefeed_event_spool_events (what waits on disk now) and homefeed_event_bus_up.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import Counter, Gauge

from components.stream.bus import BusUnavailable, EventBus, event_line

PUBLISHED = Counter("homefeed_events_published", "Events the bus took", ["kind"])
SPOOLED = Counter("homefeed_events_spooled", "Events written to the local spool while the bus could not take them")
REPLAYED = Counter("homefeed_events_replayed", "Spooled events the bus took later")
SPOOL_EVENTS = Gauge("homefeed_event_spool_events", "Events waiting in the local spool")
BUS_UP = Gauge("homefeed_event_bus_up", "1 when the last publish to the bus succeeded")

log = logging.getLogger(__name__)


def request_number(rid: str) -> int:
    """The EVENT contract's integer request id for a request id string (x-request-id): a stable 63-bit hash."""
    return int.from_bytes(hashlib.sha256(rid.encode()).digest()[:8], "big") >> 1


def impressions(
    feed: Mapping, rid: str, ts_ms: int, *, surface: str = "homefeed", model_version: str = "", index_version: str = ""
) -> list[dict]:
    """One impression event per pin of a homefeed prediction (serving/homefeed.py `feed`), in served order; the
    prediction's `request_id` when it has one (a feed of a batch request), else the number of `rid`."""
    user, request = int(feed["user_id"]), int(feed.get("request_id", request_number(rid)))
    return [
        {
            "user_id": user,
            "pin_id": int(pin["pin_id"]),
            "action": "impression",
            "ts": ts_ms,
            "request_id": request,
            "surface": surface,
            "event_id": f"{rid}:{request}:{position}",
            "rid": rid,
            "position": position,
            "score": pin.get("score"),
            "mode": feed["mode"],
            "model_version": model_version,
            "index_version": index_version,
        }  # fmt: skip
        for position, pin in enumerate(feed["pins"])
    ]


class EventLog:
    """A background publisher with a disk spool; `log` from any thread, `close` at shutdown."""

    def __init__(self, bus: EventBus, spool_dir: Path | str, *, queue_max: int = 10_000, batch: int = 500,
                 retry_s: float = 1.0, kind: str = "impression") -> None:  # fmt: skip
        self.bus, self.spool_dir, self.batch, self.retry_s, self.kind = bus, Path(spool_dir), batch, retry_s, kind
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[list[dict]] = queue.Queue(queue_max)
        self._spool_lock = threading.Lock()
        sealed = sorted(self.spool_dir.glob("*.jsonl"))
        self._next_file = int(sealed[-1].stem) + 1 if sealed else 0
        self._current: Path | None = None  # the spool file being appended to, sealed before it is replayed
        self._on_disk = sum(_count(p) for p in sealed)  # events in the spool, under _spool_lock
        SPOOL_EVENTS.set(self._on_disk)
        self._bus_up = True
        self._taken = 0  # queue items in the batch the thread holds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a daemon thread dies with the interpreter: what it holds is spooled first

    # ---- the request path

    def log(self, events: list[dict]) -> None:
        if not events:
            return
        try:
            self._queue.put_nowait(events)
        except queue.Full:
            self._spool(events)

    # ---- the background thread

    def _run(self) -> None:
        next_retry = 0.0
        while not (self._stop.is_set() and self._queue.empty()):
            events = self._take(timeout_s=0.05)
            if events:
                if self.spooled:  # behind what waits on disk, to keep the served order
                    self._spool(events)
                else:
                    self._publish(events)
                for _ in range(self._taken):  # published or spooled: `flush` may count them done
                    self._queue.task_done()
            if self.spooled and time.monotonic() >= next_retry and not self._replay():
                next_retry = time.monotonic() + self.retry_s
        self._replay()  # at shutdown, one last try; what the bus still refuses stays on disk for the next start

    def _take(self, timeout_s: float) -> list[dict]:
        """Up to about `batch` queued events, waiting at most `timeout_s` for the first."""
        try:
            events = list(self._queue.get(timeout=timeout_s))
        except queue.Empty:
            return []
        self._taken = 1
        while len(events) < self.batch:
            try:
                events.extend(self._queue.get_nowait())
            except queue.Empty:
                break
            self._taken += 1
        return events

    def _publish(self, events: list[dict]) -> None:
        try:
            self.bus.publish(events)
        except BusUnavailable as exc:
            if self._bus_up:  # the outage is logged once, not per batch
                log.warning("event bus %s unavailable, spooling to %s: %s", self.bus.uri, self.spool_dir, exc)
            self._set_bus_up(False)
            self._spool(events)
            return
        self._set_bus_up(True)
        PUBLISHED.labels(self.kind).inc(len(events))

    def _set_bus_up(self, up: bool) -> None:
        if up and not self._bus_up:
            log.info("event bus %s is back", self.bus.uri)
        self._bus_up = up
        BUS_UP.set(int(up))

    @property
    def spooled(self) -> int:
        """Events waiting in the spool now."""
        return self._on_disk

    def _spool(self, events: Iterable[Mapping]) -> None:
        data = "".join(event_line(e) + "\n" for e in events)
        with self._spool_lock:
            if self._current is None:
                self._current = self.spool_dir / f"{self._next_file:012d}.jsonl"
                self._next_file += 1
            with open(self._current, "a", encoding="utf-8") as fh:
                fh.write(data)
            n = data.count("\n")
            self._on_disk += n
        SPOOLED.inc(n)
        SPOOL_EVENTS.inc(n)

    def _replay(self) -> bool:
        """Republish the spool, oldest file first; True when it is empty afterwards."""
        with self._spool_lock:
            self._current = None  # sealed: later spooling starts a new file
        for path in sorted(self.spool_dir.glob("*.jsonl")):
            events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            try:
                for start in range(0, len(events), self.batch):
                    self.bus.publish(events[start : start + self.batch])
            except BusUnavailable:
                self._set_bus_up(False)
                return False
            path.unlink()
            with self._spool_lock:
                self._on_disk -= len(events)
            self._set_bus_up(True)
            REPLAYED.inc(len(events))
            PUBLISHED.labels(self.kind).inc(len(events))
            SPOOL_EVENTS.dec(len(events))
            log.info("replayed %d spooled events from %s", len(events), path.name)
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and the spool replayed (tests, shutdown); True when both are."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and not self.spooled:  # nothing queued, held or on disk
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish or spool everything queued, then stop the thread (idempotent). Called at the server's shutdown
        (HomefeedPredictor.stop) and, failing that, at the interpreter's exit."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout_s)
        self.bus.close()


def _count(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())
