"""The three model servers as real processes on loopback, on the tiny world's artifacts, for the tests that need
them (imported by test modules of this folder, which pytest puts on sys.path)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from serving.launcher import homefeed_specs, running_servers


@contextlib.contextmanager
def serving_stack(artifacts: dict, root: Path, candidates: int) -> Iterator[dict[str, str]]:
    """Retrieval, ranking and homefeed started by the launcher, yielding {name: url}; logs under `root/logs`.

    Retrieval reads a copy of the index: the test process holds the original Milvus Lite file open (and locked).
    """
    index = shutil.copytree(artifacts["index"], root / "index", ignore=shutil.ignore_patterns("LOCK"))
    specs = homefeed_specs(
        artifacts["retrieval"], artifacts["ranking"], artifacts["features"], index, candidates=candidates, device="cpu"
    )
    with running_servers(specs, root / "logs") as urls:
        yield urls
