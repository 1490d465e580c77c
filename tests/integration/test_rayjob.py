"""components.cluster.rayjob with the real kubernetes client, against a real Kubernetes API server.

The RayJob body is checked field by field and against KubeRay's own CRD schema; the lifecycle tests run against a
real API server serving KubeRay's CRD (`kube_api`), with the statuses KubeRay reports written by the test in its
place, and check both the outcome and what is left on the server: above all, that a timed-out or interrupted step
deletes its RayJob and a finished one leaves it to KubeRay's TTL. Two failures the server cannot be made to produce
(an etcd timeout, a forbidden DELETE) are replayed (tests/recorded_api.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from played_kuberay import ScriptedKubeRay
from recorded_api import FakeTime, RecordedAPI, load_fixture, reply, vendored_crd_validator

from components.cluster.kube import api_client, current_namespace
from components.cluster.rayjob import (
    MAX_NAME_LENGTH,
    RayJobFailed,
    RayJobSpec,
    rayjob_manifest,
    rayjob_name,
    run_rayjob,
)

pytestmark = pytest.mark.integration

NAME = "train-retrieval-3c1f0a9e2b"  # the name the recorded bodies carry
COLLECTION = "/apis/ray.io/v1/namespaces/homefeed/rayjobs"
OBJECT = f"{COLLECTION}/{NAME}"


def make_spec(**overrides) -> RayJobSpec:
    fields = {
        "name": NAME,
        "namespace": "homefeed",
        "image": "ghcr.io/homefeed/trainer:0.1.0",
        "entrypoint": "python -m components.train.retrieval --data /workspace/data --out /workspace/out/retrieval",
        "runtime_env": {"env_vars": {"HOMEFEED_SEED": "3"}},
        "workers": 2,
        "worker_cpu": "4",
        "worker_memory": "16Gi",
        "head_cpu": "1",
        "head_memory": "4Gi",
        "pvc_name": "homefeed-workspace",
        "mount_path": "/workspace",
        "service_account": "homefeed-ray",
        "labels": {"app.kubernetes.io/part-of": "homefeed", "homefeed.io/step": "train-retrieval"},
    }
    return RayJobSpec(**{**fields, **overrides})


@pytest.fixture(scope="module")
def rayjob_schema():
    # The schema vendored in tests/fixtures/crds (upstream and commit in SOURCES.md there), so this runs on a clone.
    return vendored_crd_validator("ray.io_rayjobs.yaml", "v1")


def schema_errors(validator, body: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def created(status: int = 201) -> object:
    return reply("POST", COLLECTION, status=status, fixture="kuberay/rayjob_created")


def containers(manifest: dict) -> dict[str, dict]:
    cluster = manifest["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]]
    pods.append(manifest["spec"]["submitterPodTemplate"])
    return {c["name"]: c for pod in pods for c in pod["spec"]["containers"]}


# ---- the manifest


def test_manifest_validates_against_the_kuberay_crd(rayjob_schema):
    assert schema_errors(rayjob_schema, rayjob_manifest(make_spec())) == []
    assert schema_errors(rayjob_schema, rayjob_manifest(make_spec(worker_gpus=1, pvc_name=None))) == []


def test_the_schema_check_catches_a_misspelt_field(rayjob_schema):
    # The API server would silently prune an unknown field; the strict validator must flag it instead.
    body = rayjob_manifest(make_spec())
    body["spec"]["shutdownAfterJobFinish"] = body["spec"].pop("shutdownAfterJobFinishes")
    errors = schema_errors(rayjob_schema, body)
    assert errors and "shutdownAfterJobFinish" in errors[0]


@pytest.mark.parametrize("name", ["created", "initializing", "pending", "running", "complete", "failed", "deleting"])
def test_recorded_rayjob_bodies_follow_the_crd(rayjob_schema, name):
    assert schema_errors(rayjob_schema, load_fixture(f"kuberay/rayjob_{name}")) == []


def test_manifest_content():
    import ray

    spec = make_spec()
    m = rayjob_manifest(spec)
    assert (m["apiVersion"], m["kind"]) == ("ray.io/v1", "RayJob")
    assert m["metadata"] == {"name": NAME, "namespace": "homefeed", "labels": spec.labels}
    s = m["spec"]
    assert s["shutdownAfterJobFinishes"] is True
    assert (s["ttlSecondsAfterFinished"], s["activeDeadlineSeconds"]) == (600, 6 * 3600)
    assert s["submissionMode"] == "K8sJobMode"
    assert s["entrypoint"] == spec.entrypoint
    assert yaml.safe_load(s["runtimeEnvYAML"]) == {"env_vars": {"HOMEFEED_SEED": "3"}}
    cluster = s["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["headGroupSpec"]["rayStartParams"] == {"dashboard-host": "0.0.0.0", "num-cpus": "0"}
    (group,) = cluster["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == ("workers", 2, 2, 2)

    by_name = containers(m)
    assert set(by_name) == {"ray-head", "ray-worker", "ray-job-submitter"}
    for c in by_name.values():
        assert c["image"] == spec.image
        assert c["resources"]["requests"] == c["resources"]["limits"]
        assert c["securityContext"] == {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    assert by_name["ray-head"]["resources"]["limits"] == {"cpu": "1", "memory": "4Gi"}
    assert by_name["ray-worker"]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    # No command: KubeRay then fills in its own `ray job submit`.
    assert "command" not in by_name["ray-job-submitter"]
    assert s["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"

    for pod in (cluster["headGroupSpec"]["template"], group["template"]):
        assert pod["spec"]["serviceAccountName"] == "homefeed-ray"
        assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "homefeed-workspace"}} in pod["spec"][
            "volumes"
        ]
        assert {"name": "ray-tmp", "emptyDir": {}} in pod["spec"]["volumes"]
        mounts = {v["mountPath"]: v["name"] for v in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts == {"/workspace": "workspace", "/tmp": "ray-tmp"}


def test_gpus_are_requested_only_when_asked_for():
    assert "nvidia.com/gpu" not in json.dumps(rayjob_manifest(make_spec(worker_gpus=0)))
    by_name = containers(rayjob_manifest(make_spec(worker_gpus=2)))
    worker = by_name["ray-worker"]["resources"]
    assert worker["requests"]["nvidia.com/gpu"] == worker["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in json.dumps(by_name["ray-head"]) + json.dumps(by_name["ray-job-submitter"])


def test_without_a_pvc_only_tmp_is_mounted():
    m = rayjob_manifest(make_spec(pvc_name=None))
    head = m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"] == [{"name": "ray-tmp", "emptyDir": {}}]
    assert head["containers"][0]["volumeMounts"] == [{"name": "ray-tmp", "mountPath": "/tmp"}]


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"name": "Train_Retrieval"}, "DNS-1035"),
        ({"name": "3-train"}, "DNS-1035"),
        ({"name": "train-"}, "DNS-1035"),
        ({"name": "a" * (MAX_NAME_LENGTH + 1)}, "at most 47"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"worker_gpus": -1}, "worker_gpus"),
        ({"worker_memory": "16 GB"}, "worker_memory"),
        ({"active_deadline_seconds": 0}, "active_deadline_seconds"),
    ],
)
def test_invalid_specs_are_rejected_before_any_request(overrides, complaint):
    with RecordedAPI([]) as api, pytest.raises(ValueError, match=complaint):
        run_rayjob(make_spec(**overrides), api_client(api.url))
        assert api.requests == []


def test_rayjob_name_is_valid_stable_and_unique():
    a = rayjob_name("Train Retrieval (two-tower)", "run-7f3e/task-train")
    assert a == rayjob_name("Train Retrieval (two-tower)", "run-7f3e/task-train")
    assert a.startswith("train-retrieval-two-tower-")
    assert a != rayjob_name("Train Retrieval (two-tower)", "run-7f3e/task-train-retry")
    for prefix in ("x" * 200, "9-lives", "__", "Ranking.TransAct/v2"):
        name = rayjob_name(prefix, "run-1")
        assert make_spec(name=name).name == name  # passes the spec's own validation
        assert len(name) <= MAX_NAME_LENGTH
    with pytest.raises(ValueError, match="unique"):
        rayjob_name("train", "")


# ---- the lifecycle, against the real API server (tests/integration/conftest.py `kube_api`)
#
# The server is real: it stores the RayJob, validates it against KubeRay's CRD, defaults it, answers 404/409/422 as
# it would on a cluster. KubeRay is not running, so the test writes the statuses it would, between two polls
# (tests/played_kuberay.py). Only what this server cannot be made to answer is still replayed (an etcd timeout, a
# forbidden DELETE), further down.


def status_of(name: str) -> dict:
    return load_fixture(f"kuberay/rayjob_{name}")["status"]


def stored(kube, namespace: str, name: str = NAME) -> dict | None:
    try:
        return client.CustomObjectsApi(kube).get_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def is_subset(part, whole) -> bool:
    """Every field of `part` is in `whole` with the same value (`whole` may have more: the server's defaults)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and is_subset(v, whole[k]) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(part) == len(whole) and all(map(is_subset, part, whole))
    return part == whole


def test_happy_lifecycle_returns_the_final_status_and_leaves_cleanup_to_the_ttl(kube, namespace):
    spec, seen = make_spec(namespace=namespace), []
    kuberay = ScriptedKubeRay(kube, namespace, NAME, map(status_of, ("initializing", "pending", "running", "complete")))
    status = run_rayjob(spec, kube, poll_s=7.0, sleep=kuberay.sleep, clock=kuberay.clock, on_status=seen.append)
    assert status["jobDeploymentStatus"] == "Complete" and status["jobStatus"] == "SUCCEEDED"
    obj = stored(kube, namespace)
    assert obj is not None  # not deleted: KubeRay's TTL removes it
    # everything the code sent was kept (nothing pruned as unknown to KubeRay's schema) ...
    assert is_subset(rayjob_manifest(spec)["spec"], obj["spec"])
    # ... and the server added upstream's defaults, which the replayed responses only echoed
    assert obj["spec"]["backoffLimit"] == 0
    # KubeRay has not seen the object yet at the first read: no status
    assert [(s.get("jobDeploymentStatus"), s.get("jobStatus")) for s in seen] == [
        (None, None),
        ("Initializing", None),
        ("Running", "PENDING"),
        ("Running", "RUNNING"),
        ("Complete", "SUCCEEDED"),
    ]
    assert kuberay.sleeps == [7.0] * 4


def test_unchanged_status_is_reported_once(kube, namespace):
    seen = []
    kuberay = ScriptedKubeRay(kube, namespace, NAME, [status_of("running")] * 3 + [status_of("complete")])
    run_rayjob(make_spec(namespace=namespace), kube, sleep=kuberay.sleep, clock=kuberay.clock, on_status=seen.append)
    assert [s.get("jobStatus") for s in seen] == [None, "RUNNING", "SUCCEEDED"]


def test_failed_job_raises_with_kuberays_message(kube, namespace):
    kuberay = ScriptedKubeRay(kube, namespace, NAME, [status_of("running"), status_of("failed")])
    with pytest.raises(RayJobFailed, match="exit code 1") as info:
        run_rayjob(make_spec(namespace=namespace), kube, sleep=kuberay.sleep, clock=kuberay.clock)
    assert info.value.status["reason"] == "AppFailed"
    assert "No such file or directory: '/workspace/data/events'" in str(info.value)
    assert NAME in str(info.value)
    # Left for KubeRay's TTL, so the failed cluster's logs can still be read.
    assert stored(kube, namespace)["status"]["jobDeploymentStatus"] == "Failed"


def test_complete_but_stopped_is_a_failure(kube, namespace):
    stopped = status_of("complete") | {"jobStatus": "STOPPED", "message": "Job was intentionally stopped."}
    kuberay = ScriptedKubeRay(kube, namespace, NAME, [stopped])
    with pytest.raises(RayJobFailed, match="jobStatus=STOPPED.*intentionally stopped"):
        run_rayjob(make_spec(namespace=namespace), kube, sleep=kuberay.sleep, clock=kuberay.clock)


def test_timeout_deletes_the_rayjob_then_raises(kube, namespace):
    kuberay = ScriptedKubeRay(kube, namespace, NAME, [status_of("running")])
    # Deadline at t=25 with a 10 s poll: reads at t=0, 10, 20 and 30; the last one is past it.
    with pytest.raises(TimeoutError, match=f"{NAME} did not finish within 25 s") as info:
        run_rayjob(make_spec(namespace=namespace), kube, poll_s=10.0, timeout_s=25.0, sleep=kuberay.sleep,
                   clock=kuberay.clock)  # fmt: skip
    assert kuberay.sleeps == [10.0, 10.0, 10.0]
    assert any("was deleted" in note for note in info.value.__notes__)
    assert stored(kube, namespace) is None


def test_interruption_while_polling_deletes_the_rayjob(kube, namespace):
    def interrupt(status: dict) -> None:
        if status.get("jobStatus") == "RUNNING":
            raise KeyboardInterrupt

    kuberay = ScriptedKubeRay(kube, namespace, NAME, [status_of("initializing"), status_of("running")])
    with pytest.raises(KeyboardInterrupt):
        run_rayjob(make_spec(namespace=namespace), kube, sleep=kuberay.sleep, clock=kuberay.clock,
                   on_status=interrupt)  # fmt: skip
    assert stored(kube, namespace) is None


def test_an_existing_rayjob_is_not_adopted(kube, namespace):
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayjobs", rayjob_manifest(make_spec(namespace=namespace, workers=1))
    )
    with pytest.raises(RuntimeError, match=f"RayJob {namespace}/{NAME} already exists.*refusing to adopt") as info:
        run_rayjob(make_spec(namespace=namespace), kube)
    assert isinstance(info.value.__cause__, ApiException) and info.value.__cause__.status == 409
    # the earlier one is left as it was
    assert stored(kube, namespace)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 1


