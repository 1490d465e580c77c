"""Build the three predictors from artifact directories and serve one with `kserve.ModelServer`.

`serve` is what `python -m serving` and a KServe custom-predictor container run: load, then the ModelServer's REST
endpoints (v1 and v2, health, metrics) on one port. gRPC is off: every client here speaks REST.

`rest_app` builds the same REST application in-process, for tests (FastAPI's TestClient) and benchmarks.

The retrieval and ranking modules are imported by their factories only: they bring torch and Feast, which the
homefeed server does not need (it starts in about a second instead of several, and its image can do without them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import kserve
from fastapi import FastAPI, Request, Response
from fastapi.responses import ORJSONResponse
from kserve import errors
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
from prometheus_client import REGISTRY, exposition

from serving.homefeed import DEFAULT_CANDIDATES, HomefeedPredictor

if TYPE_CHECKING:
    from serving.ranking import RankingPredictor
    from serving.retrieval import RetrievalPredictor

MODEL_FILES = ("model.pt", "config.json")


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
) -> HomefeedPredictor:  # fmt: skip
    """The homefeed predictor; with `events_uri` (an event bus, components/stream/bus.py) every served pin is logged
    as an impression, spooled under `spool_dir` while the bus is down; `client_time`: see HomefeedPredictor."""
    events = None
    if events_uri:
        from components.stream.bus import open_bus
        from serving.event_log import EventLog

        events = EventLog(open_bus(events_uri), spool_dir or Path("/tmp/homefeed-spool"))
    return HomefeedPredictor(
        retrieval_url, ranking_url, candidates=candidates, events=events, versions=versions, client_time=client_time
    )


def serve(model: kserve.Model, http_port: int) -> None:
    """Load `model` and serve it on `http_port` (all interfaces) until SIGTERM or SIGINT. Blocks."""
    from serving.observe import configure_logging

    configure_logging()
    model.load()
    kserve.ModelServer(http_port=http_port, enable_grpc=False, workers=1).start([model])


def rest_app(*models: kserve.Model) -> FastAPI:
    """The REST application `serve` runs, for already loaded `models`, on a FastAPI app of its own.

    kserve's ModelServer registers its routes on one module-level app, so two servers could not coexist in a process;
    this builds the same routes (v1, v2, health at `/`, Prometheus `/metrics`) and the same error answers from
    kserve's public functions on a fresh app.
    """
    server = kserve.ModelServer(enable_grpc=False, workers=1)
    for model in models:
        server.register_model(model)
    app = FastAPI(default_response_class=ORJSONResponse)
    app.add_api_route("/", server.dataplane.live)
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    register_v1_endpoints(app, server.dataplane, server.model_repository_extension)
    register_v2_endpoints(app, server.dataplane, server.model_repository_extension)
    for error, handler in _ERROR_HANDLERS:
        app.add_exception_handler(error, handler)
    return app


async def _metrics(request: Request) -> Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
    return Response(content=encoder(REGISTRY), headers={"content-type": content_type})


# kserve's answer to each error, in the order kserve's own server registers them
_ERROR_HANDLERS = (
    (errors.InvalidInput, errors.invalid_input_handler),
    (errors.InferenceError, errors.inference_error_handler),
    (errors.ModelNotFound, errors.model_not_found_handler),
    (errors.ModelNotReady, errors.model_not_ready_handler),
    (NotImplementedError, errors.not_implemented_error_handler),
    (errors.UnsupportedProtocol, errors.unsupported_protocol_error_handler),
    (errors.ServerNotLive, errors.server_not_live_handler),
    (errors.ServerNotReady, errors.server_not_ready_handler),
    (Exception, errors.generic_exception_handler),
)


def _require(directory: Path, what: str, *files: str) -> None:
    missing = [f for f in files if not (Path(directory) / f).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a {what} directory: {', '.join(missing)} missing")
