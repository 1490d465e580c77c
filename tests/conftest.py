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
