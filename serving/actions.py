"""The actions service: clicks, repins and hides from clients, validated and published to the event bus
(components/stream/bus.py) that the stream processor consumes.

    POST /v1/actions   one event object, or {"events": [...]} (at most 1000)
        event: {"event_id": "c0ffee-1", "user_id": 7, "pin_id": 42, "action": "click",
                "ts": 1700000000000, "request_id": 12, "surface": "homefeed"}
        `event_id` (required, 1-128 characters) is the client's idempotency key; `ts` (epoch ms) defaults to the
        server's clock at receipt, `request_id` (the feed's) to 0, `surface` to "homefeed".
        202 {"accepted": n, "duplicates": d}: n events published, d answered without publishing (their event id
            was seen before: a retry); n + d is the request's event count.
        400 {"error": ..., "rejected": [{"index": i, "errors": [{"field": f, "reason": r}]}]}: nothing published.
        413 body over 1 MiB.  503 (Retry-After) the bus is down: retry with the same ids.
    GET /healthz (liveness), /readyz (the bus answers), /metrics (Prometheus).

Every event is checked against the EVENT contract (components/data/contracts.py), plus what only a client's event
must satisfy: an event id, no field the contract does not know, and an action among click, repin and hide (an
impression is logged by the server that showed the feed, serving/event_log.py). A batch with any invalid event is
refused whole and nothing of it is published, so a client fixes it and resends it as it was, with the same ids; the
invalid events go to the dead letter (`<dir>/actions.jsonl`) with their reasons either way.

Idempotency: the request's valid events are published with `publish_once` (bus.py), which publishes each event
whose id the bus has not seen and remembers the id in the same step. A repeat is answered as accepted and not
published again. When the bus cannot take them the answer is 503 and the client retries with the same ids: an
event whose id the bus remembered was published (the reply was lost), so the retry finds it a duplicate, and any
other is published then; nothing is lost and nothing is published twice. Clients should still send `ts` (a
defaulted one is the time of receipt). On Redis the claims are shared by every replica; on
the file bus they live in this process.

Prometheus: homefeed_actions_accepted_total{action}, homefeed_actions_duplicates_total,
homefeed_actions_rejected_total (invalid events), homefeed_actions_bus_failures_total (requests answered 503) and
homefeed_actions_request_seconds{code}.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, Counter, Histogram, exposition
from starlette.concurrency import run_in_threadpool

from components.data.contracts import EVENT, HOMEFEED_SURFACE, DeadLetter, Reject, validate
from components.stream.bus import BusUnavailable, EventBus
from serving import observe

MAX_EVENTS = 1000
MAX_BODY_BYTES = 1 << 20  # a full batch of ordinary events (uuid ids) is about 150 KB
MAX_EVENT_ID_CHARS = 128
CLIENT_ACTIONS = ("click", "repin", "hide")
DEAD_LETTER_SOURCE = "actions"
RETRY_AFTER_S = 1
MODEL = "actions"  # the `model` of the request log lines, as the predictors' (serving/observe.py)

_FIELDS = {f.name: f for f in EVENT.fields}
_ACCEPTED_FIELDS = ("event_id", *_FIELDS)
_INTEGERS = [f.name for f in EVENT.fields if f.kind == "int"]
_EVENT_ID_EXPECT = f"a non-empty string of at most {MAX_EVENT_ID_CHARS} characters (the client's idempotency key)"
_ACTION_EXPECT = f"one of {', '.join(CLIENT_ACTIONS)}"

ACCEPTED = Counter("homefeed_actions_accepted", "Client events published to the bus", ["action"])
DUPLICATES = Counter("homefeed_actions_duplicates", "Client events not published again: their event id was seen")
REJECTED = Counter("homefeed_actions_rejected", "Invalid client events, refused and written to the dead letter")
BUS_FAILURES = Counter("homefeed_actions_bus_failures", "Requests answered 503: the bus could not take their events")
REQUEST_SECONDS = Histogram(
    "homefeed_actions_request_seconds",
    "Time to answer POST /v1/actions, by HTTP status",
    ["code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BadBody(Exception):
    """The body as a whole cannot be read (not JSON, wrong shape, too large): no event can be judged."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Checked:
    """A request's events after validation: the records to publish (all or none) and the rejects."""

    events: list[dict] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def read_events(body: bytes, max_events: int = MAX_EVENTS) -> list:
    """The events of a body: one event object, or {"events": [...]}. Each item is judged later (`check_events`)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadBody(f"the body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadBody(f'expected an event object or {{"events": [...]}}, got {type(payload).__name__}')
    if "events" not in payload:
        return [payload]
    extra = sorted(set(payload) - {"events"})
    if extra:
        raise BadBody(f"{extra[0]}: unknown field; a batch body holds only `events`")
    events = payload["events"]
    if not isinstance(events, list) or not events:
        raise BadBody("events: expected a non-empty list of event objects")
    if len(events) > max_events:
        raise BadBody(f"events: {len(events)} events, at most {max_events} per request; split the batch")
    return events


def check_events(raw: list, ts_ms: int) -> Checked:
    """Validate client events: the records to publish when every event is valid, else the rejects (index = row).

    A published record is the contract's typed row plus its `event_id`; `ts_ms` is the default time.
    """
    problems: list[list[dict[str, str]]] = []
    rows = []
    for item in raw:
        if isinstance(item, dict):
            problems.append(_client_problems(item))
            rows.append(_row(item, ts_ms))
        else:
            problems.append([{"field": "_event", "reason": f"expected an event object, got {type(item).__name__}"}])
            rows.append({})
    result = validate(pd.DataFrame(rows, columns=EVENT.names()), EVENT)
    for rej in result.rejects:
        if isinstance(raw[rej.row], dict):  # a non-object has its one reason already
            judged = {e["field"] for e in problems[rej.row]}  # ours are the more precise (action, booleans)
            problems[rej.row].extend(e for e in rej.errors if e["field"] not in judged)
    rejects = [Reject(i, errors, _record(raw[i])) for i, errors in enumerate(problems) if errors]
    if rejects:
        return Checked(rejects=rejects)
    typed = result.valid.to_pylist()
    return Checked(events=[{"event_id": item["event_id"], **row} for item, row in zip(raw, typed, strict=True)])


def _client_problems(item: dict) -> list[dict[str, str]]:
    """What a client's event must satisfy beyond the contract."""
    found = [
        {"field": str(name), "reason": f"unknown field; an event has {', '.join(_ACCEPTED_FIELDS)}"}
        for name in item
        if name not in _ACCEPTED_FIELDS
    ]
    event_id = item.get("event_id")
    if event_id is None:
        found.append({"field": "event_id", "reason": f"missing value; expected {_EVENT_ID_EXPECT}"})
    elif not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID_CHARS:
        found.append({"field": "event_id", "reason": f"invalid value; expected {_EVENT_ID_EXPECT}"})
    action = item.get("action")
    if action is None:
        found.append({"field": "action", "reason": f"missing value; expected {_ACTION_EXPECT}"})
    elif action == "impression":
        reason = f"impressions are logged by the server that showed the feed; expected {_ACTION_EXPECT}"
        found.append({"field": "action", "reason": reason})
    elif action not in CLIENT_ACTIONS:
        found.append({"field": "action", "reason": f"invalid value; expected {_ACTION_EXPECT}"})
    # pandas reads True as 1 in a column that also holds numbers, so the contract would take it
    found.extend(
        {"field": name, "reason": f"true/false is not an integer; expected {_FIELDS[name].expect}"}
        for name in _INTEGERS
        if isinstance(item.get(name), bool)
    )
    return found


