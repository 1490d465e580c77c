"""The release steps' edges: deploy targets, refusals before anything is written, the gate's refusal when the
champion cannot be loaded, the cluster rollout through the real kubernetes client against a replayed API, and
the local deployment's rollback when a new version does not start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from components import release
from components.cluster import inference_service as isvc
from components.cluster import local_deployment as deployment
from components.cluster.launcher import alive
from components.evaluate.result import Evaluation
from components.registry import Registry
from components.release import DeployTarget
from pipelines import steps

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("local:/srv/homefeed", DeployTarget("local", "/srv/homefeed")), ("kserve:ml", DeployTarget("kserve", "ml")),
     ("podman:/srv/c", DeployTarget("podman", "/srv/c")), ("none", DeployTarget("none"))],
)  # fmt: skip
def test_deploy_targets_parse(raw, parsed):
    assert DeployTarget.parse(raw) == parsed


@pytest.mark.parametrize("raw", ["", "local:", "podman:", "kserve", "k8s:homefeed", "none:x"])
def test_bad_deploy_targets_are_refused(raw):
    with pytest.raises(ValueError, match="deploy target must be"):
        DeployTarget.parse(raw)


def test_a_run_deploying_to_the_container_cluster_builds_against_its_stores(tmp_path, monkeypatch):
    from components.cluster.local_cluster import ClusterState
    from pipelines.local import local_defaults

    state = ClusterState(name="c", network="c", subnet="10.89.120.0/24", namespace="homefeed")
    state.write(tmp_path)
    for name in ("MILVUS_TOKEN", "REDIS_PASSWORD"):
        monkeypatch.setenv(name, "")  # so that the teardown restores what it was
        monkeypatch.delenv(name)
    params = {"deploy_target": f"podman:{tmp_path}", "online_store": "sqlite", "index_uri": "", "registry": ""}
    out = local_defaults(params, tmp_path / "ws")
    assert out["online_store"] == "redis://10.89.120.11:6379/0" and out["index_uri"] == "http://10.89.120.10:19530"
    assert os.environ["MILVUS_TOKEN"] == "root:Milvus"
    assert os.environ["REDIS_PASSWORD"] == state.redis_password and len(state.redis_password) == 48
    # what the run was told stays as it was
    kept = local_defaults({**params, "index_uri": "http://milvus:19530", "online_store": "redis://r:6379/2"}, tmp_path)
    assert kept["index_uri"] == "http://milvus:19530" and kept["online_store"] == "redis://r:6379/2"
    with pytest.raises(FileNotFoundError, match="homefeed cluster up"):
        local_defaults({**params, "deploy_target": f"podman:{tmp_path / 'none'}"}, tmp_path)


def write_decision(folder: Path, deploy: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"deploy": deploy, "reasons": ["not deployed: recall@100 did not pass"], "basis": "x", "challenger": {}}
    (folder / release.DECISION_FILE).write_text(json.dumps(record))
    return folder


def test_deploy_refuses_a_model_the_gate_rejected(tmp_path):
    gate = write_decision(tmp_path / "gate", deploy=False)
    with pytest.raises(RuntimeError, match="the gate did not pass this model: not deployed"):
        release.deploy_step(*(tmp_path,) * 5, gate, tmp_path / "out", str(tmp_path / "reg"), "none", "run-1")
    assert not (tmp_path / "reg").exists()


def test_a_cluster_deploy_needs_an_s3_registry(tmp_path):
    gate = write_decision(tmp_path / "gate", deploy=True)
    with pytest.raises(ValueError, match="needs an s3:// registry"):
        release.deploy_step(*(tmp_path,) * 5, gate, tmp_path / "out", str(tmp_path / "reg"), "kserve:ml", "run-1")


def test_no_registry_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="set the pipeline parameter `registry`"):
        release.champion_step(" ", *(tmp_path,) * 4)


def test_refresh_without_a_champion_says_what_to_run_first(tmp_path):
    with pytest.raises(RuntimeError, match="run homefeed_training or homefeed_retraining first"):
        release.champion_step(str(tmp_path / "reg"), *(tmp_path / n for n in "abcd"))


def test_gate_refuses_when_the_champion_does_not_load_and_says_why(tiny_world, tmp_path):
    """A champion whose models cannot be loaded (here: not models at all) is not a bar to compare with: its
    registered figures are shown, but nothing deploys (components/release.py `_champion_figures` says why)."""
    reg = Registry(tmp_path / "reg")
    broken = tmp_path / "broken"
    for part in ("retrieval", "ranking"):
        (broken / part).mkdir(parents=True)
        (broken / part / "model.pt").write_bytes(b"not a model")
    v1 = reg.register(release.MODEL_NAME, broken, {"recall@100": 0.30}, run_id="old")
    reg.promote(release.MODEL_NAME, v1, "test")
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    split = steps.time_split(tiny_world)
    retrieval = {"recall": {"100": 0.35}, "popularity_recall": {"100": 0.1}}
    Evaluation(split, retrieval, ranking={}).write(evaluation)
    policy = json.dumps({"recall@100": {"direction": "higher", "tolerance": 0.01}})
    record = release.gate_step(tiny_world, evaluation, tmp_path / "gate", split, str(reg.uri), "new", policy,
                               retrieval_dir=broken / "retrieval", ranking_dir=broken / "ranking")  # fmt: skip
    assert record["basis"].startswith("registered metrics (champion v1 does not load: ")
    assert not record["deploy"] and record["champion_version"] == 1
    # better than the registered figure, and still refused: the verdict names the reason
    assert record["per_metric"][0]["champion"] == 0.30 and record["per_metric"][0]["challenger"] == 0.35
    assert record["per_metric"][0]["ok"] and record["reasons"][-1].startswith("not deployed: champion v1 does not load")
    assert json.loads((tmp_path / "gate" / release.DECISION_FILE).read_text()) == json.loads(json.dumps(record))
    (entry,) = reg.history(release.MODEL_NAME)[-1:]
    assert entry["event"] == "decision" and entry["run_id"] == "new" and entry["deploy"] is False


class KServeReadiness(threading.Thread):
    """KServe's controller, played against the real API server (which runs none): every InferenceService of
    `namespace` whose generation it has not observed yet is reported Ready at that generation, with its URL, through
    the status subresource, as KServe reports a revision that came up."""

    def __init__(self, kube, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = k8s.CustomObjectsApi(kube), namespace
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            listed = self.api.list_namespaced_custom_object(isvc.GROUP, isvc.VERSION, self.namespace, isvc.PLURAL)
            for obj in listed["items"]:
                generation = obj["metadata"]["generation"]
                if (obj.get("status") or {}).get("observedGeneration") != generation:
                    name = obj["metadata"]["name"]
                    status = {"observedGeneration": generation, "url": f"http://{name}.{self.namespace}.example.com",
                              "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
                    self.api.patch_namespaced_custom_object_status(
                        isvc.GROUP, isvc.VERSION, self.namespace, isvc.PLURAL, name, {"status": status}
                    )
            self.stop.wait(0.2)


def test_kserve_rollout_points_both_services_at_the_registered_bundle(tmp_path, monkeypatch, kube_api):
    # the real API server with KServe's CRD; the services are the dev overlay's, created as `kubectl apply` would
    reg = Registry(tmp_path / "reg")
    bundle = tmp_path / "bundle"
    for part in release.BUNDLE_PARTS:
        (bundle / part).mkdir(parents=True)
        (bundle / part / "f.txt").write_text(part)
    version = reg.register(release.MODEL_NAME, bundle, {}, run_id="r")
    uri = reg.version(release.MODEL_NAME, version).uri
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    rendered = subprocess.run(["kubectl", "kustomize", "manifests/overlays/dev"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[2]).stdout  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with kube_api.api_client() as kube:
        api = k8s.CustomObjectsApi(kube)
        for obj in yaml.safe_load_all(rendered):
            if obj and obj["kind"] == "InferenceService" and obj["metadata"]["name"] in release.INFERENCE_SERVICES:
                obj["metadata"]["namespace"] = namespace
                api.create_namespaced_custom_object(isvc.GROUP, isvc.VERSION, namespace, isvc.PLURAL, obj)
        kserve = KServeReadiness(kube, namespace)
        kserve.start()
        try:
            result = release._roll_out(
                DeployTarget("kserve", namespace), reg, release.MODEL_NAME, version, tmp_path, 60
            )
        finally:
            kserve.stop.set()
            kserve.join()
        for name in release.INFERENCE_SERVICES:
            stored = api.get_namespaced_custom_object(isvc.GROUP, isvc.VERSION, namespace, isvc.PLURAL, name)
            assert stored["spec"]["predictor"]["model"]["storageUri"] == uri
            assert result[name]["generation"] == stored["metadata"]["generation"] == 2
    assert set(result) == set(release.INFERENCE_SERVICES) == {"retrieval", "ranking"}


def release_from(artifacts: dict, deploy_dir: Path, version: int) -> Path:
    dest = deployment.release_dir(deploy_dir, version)
    for part in release.BUNDLE_PARTS:
        shutil.copytree(artifacts[part], dest / part, ignore=shutil.ignore_patterns("LOCK"))
    return dest


@pytest.mark.slow
def test_a_local_deploy_that_fails_to_start_leaves_the_previous_version_serving(tiny_artifacts, tmp_path):
    deploy_dir = tmp_path / "serving"
    release_from(tiny_artifacts, deploy_dir, 1)
    broken = release_from(tiny_artifacts, deploy_dir, 2)
    (broken / "ranking" / "model.pt").write_bytes(b"truncated")
    try:
        first = deployment.deploy(deploy_dir, 1, tiny_artifacts["features"], timeout_s=120)
        with pytest.raises(RuntimeError, match="v2 did not start, v1 serves again"):
            deployment.deploy(deploy_dir, 2, tiny_artifacts["features"], timeout_s=120)
        state = deployment.read_state(deploy_dir)
        assert state["version"] == 1 and state["status"] == "serving"
        assert {n: s["port"] for n, s in state["servers"].items()} == {
            n: s["port"] for n, s in first["servers"].items()
        }
        url = state["servers"]["homefeed"]["url"]
        answer = httpx.post(f"{url}/v1/models/homefeed:predict", json={"instances": [{"user_id": 1}]}, timeout=60)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["mode"] == "personalized"
    finally:
        stopped = deployment.undeploy(deploy_dir)
    assert stopped["status"] == "serving" and deployment.read_state(deploy_dir)["status"] == "stopped"
    pids = [s["pid"] for s in stopped["servers"].values()]
    assert not any(alive(pid) for pid in pids)
