"""A pin action from the page, fed through the real stream processor into the online store the servers read, or
sent to a deployment's actions service (`ServiceSink`), whose stream processor does the same.

The page's repin/hide/click becomes one canonical event (components/data/contracts.py EVENT) and goes through
`StreamProcessor` in-process, resumed from the replay checkpoint the `features` step left in `<features>/stream/`:
the same validation, per-user state and push a production event takes, so the next feed reflects it the way a
served feed would. `run` pushes before it returns, so the following retrieval call already sees the action (a hidden
pin leaves the feed: retrieval drops pins the user hid in their online sequence).

Time: the world is a replayed log that ended at its last event, so the page's "now" is that end plus the wall time
since the page started; new actions are then newer than everything in the sequences, which stay in time order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from components.data.contracts import HOMEFEED_SURFACE, DeadLetter
from components.stream.processor import StreamProcessor
from components.stream.replay import CHECKPOINT, DEAD_LETTER

PAGE_ACTIONS = ("click", "repin", "hide")  # what a person does to a pin; impressions are not theirs to send


class BadAction(ValueError):
    """An action the page does not send (the app answers 400)."""


class ActionsUnavailable(RuntimeError):
    """The actions service could not take the action (the app answers 503: the page may send it again)."""


class PageClock:
    """The page's time and feed numbering. The world is a replayed log that ended at `end_ts`; the page's now is that
    end plus the wall time since start (`clock`, monotonic seconds), strictly after the previous action, and its
    feeds are numbered after the log's largest request id."""

    def __init__(self, end_ts: int, last_request_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.end_ts, self.clock, self.started = end_ts, clock, clock()
        self._last_ts = end_ts
        self._request_ids = iter(range(last_request_id + 1, 2**62))
        # the feed endpoint takes an id on the event loop: it must not wait behind an action's push or post
        self._ids_lock = threading.Lock()

    def next_request_id(self) -> int:
        """A fresh request id for a feed the page shows (the id its actions carry)."""
        with self._ids_lock:
            return next(self._request_ids)

    def now_ms(self) -> int:
        """The page's clock: the world's end plus the wall time since start, strictly after the previous action."""
        return max(self.end_ts + 1 + int((self.clock() - self.started) * 1000), self._last_ts + 1)


class ActionSink(PageClock):
    """Turns page actions into events and streams them into `store`, one push each.

    Args:
        store: the Feast store of the working copy of the feature repository (never the pipeline run's own).
        features_dir: that copy's directory; its `stream/checkpoint.json` must exist (the features step writes it):
            a processor started without it would push sequences holding only the page's actions.
        end_ts: the world's last event ts (UTC epoch ms).
        last_request_id: the event log's largest request id; the page's feeds are numbered after it.
        clock: monotonic seconds (a parameter so that tests can drive it).
    """

    def __init__(self, store, features_dir: Path, end_ts: int, last_request_id: int,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        stream_dir = Path(features_dir) / "stream"
        if not (stream_dir / CHECKPOINT).exists():
            raise FileNotFoundError(
                f"{stream_dir / CHECKPOINT} is missing: the page resumes the features step's stream replay, so the "
                "feature repository must be a `features` step's output"
            )
        self.processor = StreamProcessor(
            store, stream_dir / CHECKPOINT, DeadLetter(stream_dir / DEAD_LETTER), batch=1, max_delay_ms=None
        )
        super().__init__(end_ts, last_request_id, clock)
        self._lock = threading.Lock()  # the processor is not thread-safe and the app serves on a thread pool

    def act(self, user_id: int, pin_id: int, action: str, request_id: int) -> dict:
        """Stream one action; returns the event and what the processor did with it (`applied`, or why not)."""
        if action not in PAGE_ACTIONS:
            raise BadAction(f"action must be one of {', '.join(PAGE_ACTIONS)}, got {action!r}")
        with self._lock:
            ts = self.now_ms()
            event = {"user_id": user_id, "pin_id": pin_id, "action": action, "ts": ts,
                     "request_id": request_id, "surface": HOMEFEED_SURFACE}  # fmt: skip
            before, rejects = dict(self.processor.metrics.counts), len(self.processor.rejects)
            after = self.processor.run(enumerate([event], start=self.processor.offset))["counters"]
            if len(self.processor.rejects) > rejects:  # the caller checked the fields: the contract disagrees
                raise BadAction(f"the event contract rejected {event}: {self.processor.rejects[-1].errors}")
            self._last_ts = ts
        outcome = next((k for k in ("applied", "duplicates", "too_old") if after[k] > before[k]), "ignored")
        return {"event": event, "outcome": outcome}


class ServiceSink(PageClock):
    """Page actions sent to a deployment's actions service (`POST <actions_url>/v1/actions`, serving/actions.py):
    the deployment's own stream processor applies them, as it does a client app's. Each action gets a fresh event
    id."""

    def __init__(self, actions_url: str, end_ts: int, last_request_id: int,
                 clock: Callable[[], float] = time.monotonic, client=None) -> None:  # fmt: skip
        import httpx

        super().__init__(end_ts, last_request_id, clock)
        self.url = actions_url.rstrip("/") + "/v1/actions"
        self.client = client or httpx.Client(timeout=30.0)
        self._lock = threading.Lock()

    def act(self, user_id: int, pin_id: int, action: str, request_id: int) -> dict:
        """Send one action; returns the event and `published` (or `duplicate`: the service had its id already)."""
        import uuid

        import httpx

        if action not in PAGE_ACTIONS:
            raise BadAction(f"action must be one of {', '.join(PAGE_ACTIONS)}, got {action!r}")
        with self._lock:
            ts = self.now_ms()
            self._last_ts = ts
        event = {"event_id": f"page-{uuid.uuid4().hex}", "user_id": user_id, "pin_id": pin_id, "action": action,
                 "ts": ts, "request_id": request_id, "surface": HOMEFEED_SURFACE}  # fmt: skip
        try:
            response = self.client.post(self.url, json=event)
        except httpx.HTTPError as exc:
            raise ActionsUnavailable(f"the actions service at {self.url} did not answer: {exc}") from exc
        if response.status_code == 400:
            raise BadAction(f"the actions service refused {event}: {response.text[:500]}")
        if response.status_code != 202:
            raise ActionsUnavailable(f"the actions service answered HTTP {response.status_code}: {response.text[:300]}")
        outcome = "published" if response.json()["accepted"] else "duplicate"
        return {"event": {k: v for k, v in event.items() if k != "event_id"}, "outcome": outcome}
