"""`homefeed pipeline run --local` as a user types it (the session's shared run, tests/e2e/conftest.py), then
`homefeed deployment` and `homefeed deployment --stop`: the training pipeline on the tiny world deploys to the
workspace's local servers, which keep serving after the command returns, until stopped."""

from __future__ import annotations

import json

import httpx
import pytest
from click.testing import CliRunner

from components.cluster.launcher import alive
from homefeed.cli import main
from pipelines.local import load_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_run_local_deploys_to_servers_that_outlive_the_command(tiny_run):
    workspace = tiny_run.workspace
    try:
        said = " ".join(tiny_run.output.split())  # the terminal wraps long lines
        assert "gate: deployed: every gated metric passed (no champion yet" in said
        assert "deployed: registry version 1 to local:" in said
        state = json.loads((workspace / "serving" / "deployment.json").read_text())
        url = state["servers"]["homefeed"]["url"]
        assert f"homefeed at {url}" in said
        assert (workspace / "registry" / "homefeed" / "versions" / "v1" / "version.json").exists()
        # the servers outlived the command
        answer = httpx.post(f"{url}/v1/models/homefeed:predict", json={"instances": [{"user_id": 5}]}, timeout=60)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["pins"]
        shown = tiny_run.invoke("deployment")
        assert shown.exit_code == 0 and "v1 serving" in shown.output and url in shown.output
    finally:
        stopped = tiny_run.invoke("deployment", "--stop")
    assert stopped.exit_code == 0 and "v1 stopped" in stopped.output, stopped.output
    assert not any(alive(s["pid"]) for s in state["servers"].values())
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/models/homefeed", timeout=2)


def test_an_in_process_run_gives_the_shared_runs_figures(tiny_run, tmp_path):
    """`--in-process`: the same pipeline and parameters with every step in the command's process; it evaluates the
    same models to the same figures as the shared run's process per step (training is deterministic on CPU)."""
    keys = ("retrieval_epochs", "ranking_epochs", "ranking_max_examples", "ray_workers", "gate_policy")
    same = {k: tiny_run.run.params[k] for k in keys}
    sets = [arg for name, value in same.items() for arg in ("--set", f"{name}={value}")]
    args = [
        "pipeline",
        "run",
        "--local",
        "--in-process",
        "--source",
        "world:tiny",
        *sets,
        "--set",
        "deploy_target=none",
    ]
    result = CliRunner().invoke(main, args, env={"HOMEFEED_WORKSPACE": str(tmp_path)})
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "runs")
    assert [s.name for s in run.steps] == [s.name for s in tiny_run.run.steps]
    # the same computation on the same CPU; a tolerance, not ==, since the two runs may sum in another order
    assert run.artifacts["metrics"]["metadata"] == pytest.approx(
        tiny_run.run.artifacts["metrics"]["metadata"], abs=1e-6
    )