def _row(item: dict, ts_ms: int) -> dict:
    """The contract's columns of a client event, with the defaults of the optional ones (null = absent)."""
    defaults = {"ts": ts_ms, "request_id": 0, "surface": HOMEFEED_SURFACE}
    row = {name: item.get(name) for name in _FIELDS}
    for name, value in defaults.items():
        if row[name] is None:
            row[name] = value
    return {name: None if isinstance(value, bool) else value for name, value in row.items()}


def _record(item) -> dict:
    return item if isinstance(item, dict) else {"_event": item}


class ActionsService:
    """What a POST does once its body is read: validate, claim the ids, publish (blocking: run in a thread)."""

    def __init__(self, bus: EventBus, dead_letter: DeadLetter | None, clock: Callable[[], int] = now_ms) -> None:
        self.bus, self.dead_letter, self.clock = bus, dead_letter, clock
        self._dead_letter_lock = threading.Lock()  # whole lines: requests run in several threads

    def take(self, raw: list, rid: str) -> JSONResponse:
        checked = check_events(raw, self.clock())
        if checked.rejects:
            return self._refuse(raw, checked.rejects, rid)
        try:
            published = self.bus.publish_once(checked.events)
        except BusUnavailable as exc:
            BUS_FAILURES.inc()
            observe.log.warning("request_id=%s model=%s bus unavailable, %d events refused with 503: %s",
                                rid, MODEL, len(raw), exc)  # fmt: skip
            body = {"error": "the event bus is unavailable: retry the request with the same event ids"}
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        fresh = [e for e, new in zip(checked.events, published, strict=True) if new]
        for e in fresh:
            ACCEPTED.labels(e["action"]).inc()
        duplicates = len(checked.events) - len(fresh)
        DUPLICATES.inc(duplicates)
        return JSONResponse({"accepted": len(fresh), "duplicates": duplicates}, status_code=202)

    def _refuse(self, raw: list, rejects: list[Reject], rid: str) -> JSONResponse:
        REJECTED.inc(len(rejects))
        if self.dead_letter is not None:
            try:
                with self._dead_letter_lock:
                    self.dead_letter.write(DEAD_LETTER_SOURCE, rejects)
            except OSError as exc:  # the client's answer is still its 400; the loss is the operator's to see
                observe.log.error("request_id=%s model=%s dead letter %s not written: %s",
                                  rid, MODEL, self.dead_letter.directory, exc)  # fmt: skip
        body = {
            "error": f"{len(rejects)} of {len(raw)} events are invalid; nothing was published: fix them and send the"
            " request again",
            "rejected": [{"index": r.row, "errors": r.errors} for r in rejects],
        }
        return JSONResponse(body, status_code=400)


