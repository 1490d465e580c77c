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
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.rest.server import RESTServer

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


def homefeed_predictor(retrieval_url: str, ranking_url: str, candidates: int = DEFAULT_CANDIDATES) -> HomefeedPredictor:
    return HomefeedPredictor(retrieval_url, ranking_url, candidates=candidates)


def serve(model: kserve.Model, http_port: int) -> None:
    """Load `model` and serve it on `http_port` (all interfaces) until SIGTERM or SIGINT. Blocks."""
    from serving.observe import configure_logging

    configure_logging()
    model.load()
    kserve.ModelServer(http_port=http_port, enable_grpc=False, workers=1).start([model])


def rest_app(*models: kserve.Model) -> FastAPI:
    """The REST application `serve` runs, for already loaded `models`, on a FastAPI app of its own.

    kserve's RESTServer registers routes on one module-level app; doing the same on a fresh app lets several of these
    coexist in a process. The two RESTServer methods used are the ones `RESTServer.create_application` calls.
    """
    server = kserve.ModelServer(enable_grpc=False, workers=1)
    for model in models:
        server.register_model(model)
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, http_port=0)
    app = FastAPI(default_response_class=ORJSONResponse)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    return app


def _require(directory: Path, what: str, *files: str) -> None:
    missing = [f for f in files if not (Path(directory) / f).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a {what} directory: {', '.join(missing)} missing")
