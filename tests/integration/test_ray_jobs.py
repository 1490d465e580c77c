"""Training on a running Ray cluster through its Jobs API (`ray_backend=jobs`): a real head node
(components/cluster/ray_head.py), the retrieval step submitted as the entrypoint a KubeRay RayJob runs, its log
followed, its model read back; a failing job fails the step with its log."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from components.train.retrieval import load_two_tower
from pipelines import steps
from pipelines.ray_backend import WORKSPACE_MOUNT, RayBackend, _entrypoint, rayjob_spec, run_step

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_training_step_runs_as_a_ray_job_and_its_model_comes_back(ray_cluster, tiny_world, tmp_path, capsys):
    split = steps.time_split(tiny_world)
    out = tmp_path / "retrieval"
    kwargs = {"dataset_dir": str(tiny_world), "out_dir": str(out), "split": asdict(split), "epochs": 1, "workers": 1}
    statuses = []
    backend = RayBackend("jobs", workers=1, address=ray_cluster, mount=str(tmp_path / "staging"), poll_s=1.0)
    summary = run_step("train_retrieval", kwargs, backend, "run-1/task-1", ["dataset_dir"], ["out_dir"],
                       statuses.append)  # fmt: skip
    assert [s["status"] for s in statuses][-1] == "SUCCEEDED" and statuses[0]["job"].startswith("train-retrieval")
    assert summary["train_examples"] > 0 and summary["train_end_ms"] == split.train_end_ms
    model = load_two_tower(out)  # the model trained on the cluster, copied back from the staging folder
    assert sum(p.numel() for p in model.parameters()) > 0
    assert "Ray" in capsys.readouterr().out  # the job's log (its Ray Train run) went to the step's stdout
    assert not (tmp_path / "staging" / "jobs").exists() or not any((tmp_path / "staging" / "jobs").iterdir())


def test_a_failing_job_fails_the_step_with_its_log(ray_cluster, tmp_path):
    backend = RayBackend("jobs", workers=1, address=ray_cluster, mount=str(tmp_path), poll_s=1.0)
    kwargs = {"dataset_dir": str(tmp_path / "missing"), "out_dir": str(tmp_path / "out"), "split": {}, "epochs": 1}
    with pytest.raises(RuntimeError, match=r"ended FAILED:[\s\S]*Error"):
        run_step("train_retrieval", kwargs, backend, "run-2/task-1")


def test_the_jobs_backend_needs_an_address_and_stages_where_it_is_told(monkeypatch):
    with pytest.raises(ValueError, match="needs ray_address"):
        RayBackend("jobs", workers=1, address="127.0.0.1:8265")
    monkeypatch.setenv("HOMEFEED_WORK_MOUNT", "/srv/shared")
    assert RayBackend("jobs", workers=1, address="http://h:8265").mount == "/srv/shared"
    monkeypatch.delenv("HOMEFEED_WORK_MOUNT")
    assert RayBackend().mount == WORKSPACE_MOUNT


def test_a_rayjob_runs_the_entrypoint_the_jobs_api_is_given():
    spec = rayjob_spec("train_retrieval", "run-1/task-1", RayBackend("kuberay", 1), "/mnt/w/call.json", "ns")
    assert spec.entrypoint == _entrypoint("/mnt/w/call.json") == "python -m pipelines.ray_backend /mnt/w/call.json"