def actions_app(bus: EventBus, dead_letter: DeadLetter | None, clock: Callable[[], int] = now_ms) -> FastAPI:
    """The actions service on `bus`; rejects go to `dead_letter` (None: nowhere, for tests). `clock` gives epoch
    milliseconds, the `ts` of events that carry none. The caller owns `bus` and closes it."""
    service = ActionsService(bus, dead_letter, clock)
    app = FastAPI(title="homefeed actions", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/actions")
    async def post_actions(request: Request) -> Response:
        started = time.perf_counter()
        rid = observe.request_id(dict(request.headers))
        try:
            raw = read_events(await _body(request))
            response = await run_in_threadpool(service.take, raw, rid)
        except BadBody as exc:
            raw, response = [], JSONResponse({"error": str(exc)}, status_code=exc.status)
        seconds = time.perf_counter() - started
        REQUEST_SECONDS.labels(str(response.status_code)).observe(seconds)
        observe.log.info("request_id=%s model=%s events=%d status=%d ms=%.1f",
                         rid, MODEL, len(raw), response.status_code, seconds * 1000)  # fmt: skip
        return response

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> Response:  # sync: a PING blocks, so FastAPI runs it in a thread
        reason = bus.unready()
        if reason is None:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
        return Response(content=encoder(REGISTRY), headers={"content-type": content_type})

    return app


async def _body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (by its Content-Length, or while it streams in)."""
    too_large = BadBody(f"the body is over {limit} bytes; send at most {MAX_EVENTS} events per request", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def serve_actions(bus: EventBus, dead_letter_dir: Path, http_port: int, host: str = "127.0.0.1") -> None:
    """Run the actions service on `host` until SIGTERM (uvicorn finishes the requests in flight), then close `bus`
    (components/stream/bus.py `open_bus`). Blocks."""
    import uvicorn

    observe.configure_logging()
    try:
        app = actions_app(bus, DeadLetter(dead_letter_dir))
        uvicorn.run(app, host=host, port=http_port, access_log=False, timeout_graceful_shutdown=10)
    finally:
        bus.close()
