"""Shared fixtures. Worlds are generated once per session: they are deterministic, so sharing them is safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.data.world.config import preset
from components.data.world.simulate import simulate_world

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is absent (research-licensed data is never committed)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_world")
    simulate_world(preset("tiny"), out)
    return out


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """The default-size world (about 0.5M events): enough data for the statistical checks."""
    out = tmp_path_factory.mktemp("small_world")
    simulate_world(preset("small"), out)
    return out


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_world, tmp_path_factory) -> dict[str, Path]:
    """What the serving predictors load, built from `tiny_world` by the pipeline's steps with a local run's settings:
    {"data", "features", "retrieval", "ranking", "index"} -> directory. Read-only for tests.

    This process holds the Milvus Lite index open (and so its file lock) once the index is built: a server started as
    a separate process needs a copy of the index directory.
    """
    from components import steps

    root = tmp_path_factory.mktemp("tiny_artifacts")
    split = steps.time_split(tiny_world)
    steps.build_features(tiny_world, root / "features")
    steps.train_retrieval_step(tiny_world, root / "retrieval", split, epochs=2)
    steps.train_ranking_step(tiny_world, root / "retrieval", root / "ranking", split, epochs=1, max_examples=20_000)
    steps.index_pins(tiny_world, root / "retrieval", root / "index")
    return {"data": tiny_world, **{name: root / name for name in ("features", "retrieval", "ranking", "index")}}