def test_a_rejected_body_surfaces_the_api_message(kube, namespace):
    # A label value Kubernetes does not allow passes our spec's checks; the server refuses the object with 422.
    spec = make_spec(namespace=namespace, labels={"homefeed.io/step": "train retrieval!"})
    with pytest.raises(RuntimeError) as info:
        run_rayjob(spec, kube)
    message = str(info.value)
    assert message.startswith(f"creating RayJob {namespace}/{NAME} failed with HTTP 422 Unprocessable Entity: ")
    assert "metadata.labels" in message and "train retrieval!" in message
    assert stored(kube, namespace) is None


# ---- replayed: what the real server cannot be made to answer here


def test_api_error_while_polling_deletes_the_rayjob_and_says_why():
    t = FakeTime()
    script = [
        created(),
        reply("GET", OBJECT, fixture="kuberay/rayjob_running"),
        reply(
            "GET", OBJECT, status=500, body={"kind": "Status", "code": 500, "message": "etcdserver: request timed out"}
        ),
        reply("DELETE", OBJECT, fixture="kuberay/rayjob_deleting", query={"propagationPolicy": "Background"}),
    ]
    with (
        RecordedAPI(script) as api,
        pytest.raises(RuntimeError, match=f"reading RayJob homefeed/{NAME} failed with HTTP 500.*etcdserver"),
    ):
        run_rayjob(make_spec(), api_client(api.url), sleep=t.sleep, clock=t.clock)
    api.assert_all_used()


