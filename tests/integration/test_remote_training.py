"""A training step with `ray_backend=kuberay`, end to end except for the operator.

The step stages its inputs on the workspace volume, creates a RayJob through the real kubernetes client (configured
from a kubeconfig, as outside a pod) on a real API server serving KubeRay's CRD (`kube_api`), polls it, and copies
the model back. KubeRay does not run here, so the test plays it (tests/played_kuberay.py): it sees the RayJob
created, submits its entrypoint to a real Ray cluster through the Jobs API (`ray_cluster`, the call KubeRay's
submitter makes on the cluster it brought up) and writes the job's progress into the RayJob's status. The model that
comes back must be the one the same step trains with `ray_backend=local`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pytest
from kubernetes import client
from played_kuberay import KubeRayOnRay

from components.cluster.rayjob import RayJobFailed
from pipelines import steps
from pipelines.ray_backend import RayBackend, run_step

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMESPACE = "homefeed"  # current_namespace() outside a pod


def digest(folder: Path) -> dict[str, str]:
    """The model's files by content (train_metrics.json also holds wall times, which differ run to run)."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("model.pt", "config.json")}


def kwargs_for(dataset: Path, out: Path) -> dict:
    split = asdict(steps.time_split(dataset))
    return {"dataset_dir": str(dataset), "out_dir": str(out), "split": split, "epochs": 1, "seed": 0, "workers": 2}


@pytest.fixture
def kube(kube_api, monkeypatch):
    """The step's own client reads this kubeconfig; the test's client is yielded."""
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with kube_api.api_client() as api:
        yield api


def rayjobs(kube) -> list[dict]:
    listed = client.CustomObjectsApi(kube).list_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayjobs")
    return listed["items"]


def test_training_step_runs_as_a_rayjob_and_returns_the_same_model(kube, ray_cluster, tiny_world, tmp_path):
    mount = tmp_path / "volume"
    backend = RayBackend("kuberay", workers=2, mount=str(mount), poll_s=0.5)
    statuses: list = []
    with KubeRayOnRay(kube, NAMESPACE, ray_cluster) as kuberay:
        summary = run_step(
            "train_retrieval",
            kwargs_for(tiny_world, tmp_path / "model"),
            backend,
            job_id="run-1/task-7",
            inputs=["dataset_dir"],
            outputs=["out_dir"],
            on_status=statuses.append,
        )
    (body,) = [j for j in rayjobs(kube) if j["metadata"]["labels"]["homefeed/step"] == "train-retrieval"
               and j["spec"]["entrypoint"] in kuberay.submitted]  # fmt: skip
    assert body["metadata"]["name"].startswith("train-retrieval-")
    assert body["spec"]["shutdownAfterJobFinishes"] is True
    workers = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2
    mounts = workers["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "workspace", "mountPath": str(mount)} in [{k: m[k] for k in ("name", "mountPath")} for m in mounts]
    assert (body["status"]["jobDeploymentStatus"], body["status"]["jobStatus"]) == ("Complete", "SUCCEEDED")
    assert [s.get("jobStatus") for s in statuses][-1] == "SUCCEEDED"
    # the call ran on the volume's copy of the dataset, and the job's folder was removed afterwards
    assert summary["train_examples"] > 0
    assert not any((mount / "jobs").iterdir())
    # the same step run locally trains the same model (fixed seed, CPU)
    steps.train_retrieval_step(**kwargs_for(tiny_world, tmp_path / "local") | {"split": steps.time_split(tiny_world)})
    assert digest(tmp_path / "model") == digest(tmp_path / "local")


def test_a_failed_rayjob_fails_the_step_and_keeps_no_output(kube, ray_cluster, tiny_world, tmp_path):
    backend = RayBackend("kuberay", mount=str(tmp_path / "volume"), poll_s=0.5)
    kwargs = kwargs_for(tiny_world, tmp_path / "model") | {"split": {}}  # the job fails reading its split
    with KubeRayOnRay(kube, NAMESPACE, ray_cluster), pytest.raises(RayJobFailed, match="AppFailed") as info:
        run_step("train_retrieval", kwargs, backend, "run-2/task-1", ["dataset_dir"], ["out_dir"])
    assert info.value.status["jobDeploymentStatus"] == "Failed"
    assert not (tmp_path / "model").exists()


def test_unknown_backend_or_step_is_refused():
    with pytest.raises(ValueError, match="ray_backend must be one of"):
        RayBackend("slurm")
    with pytest.raises(ValueError, match="unknown step"):
        run_step("train_everything", {}, RayBackend(), "x")
