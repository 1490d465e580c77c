"""Everything the homefeed page runs on, from a pipeline run's artifacts: a working copy of the feature repository,
the retrieval and ranking servers on it, and the app.

The page's actions are pushed into the online store, so the servers run on a working copy of the run's feature
repository and index (components.cluster.launcher.working_copy says why), never on the run's own artifacts.

Example:
    artifacts = Artifacts.of_run(load_run(Path("workspace/runs/latest")))
    with ui_app(artifacts, Path("/tmp/ui"), dashboard_url="http://127.0.0.1:8000", experiments=Path("x")) as app:
        uvicorn.run(app, port=8503)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from fastapi import FastAPI

# what each artifact must hold for the servers and the page to start on it (serving/server.py checks the same files)
REQUIRED = {
    "dataset": ("events.parquet", "users.parquet", "pins.parquet", "interests.parquet"),
    "features": ("feature_store.yaml", "stream/checkpoint.json"),
    "retrieval": ("model.pt", "config.json"),
    "ranking": ("model.pt", "config.json"),
    "index": ("index.json",),
}
RUN_OUTPUTS = {  # artifact -> the pipeline run's output name (pipelines/local.py run.json)
    "dataset": "dataset",
    "features": "feature_store",
    "retrieval": "retrieval_model",
    "ranking": "ranking_model",
    "index": "pin_index",
}


@dataclass(frozen=True)
class Artifacts:
    dataset: Path
    features: Path
    retrieval: Path
    ranking: Path
    index: Path

    @classmethod
    def of_run(cls, run) -> Artifacts:
        """The directories of a pipeline run (pipelines.local.LocalRun); a KeyError names the outputs it lacks."""
        missing = [output for output in RUN_OUTPUTS.values() if output not in run.artifacts]
        if missing:
            raise KeyError(f"run {run.run_id} has no {', '.join(missing)} output(s) (it has {sorted(run.artifacts)})")
        return cls(**{name: run.path(output) for name, output in RUN_OUTPUTS.items()})

    def missing(self, need: tuple[str, ...] = tuple(REQUIRED)) -> list[str]:
        """`<artifact> <path>` of every required file absent among the artifacts in `need`."""
        return [
            f"{f.name} {getattr(self, f.name) / name}"
            for f in fields(self)
            if f.name in need
            for name in REQUIRED[f.name]
            if not (getattr(self, f.name) / name).exists()
        ]


@contextlib.contextmanager
def ui_app(
    artifacts: Artifacts,
    work_dir: Path,
    dashboard_url: str,
    experiments: Path,
    retrieval_url: str | None = None,
    ranking_url: str | None = None,
    candidates: int = 200,
    timeout_s: float = 180.0,
    homefeed_url: str | None = None,
    actions_url: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Iterator[FastAPI]:
    """Copy the feature repository (and index) into `work_dir`, start retrieval and ranking on the copies (unless
    both URLs are given), and yield the app; the servers stop when the block ends. `work_dir` must not exist yet or be
    empty: a copy left by an earlier page would carry its actions. Raises FileNotFoundError naming missing files, and
    components.cluster.launcher.ServerFailed when a server does not start. With a deployment's `homefeed_url` and
    `actions_url` the page drives it through those endpoints: the feed is the homefeed predictor's answer (its
    impressions logged by it), the actions go to the actions service."""
    from feast import FeatureStore

    from components.cluster.launcher import homefeed_specs, running_servers, working_copy
    from homefeed.ui.actions import ActionSink, ServiceSink
    from homefeed.ui.app import UiState, create_app
    from homefeed.ui.world import World
    from serving.homefeed import HomefeedPredictor

    external = retrieval_url is not None and ranking_url is not None
    if (retrieval_url is None) != (ranking_url is None):
        raise ValueError("give both the retrieval and the ranking URL, or neither (the page then starts both)")
    missing = artifacts.missing(("dataset", "features") if external else tuple(REQUIRED))
    if missing:
        raise FileNotFoundError(f"missing: {'; '.join(missing)}")
    work_dir = Path(work_dir)
    if work_dir.exists() and any(work_dir.iterdir()):
        raise FileExistsError(f"{work_dir} is not empty: the page needs a fresh working folder")
    features, index = working_copy(artifacts.features, None if external else artifacts.index, work_dir)
    world = World.load(artifacts.dataset)
    with contextlib.ExitStack() as stack:
        if not external:
            specs = homefeed_specs(artifacts.retrieval, artifacts.ranking, features, index)
            specs = [s for s in specs if s.name in ("retrieval", "ranking")]  # the page is the homefeed's client
            urls = stack.enter_context(running_servers(specs, work_dir / "logs", timeout_s=timeout_s))
            retrieval_url, ranking_url = urls["retrieval"], urls["ranking"]
        store = FeatureStore(repo_path=str(features))
        state = UiState(
            world=world,
            store=store,
            predictor=HomefeedPredictor(retrieval_url, ranking_url, candidates=candidates, name="ui"),
            sink=ServiceSink(actions_url, world.end_ts, world.last_request_id)
            if actions_url
            else ActionSink(store, features, world.end_ts, world.last_request_id),
            dashboard_url=dashboard_url,
            experiments=Path(experiments),
            servers_read_copy=not external,
            homefeed_url=homefeed_url,
        )
        yield create_app(state) if allowed_hosts is None else create_app(state, allowed_hosts)