def test_a_failed_cleanup_is_noted_without_hiding_the_timeout():
    # no RBAC on the loopback server (its only user is in system:masters): a forbidden DELETE is replayed
    t = FakeTime()
    script = [
        created(),
        reply("GET", OBJECT, fixture="kuberay/rayjob_running"),
        reply("DELETE", OBJECT, status=403, body={"kind": "Status", "code": 403, "message": "rayjobs is forbidden"}),
    ]
    with RecordedAPI(script) as api, pytest.raises(TimeoutError) as info:
        run_rayjob(make_spec(), api_client(api.url), timeout_s=0.0, sleep=t.sleep, clock=t.clock)
    api.assert_all_used()
    (note,) = info.value.__notes__
    assert "HTTP 403: rayjobs is forbidden" in note and f"kubectl -n homefeed delete rayjob {NAME}" in note


def test_the_fake_server_is_loud_about_unscripted_requests():
    with (
        RecordedAPI([created()]) as api,
        pytest.raises(RuntimeError, match="HTTP 501.*unexpected request GET /apis/ray.io/v1"),
    ):
        run_rayjob(make_spec(), api_client(api.url), timeout_s=0.0, sleep=lambda s: None)
        with pytest.raises(AssertionError, match=f"unexpected request: GET {OBJECT}"):
            api.assert_all_used()


# ---- components.cluster.kube, which every cluster module builds its client with


def test_api_client_for_an_explicit_host():
    assert api_client("http://127.0.0.1:6443/").configuration.host == "http://127.0.0.1:6443"


def test_api_client_without_any_configuration_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(RuntimeError, match="no Kubernetes API server configured: not running in a pod"):
        api_client()


def test_api_client_in_a_pod_without_credentials_says_so(monkeypatch):
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("this machine is a pod with a service-account token: in-cluster config would succeed")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(RuntimeError, match="in-cluster config failed"):
        api_client()


def test_current_namespace_reads_the_service_account_mount(tmp_path):
    mount = tmp_path / "namespace"
    assert current_namespace(path=mount) == "homefeed"
    assert current_namespace(default="elsewhere", path=mount) == "elsewhere"
    mount.write_text("homefeed-staging\n")
    assert current_namespace(path=mount) == "homefeed-staging"
