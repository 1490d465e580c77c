"""The e2e tier's one pipeline run, shared by every test that only reads what it made (test_loop.py,
test_cli_pipeline.py): `homefeed pipeline run --local` of homefeed_training on the tiny world, typed as a user types
it, which trains, gates, indexes and deploys to local servers in a workspace of its own. Its steps train in their own
processes (`ray_workers=0`, Ray Train's local mode): the Ray path has tests of its own (tests/integration/
test_training.py, test_pretrain_ids.py, test_remote_training.py). The tests that need runs of their own say why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.gate import GatePolicy
from homefeed.cli import main
from pipelines.local import LocalRun, load_run

# The default gate without its first-model floor: this run's models are trained for the mechanics, not for quality
# (2 epochs on the tiny world leave recall@100 near 0.09 against popularity's 0.33), so the floor would refuse them;
# the floor has tests of its own (tests/integration/test_release_verification.py).
NO_FLOOR = json.dumps(GatePolicy.default().to_dict() | {"first_model": {"beat_baselines": False}})
TINY_RUN = {"retrieval_epochs": 2, "ranking_epochs": 1, "ranking_max_examples": 5_000, "ray_workers": 0,
            "gate_policy": NO_FLOOR}  # fmt: skip


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
