"""Fixtures of the integration tier."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from components.cluster.launcher import homefeed_specs, running_servers

STACK_CANDIDATES = 200  # retrieval's candidates per homefeed request on the shared stack


@pytest.fixture(scope="session")
def tiny_stack(tiny_artifacts, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Retrieval, ranking and homefeed on `tiny_artifacts` as real processes on loopback (started by the launcher),
    once per session, for the tests that only send them requests: {name: url}; logs under the fixture's folder.

    Retrieval reads a copy of the index: the test process holds the original Milvus Lite file open (and locked).
    """
    root = tmp_path_factory.mktemp("tiny_stack")
    index = shutil.copytree(tiny_artifacts["index"], root / "index", ignore=shutil.ignore_patterns("LOCK"))
    art = tiny_artifacts
    specs = homefeed_specs(
        art["retrieval"], art["ranking"], art["features"], index, candidates=STACK_CANDIDATES, device="cpu"
    )
    with running_servers(specs, root / "logs") as urls:
        yield urls
