"""The e2e tier's one pipeline run, shared by every test that only reads what it made (test_loop.py,
test_cli_pipeline.py): `homefeed pipeline run --local` of homefeed_training on the tiny world, typed as a user types
it, which trains, gates, indexes and deploys to local servers in a workspace of its own. Its steps train in their own
processes (`ray_workers=0`, Ray Train's local mode): the Ray path has tests of its own (tests/integration/
test_training.py, test_pretrain_ids.py, test_remote_training.py). The tests that need runs of their own say why."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from homefeed.cli import main
from pipelines.local import LocalRun, load_run

TINY_RUN = {"retrieval_epochs": 2, "ranking_epochs": 1, "ranking_max_examples": 5_000, "ray_workers": 0}


@dataclass(frozen=True)
class TinyRun:
    workspace: Path
    output: str  # what the command printed
    run: LocalRun

    def invoke(self, *args: str):
        """Another `homefeed` command on this run's workspace."""
        return CliRunner().invoke(main, list(args), env={"HOMEFEED_WORKSPACE": str(self.workspace)})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Iterator[TinyRun]:
    workspace = tmp_path_factory.mktemp("workspace")
    sets = [arg for name, value in TINY_RUN.items() for arg in ("--set", f"{name}={value}")]
    args = ["pipeline", "run", "--local", "--pipeline", "homefeed_training", "--source", "world:tiny", *sets]
    result = CliRunner().invoke(main, args, env={"HOMEFEED_WORKSPACE": str(workspace)})
    assert result.exit_code == 0, result.output
    shared = TinyRun(workspace, result.output, load_run(workspace / "runs"))
    try:
        yield shared
    finally:
        shared.invoke("deployment", "--stop")  # the servers outlive the command; a test may have stopped them already
