"""Build the three predictors from artifact directories and serve one over REST.

`serve` is what `python -m serving` and a KServe custom-predictor container run: load, then `rest_app` under uvicorn
on one port: KServe's v1 and v2 data-plane handlers, health and metrics, and nothing else (no model repository
endpoints), behind a body-size bound and an optional bearer token. gRPC is off: every client here speaks REST.

`rest_app` is also what tests (FastAPI's TestClient) and benchmarks run in-process: one application, one code path.

The retrieval and ranking modules are imported by their factories only: they bring torch and Feast, which the
homefeed server does not need (it starts in about a second instead of several, and its image can do without them).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import kserve
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, ORJSONResponse
from kserve import errors
from kserve.protocol.rest.v1_endpoints import V1Endpoints
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from prometheus_client import REGISTRY, exposition

from serving.homefeed import DEFAULT_CANDIDATES, TOKEN_ENV, HomefeedPredictor
from serving.observe import log

if TYPE_CHECKING:
    from serving.ranking import RankingPredictor
    from serving.retrieval import RetrievalPredictor

MODEL_FILES = ("model.pt", "config.json")
# The largest body a predictor needs is a ranking request at its limits (serving/scorer.py's MAX_PAIRS pairs as JSON
# ids, about 8 bytes each), with room to spare.
MAX_BODY_BYTES = 4 * 2**20


def retrieval_predictor(model_dir: Path, features_dir: Path, index_dir: Path) -> RetrievalPredictor:
    from components.index.bundle import INDEX_FILE
    from serving.retrieval import RetrievalPredictor

    _require(model_dir, "retrieval model", *MODEL_FILES)
    _require(features_dir, "feature repository", "feature_store.yaml")
    _require(index_dir, "index", INDEX_FILE)
    return RetrievalPredictor(model_dir, features_dir, index_dir)


def ranking_predictor(
    model_dir: Path,
    features_dir: Path,
    index_dir: Path,
    device: str | None = None,
    dtype: str = "auto",
    compile: bool | None = None,
) -> RankingPredictor:
    from components.index.bundle import INDEX_FILE

    _require(model_dir, "ranking model", *MODEL_FILES, "user_embeddings.npy")
    _require(features_dir, "feature repository", "feature_store.yaml")
    _require(index_dir, "index", INDEX_FILE)
    from serving.ranking import RankingPredictor  # after the checks: a wrong directory fails before torch loads

    return RankingPredictor(model_dir, features_dir, index_dir, device=device, dtype=dtype, compile=compile)


def homefeed_predictor(
    retrieval_url: str, ranking_url: str, candidates: int = DEFAULT_CANDIDATES, events_uri: str = "",
    spool_dir: Path | None = None, versions: tuple[str, str] = ("", ""), client_time: bool = False,
    index_dir: Path | None = None, explore: int = 0,
) -> HomefeedPredictor:  # fmt: skip
    """The homefeed predictor; with `events_uri` (an event bus, components/stream/bus.py) every served pin is logged
    as an impression, spooled under `spool_dir` while the bus is down; `client_time`: see HomefeedPredictor; with
    `index_dir` (the index step's output) popular pins stand in for retrieval's candidates while it is down, and
    fill `explore` slots per feed."""
    popular = None
    if index_dir is not None:
        from components.index.bundle import INDEX_FILE
        from serving.corpus import ServingCorpus

        _require(index_dir, "index", INDEX_FILE)
        popular = ServingCorpus.load(index_dir)
    events = None
    if events_uri:
        from components.stream.bus import open_bus
        from serving.event_log import EventLog

        events = EventLog(open_bus(events_uri), spool_dir or Path("/tmp/homefeed-spool"))
    return HomefeedPredictor(retrieval_url, ranking_url, candidates=candidates, events=events, versions=versions,
                             client_time=client_time, popular=popular, explore=explore)  # fmt: skip


def serve(model: kserve.Model, http_port: int, host: str = "127.0.0.1") -> None:
    """Load `model` and serve it on `host`:`http_port` until SIGTERM or SIGINT (uvicorn finishes the requests in
    flight, then the model stops: the homefeed publishes or spools its queued impressions). Blocks.

    Loopback by default: a model server has no authentication of its own unless SERVING_TOKEN is set, so it is
    reachable from elsewhere only when told (`--bind-host 0.0.0.0` in a container, where the pod's NetworkPolicy
    decides who reaches it)."""
    import uvicorn

    from serving.observe import configure_logging

    configure_logging()
    model.load()
    app = rest_app(model, token=os.environ.get(TOKEN_ENV) or None)
    uvicorn.run(app, host=host, port=http_port, log_config=None, access_log=False, timeout_graceful_shutdown=30)


def rest_app(*models: kserve.Model, token: str | None = None, max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The REST application of already loaded `models`: what `serve` runs, and what tests and benchmarks call
    in-process.

    The routes are KServe's v1 and v2 data-plane handlers, registered one by one so that only these are served:
    health (`/`, `/v2/health/live`, `/v2/health/ready`), metadata and readiness per model, `:predict` and
    `/infer`, and Prometheus `/metrics`. Left out on purpose: the model repository's load/unload (anyone who can
    reach the port could take the model out of service while the readiness probe still passes), `:explain` and
    versioned paths, which no predictor here implements (a 404, not a 501). `/v2/health/ready` is ready only while
    every model is, so a pod whose model is not loaded leaves the Service's rotation.

    `token`: when set, every route but the health checks and `/metrics` needs `Authorization: Bearer <token>` (401
    without). `max_body`: bodies longer than this are refused with 413 before they are read.
    """
    server = kserve.ModelServer(enable_grpc=False, workers=1)
    for model in models:
        server.register_model(model)
    plane = server.dataplane
    v1, v2 = V1Endpoints(plane, None), V2Endpoints(plane, None)

    async def ready() -> dict:
        if not all(model.ready for model in models):
            raise errors.ServerNotReady()
        return {"ready": True}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for model in models:  # the homefeed's event log flushes here
            model.stop()

    app = FastAPI(default_response_class=ORJSONResponse, lifespan=lifespan, docs_url=None, redoc_url=None)
    routes = [
        ("/", plane.live, "GET"),
        ("/metrics", _metrics, "GET"),
        ("/v1/models", v1.models, "GET"),
        ("/v1/models/{model_name}", v1.model_ready, "GET"),
        ("/v1/models/{model_name}:predict", v1.predict, "POST"),
        ("/v2", v2.metadata, "GET"),
        ("/v2/health/live", v2.live, "GET"),
        ("/v2/health/ready", ready, "GET"),
        ("/v2/models", v2.models, "GET"),
        ("/v2/models/{model_name}", v2.model_metadata, "GET"),
        ("/v2/models/{model_name}/ready", v2.model_ready, "GET"),
        ("/v2/models/{model_name}/infer", v2.infer, "POST"),
    ]
    for path, handler, method in routes:
        app.add_api_route(path, handler, methods=[method], response_model=None)
    for error, status in _ERROR_STATUS:
        app.add_exception_handler(error, _answer(status))
    app.add_middleware(_Guard, token=token, max_body=max_body)
    return app


async def _metrics(request: Request) -> Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
    return Response(content=encoder(REGISTRY), headers={"content-type": content_type})


# The status of each error the data plane raises, most specific first. Every client mistake is a 4xx: kserve's own
# handlers answer 501 for what this server does not offer and 500 for errors decoding a request, and they fail to
# encode a message quoting a client's invalid UTF-8 (a lone surrogate).
_ERROR_STATUS = (
    (errors.InvalidInput, HTTPStatus.BAD_REQUEST),
    (errors.ModelNotFound, HTTPStatus.NOT_FOUND),
    (errors.ModelNotReady, HTTPStatus.SERVICE_UNAVAILABLE),
    (errors.ServerNotLive, HTTPStatus.SERVICE_UNAVAILABLE),
    (errors.ServerNotReady, HTTPStatus.SERVICE_UNAVAILABLE),
    (errors.UnsupportedProtocol, HTTPStatus.BAD_REQUEST),
    (NotImplementedError, HTTPStatus.NOT_FOUND),
    (errors.InferenceError, HTTPStatus.INTERNAL_SERVER_ERROR),
    (Exception, HTTPStatus.INTERNAL_SERVER_ERROR),
)


def _answer(status: HTTPStatus):
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            log.error("request failed", exc_info=exc)
        message = str(exc) if status < HTTPStatus.INTERNAL_SERVER_ERROR or isinstance(exc, errors.InferenceError) else (
            f"{type(exc).__name__}: {exc}")  # fmt: skip
        return JSONResponse({"error": message.encode("utf-8", "backslashreplace").decode("utf-8")}, status)

    return handler


class _Guard:
    """ASGI middleware in front of every route: the bearer token (when set), the body-size bound and the v2 binary
    header's form (KServe answers 500 for a length that is not a number), checked before a request's body is read.
    A body without Content-Length (chunked) is counted as it streams and cut off at the bound."""

    OPEN = ("/", "/metrics", "/v2/health/live", "/v2/health/ready")

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.expected = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] not in self.OPEN:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await _refuse(send, HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
        binary = headers.get(b"inference-header-content-length")  # v2 binary data: the JSON part's length
        if binary is not None and not binary.isdigit():
            return await _refuse(send, HTTPStatus.BAD_REQUEST, "inference-header-content-length: expected bytes")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _refuse(send, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {self.max_body} bytes")
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise errors.InvalidInput(f"body over {self.max_body} bytes")
            return message

        return await self.app(scope, bounded, send)


async def _refuse(send, status: HTTPStatus, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _require(directory: Path, what: str, *files: str) -> None:
    missing = [f for f in files if not (Path(directory) / f).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a {what} directory: {', '.join(missing)} missing")
