"""manifests/templates/rayjob.yaml is the RayJob the training steps submit, rendered from the code that submits it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.ray_backend import RayBackend, rayjob_spec, rayjob_template

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[2] / "manifests" / "templates" / "rayjob.yaml"


def test_the_template_is_what_the_code_submits():
    assert TEMPLATE.read_text() == rayjob_template(), (
        "manifests/templates/rayjob.yaml is stale: python -m pipelines.ray_backend --template > " + str(TEMPLATE)
    )


def test_every_ray_pod_runs_as_the_image_user_on_a_read_only_root():
    job = yaml.safe_load(TEMPLATE.read_text())
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    pods.append(job["spec"]["submitterPodTemplate"])
    for pod in pods:
        # the Dockerfile's user; the Ray pods' network policy selects this label
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
        assert pod["metadata"]["labels"]["homefeed.io/ray"] == "member"
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        scratch = {v["name"] for v in pod["spec"]["volumes"] if "emptyDir" in v}
        assert any(m["mountPath"] == "/tmp" and m["name"] in scratch for m in container["volumeMounts"])


def test_the_spec_names_the_job_from_the_run_and_task():
    backend = RayBackend(kind="kuberay", workers=2, gpus=1)
    a = rayjob_spec("train_ranking", "run-1/task-a", backend, "/w/call.json", "ns")
    b = rayjob_spec("train_ranking", "run-1/task-b", backend, "/w/call.json", "ns")
    assert a.name.startswith("train-ranking-") and a.name != b.name
    assert a.worker_gpus == 1 and a.workers == 2 and a.pvc_name == "homefeed-work"
