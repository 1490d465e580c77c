"""A training step with `ray_backend=kuberay`, end to end except for the cluster itself.

The step stages its inputs on the workspace volume, creates a RayJob through the real kubernetes client (configured
from a kubeconfig, as outside a pod), polls it, and copies the model back. The Kubernetes API is replayed
(tests/recorded_api.py); when it receives the RayJob, it does what KubeRay would: runs the job's entrypoint, here as
a local process whose `ray.init()` starts its own Ray. The model that comes back must be the one the same step
trains with `ray_backend=local`.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from recorded_api import RecordedAPI, replies, reply, write_kubeconfig

from components.cluster.rayjob import RayJobFailed
from pipelines import steps
from pipelines.ray_backend import RayBackend, run_step

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COLLECTION = "/apis/ray.io/v1/namespaces/homefeed/rayjobs"


def run_entrypoint(request) -> None:
    """KubeRay's part: run the submitted job's entrypoint (on this machine, not on a Ray cluster)."""
    args = shlex.split(request.body["spec"]["entrypoint"])
    assert args[:3] == ["python", "-m", "pipelines.ray_backend"]
    subprocess.run([sys.executable, *args[1:]], check=True, timeout=600)


def digest(folder: Path) -> dict[str, str]:
    """The model's files by content (train_metrics.json also holds wall times, which differ run to run)."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("model.pt", "config.json")}


def kwargs_for(dataset: Path, out: Path) -> dict:
    split = asdict(steps.time_split(dataset))
    return {"dataset_dir": str(dataset), "out_dir": str(out), "split": split, "epochs": 1, "seed": 0, "workers": 2}


def test_training_step_runs_as_a_rayjob_and_returns_the_same_model(tiny_world, tmp_path, monkeypatch):
    name_pattern = re.compile(rf"{COLLECTION}/train-retrieval-[a-z0-9-]+")
    script = [
        reply("POST", COLLECTION, status=201, fixture="kuberay/rayjob_created", effect=run_entrypoint),
        replies("GET", name_pattern, ["kuberay/rayjob_running", "kuberay/rayjob_complete"]),
    ]
    mount = tmp_path / "volume"
    with RecordedAPI(script) as api:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", api.url)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        backend = RayBackend("kuberay", workers=2, mount=str(mount), poll_s=0.01)
        statuses: list = []
        summary = run_step(
            "train_retrieval",
            kwargs_for(tiny_world, tmp_path / "model"),
            backend,
            job_id="run-1/task-7",
            inputs=["dataset_dir"],
            outputs=["out_dir"],
            on_status=statuses.append,
        )
    api.assert_all_used()
    (sent,) = api.sent("POST", COLLECTION)
    body = sent.body
    assert body["metadata"]["name"].startswith("train-retrieval-")
    assert body["metadata"]["labels"]["homefeed/step"] == "train-retrieval"
    assert body["spec"]["shutdownAfterJobFinishes"] is True
    workers = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2
    mounts = workers["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "workspace", "mountPath": str(mount)} in [{k: m[k] for k in ("name", "mountPath")} for m in mounts]
    # the call ran on the volume's copy of the dataset, and the job's folder was removed afterwards
    assert summary["train_examples"] > 0 and statuses
    assert not any((mount / "jobs").iterdir())
    # the same step run locally trains the same model (fixed seed, CPU)
    steps.train_retrieval_step(**kwargs_for(tiny_world, tmp_path / "local") | {"split": steps.time_split(tiny_world)})
    assert digest(tmp_path / "model") == digest(tmp_path / "local")


def test_a_failed_rayjob_fails_the_step_and_keeps_no_output(tiny_world, tmp_path, monkeypatch):
    name_pattern = re.compile(rf"{COLLECTION}/train-retrieval-[a-z0-9-]+")
    script = [
        reply("POST", COLLECTION, status=201, fixture="kuberay/rayjob_created"),
        replies("GET", name_pattern, ["kuberay/rayjob_running", "kuberay/rayjob_failed"]),
    ]
    with RecordedAPI(script) as api:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", api.url)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        backend = RayBackend("kuberay", mount=str(tmp_path / "volume"), poll_s=0.01)
        with pytest.raises(RayJobFailed):
            run_step(
                "train_retrieval", kwargs_for(tiny_world, tmp_path / "model"), backend, "run-2/task-1",
                ["dataset_dir"], ["out_dir"],
            )  # fmt: skip
    api.assert_all_used()
    assert not (tmp_path / "model").exists()


def test_unknown_backend_or_step_is_refused():
    with pytest.raises(ValueError, match="ray_backend must be one of"):
        RayBackend("slurm")
    with pytest.raises(ValueError, match="unknown step"):
        run_step("train_everything", {}, RayBackend(), "x")
