"""Shared fixtures. Worlds are generated once per session: they are deterministic, so sharing them is safe."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.data.world.config import preset
from components.data.world.simulate import simulate_world
from components.train.worker import RAY_WORKERS_ENV

REPO = Path(__file__).resolve().parent.parent
REDIS_ENV = "HOMEFEED_TEST_REDIS"  # .ci/run starts a redis-server and names it here
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
# Training and batch embedding run in the test process, without starting Ray, wherever a test names no workers: the
# tests of the Ray path (test_training, test_pretrain_ids, test_pin_embedding, test_remote_training, test_seqrec_eval)
# name theirs. Set before any test imports the training code; an explicit setting wins.
os.environ.setdefault(RAY_WORKERS_ENV, "0")
TIERS = ("unit", "integration", "e2e", "manifests")  # each test is in exactly one; the Makefile selects by them


def pytest_collection_modifyitems(config, items):
    """Refuse a test in no tier or in two: `make test-fast` (-m unit) would silently drop or double it."""
    wrong = [f"{item.nodeid}: {tiers or 'none'}" for item in items
             if len(tiers := [t for t in TIERS if item.get_closest_marker(t)]) != 1]  # fmt: skip
    if wrong:
        raise pytest.UsageError("every test needs exactly one tier marker " + str(TIERS) + ":\n" + "\n".join(wrong))


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
    """What the serving predictors load, built from `tiny_world` by the pipeline's steps with a local run's settings,
    trained and embedded in this process (Ray Train's local mode; the Ray path has its own tests):
    {"data", "features", "retrieval", "ranking", "index"} -> directory. Read-only for tests.

    This process holds the Milvus Lite index open (and so its file lock) once the index is built: a server started as
    a separate process needs a copy of the index directory.
    """
    from pipelines import steps

    root = tmp_path_factory.mktemp("tiny_artifacts")
    split = steps.time_split(tiny_world)
    steps.build_features(tiny_world, root / "features")
    steps.train_retrieval_step(tiny_world, root / "retrieval", split, epochs=2, workers=0)
    steps.train_ranking_step(
        tiny_world, root / "retrieval", root / "ranking", split, epochs=1, max_examples=20_000, workers=0
    )
    steps.index_pins(tiny_world, root / "retrieval", root / "index", embed_workers=0)
    return {"data": tiny_world, **{name: root / name for name in ("features", "retrieval", "ranking", "index")}}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real Redis: the one $HOMEFEED_TEST_REDIS names (.ci/run starts it), else a redis-server this session
    starts on a free port; skipped with the reason when neither exists. Yields `redis://HOST:PORT/0`."""
    from components.features.online_store import local_redis, redis_available

    if os.environ.get(REDIS_ENV):
        yield os.environ[REDIS_ENV]
        return
    if not redis_available():
        pytest.skip(
            f"redis-server is not installed (Debian package redis-server, which .ci/run installs) and ${REDIS_ENV} is unset"
        )
    with local_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


_redis_dbs = itertools.count(1)


@pytest.fixture
def redis_store(redis_server) -> str:
    """An online-store spec for one test: its own, emptied, Redis database (Feast keys rows by project, so two tests
    sharing a database would share rows). Database 0 is left to whoever else uses the server."""
    import redis

    from components.features.online_store import parse_online_store

    server = parse_online_store(redis_server)
    db = next(_redis_dbs) % 16 or 1  # a default server has 16 databases
    redis.Redis(host=server.host, port=server.port, db=db).flushdb()
    return f"redis://{server.host}:{server.port}/{db}"
