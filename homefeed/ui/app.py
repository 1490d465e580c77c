"""The homefeed page's web app (FastAPI): a static page (static/, no build step, nothing from the internet) and the
JSON API it calls.

    GET  /                          the page
    GET  /api/config                the drift dashboard's URL, the latest experiment report (or null), the clock
    GET  /api/users?limit=N         users for the picker: [{"user_id", "segment"}]
    GET  /api/users/{id}            segment, declared interests, realtime sequence newest first (404: unknown user)
    GET  /api/users/{id}/feed?n=N   retrieval's candidates (with source) and ranking's feed (per-head scores)
    POST /api/actions               {"user_id", "pin_id", "action": click|repin|hide, "request_id"}: streamed into
                                    the online store, or sent to the deployment's actions service (400: another
                                    action; 404: unknown user or pin; 503: the actions service cannot take it)
    GET  /report                    the latest experiment report as HTML (404 page when there is none)

Feeds come from the real retrieval and ranking servers over KServe v1, called by the homefeed predictor's own code
(`HomefeedPredictor.retrieve_and_rank`, then `feed`), so the page shows what the homefeed server would answer plus
the candidates it chose from. With a deployment's homefeed URL the feed shown is the homefeed predictor's own answer
(which logs its impressions and names its request id), the candidates still retrieval's. Errors are JSON `{"error": message}`: a client's mistake is a 4xx naming the field, a
model server that cannot answer a 502 naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from kserve.errors import InferenceError, InvalidInput
from pydantic import BaseModel, StrictInt
from starlette.middleware.trustedhost import TrustedHostMiddleware

from homefeed.ui.actions import ActionSink, ActionsUnavailable, BadAction, ServiceSink
from homefeed.ui.report import latest_report, report_page
from homefeed.ui.world import UnknownPin, UnknownUser, World, user_view
from serving.homefeed import DEFAULT_N, HomefeedPredictor, feed

STATIC = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # the names this machine's own browser reaches the page by
MAX_PICKER_USERS = 1000


@dataclass
class UiState:
    """What the app serves from. `servers_read_copy` is False when the model servers were started elsewhere
    (--retrieval-url/--ranking-url): they read their own online store, not the working copy actions go to."""

    world: World
    store: object  # feast.FeatureStore on the working copy of the feature repository
    predictor: HomefeedPredictor
    sink: ActionSink | ServiceSink
    dashboard_url: str
    experiments: Path
    servers_read_copy: bool = True
    homefeed_url: str | None = None  # a deployment's homefeed predictor: the feed shown is its answer


class ActionIn(BaseModel):
    user_id: StrictInt
    pin_id: StrictInt
    action: str  # checked by the sink, so that a wrong one is a 400 naming the choices rather than a 422
    request_id: StrictInt | None = None  # the feed the pin was shown in; a new id when absent


def create_app(state: UiState, allowed_hosts: Sequence[str] = LOCAL_HOSTS) -> FastAPI:
    """The page's app. Requests whose `Host` is not one of `allowed_hosts` are refused (400): a web page elsewhere
    that rebinds its own name to this machine's address (DNS rebinding) would otherwise read users' sequences and
    post actions through the visitor's browser."""
    app = FastAPI(title="homefeed", docs_url=None, redoc_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _error_handlers(app)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    def config() -> dict:
        report = latest_report(state.experiments)
        return {
            "dashboard_url": state.dashboard_url,
            "experiments": str(state.experiments),
            "report": None if report is None else {"url": "/report", "path": str(report)},
            "world_end_ts": state.world.end_ts,
            "now_ts": state.sink.now_ms(),
            "servers_read_copy": state.servers_read_copy,
            "interests": {str(i): name for i, name in state.world.interests.items()},
        }

    @app.get("/api/users")
    def users(limit: int = Query(200, ge=1, le=MAX_PICKER_USERS)) -> list[dict]:
        return state.world.users(limit)

    @app.get("/api/users/{user_id}")
    def user(user_id: int) -> dict:
        return user_view(state.store, state.world, user_id)

    @app.get("/api/users/{user_id}/feed")
    async def user_feed(user_id: int, n: int = Query(DEFAULT_N, ge=1)) -> dict:
        state.world.require_user(user_id)
        if n > state.predictor.candidates:
            raise InvalidInput(f"n must be at most the candidate count {state.predictor.candidates}, got {n}")
        rid = state.sink.next_request_id()
        retrieved, ranked = await state.predictor.retrieve_and_rank([(user_id, n)], [None], None, str(rid))
        out = feed(user_id, n, retrieved[0], ranked[0])
        if state.homefeed_url:  # the deployment's answer, its impressions logged, under the request id it names
            out = await _served_feed(state.homefeed_url, user_id, n, str(rid))
            rid = out["request_id"]
        name = state.world.interest_name
        candidates = [
            {k: c[k] for k in ("pin_id", "score", "interest_id", "source")} | {"interest": name(c["interest_id"])}
            for c in retrieved[0]["candidates"]
        ]
        return out | {
            "request_id": rid,
            "pins": [p | {"interest": name(p["interest_id"])} for p in out["pins"]],
            "retrieved": candidates,
            "sources": dict(Counter(c["source"] for c in candidates)),
        }

    @app.post("/api/actions")
    def act(body: ActionIn) -> dict:
        state.world.require_user(body.user_id)
        state.world.require_pin(body.pin_id)
        request_id = body.request_id if body.request_id is not None else state.sink.next_request_id()
        if request_id < 0:
            raise InvalidInput(f"request_id must be an integer >= 0, got {request_id}")
        return state.sink.act(body.user_id, body.pin_id, body.action, request_id)

    @app.get("/report", response_class=HTMLResponse, include_in_schema=False)
    def report() -> HTMLResponse:
        path = latest_report(state.experiments)
        if path is None:
            message = f"No experiment report yet: no */run/report.md under {state.experiments} (homefeed experiment)."
            return HTMLResponse(f"<!doctype html><p>{message}</p><p><a href='/'>back</a></p>", status_code=404)
        return HTMLResponse(report_page(path))

    return app


async def _served_feed(homefeed_url: str, user_id: int, n: int, rid: str) -> dict:
    """The homefeed predictor's prediction for one user (InferenceError, a 502, when it does not answer)."""
    import httpx

    url = f"{homefeed_url.rstrip('/')}/v1/models/homefeed:predict"
    body = {"instances": [{"user_id": user_id, "n": n}]}
    try:
        async with httpx.AsyncClient(timeout=60.0) as client:
            response = await client.post(url, json=body, headers={"x-request-id": rid})
    except httpx.HTTPError as exc:
        raise InferenceError(f"the homefeed predictor at {url} did not answer: {exc}") from exc
    if response.status_code != 200:
        raise InferenceError(f"the homefeed predictor answered HTTP {response.status_code}: {response.text[:300]}")
    return response.json()["predictions"][0]


def _error_handlers(app: FastAPI) -> None:
    def answer(status: int):
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"error": str(exc)}, status_code=status)

        return handler

    handled = ((UnknownUser, 404), (UnknownPin, 404), (BadAction, 400), (InvalidInput, 400), (ActionsUnavailable, 503))
    for exc_type, status in handled:
        app.add_exception_handler(exc_type, answer(status))
    # a model server that is down or failing: the upstream's fault, not the page's nor the client's
    app.add_exception_handler(InferenceError, answer(502))
