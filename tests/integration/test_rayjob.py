"""components.cluster.rayjob against the real kubernetes client and a replayed Kubernetes API.

The RayJob body is checked field by field and against KubeRay's own CRD schema; the lifecycle tests replay the status
sequence KubeRay reports and check both the outcome and what was (or was not) sent: above all, that a timed-out or
interrupted step deletes its RayJob and a finished one leaves it to KubeRay's TTL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from recorded_api import FakeTime, RecordedAPI, load_fixture, replies, reply, vendored_crd_validator

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


# ---- the lifecycle


def test_happy_lifecycle_returns_the_final_status_and_leaves_cleanup_to_the_ttl(rayjob_schema):
    spec, t, seen = make_spec(), FakeTime(), []
    script = [
        created(),
        replies("GET", OBJECT, [f"kuberay/rayjob_{s}" for s in ("initializing", "pending", "running", "complete")]),
    ]
    with RecordedAPI(script) as api:
        status = run_rayjob(spec, api_client(api.url), poll_s=7.0, sleep=t.sleep, clock=t.clock, on_status=seen.append)
    api.assert_all_used()
    assert status == load_fixture("kuberay/rayjob_complete")["status"]
    (post,) = api.sent("POST")
    assert post.content_type == "application/json"
    assert post.body == rayjob_manifest(spec)
    assert schema_errors(rayjob_schema, post.body) == []
    assert api.sent("DELETE") == []
    assert [(s.get("jobDeploymentStatus"), s.get("jobStatus")) for s in seen] == [
        ("Initializing", None),
        ("Running", "PENDING"),
        ("Running", "RUNNING"),
        ("Complete", "SUCCEEDED"),
    ]
    assert t.sleeps == [7.0, 7.0, 7.0]


def test_unchanged_status_is_reported_once():
    t, seen = FakeTime(), []
    script = [created(), replies("GET", OBJECT, ["kuberay/rayjob_running"] * 3 + ["kuberay/rayjob_complete"])]
    with RecordedAPI(script) as api:
        run_rayjob(make_spec(), api_client(api.url), sleep=t.sleep, clock=t.clock, on_status=seen.append)
    api.assert_all_used()
    assert [s["jobStatus"] for s in seen] == ["RUNNING", "SUCCEEDED"]


def test_failed_job_raises_with_kuberays_message():
    t = FakeTime()
    script = [created(), replies("GET", OBJECT, ["kuberay/rayjob_running", "kuberay/rayjob_failed"])]
    with RecordedAPI(script) as api, pytest.raises(RayJobFailed, match="exit code 1") as info:
        run_rayjob(make_spec(), api_client(api.url), sleep=t.sleep, clock=t.clock)
    api.assert_all_used()
    assert info.value.status["reason"] == "AppFailed"
    assert "No such file or directory: '/workspace/data/events'" in str(info.value)
    assert NAME in str(info.value)
    # Left for KubeRay's TTL, so the failed cluster's logs can still be read.
    assert api.sent("DELETE") == []


def test_complete_but_stopped_is_a_failure():
    stopped = load_fixture("kuberay/rayjob_complete")
    stopped["status"].update(jobStatus="STOPPED", message="Job was intentionally stopped.")
    t = FakeTime()
    with (
        RecordedAPI([created(), reply("GET", OBJECT, body=stopped)]) as api,
        pytest.raises(RayJobFailed, match="jobStatus=STOPPED.*intentionally stopped"),
    ):
        run_rayjob(make_spec(), api_client(api.url), sleep=t.sleep, clock=t.clock)
    api.assert_all_used()


def test_timeout_deletes_the_rayjob_then_raises():
    t = FakeTime()
    # Deadline at t=25 with a 10 s poll: GETs at t=0, 10, 20 and 30; the last one is past it.
    script = [
        created(),
        replies("GET", OBJECT, ["kuberay/rayjob_running"] * 4),
        reply("DELETE", OBJECT, fixture="kuberay/rayjob_deleting", query={"propagationPolicy": "Background"}),
    ]
    with RecordedAPI(script) as api, pytest.raises(TimeoutError, match=f"{NAME} did not finish within 25 s") as info:
        run_rayjob(make_spec(), api_client(api.url), poll_s=10.0, timeout_s=25.0, sleep=t.sleep, clock=t.clock)
    api.assert_all_used()
    assert t.sleeps == [10.0, 10.0, 10.0]
    assert any("was deleted" in note for note in info.value.__notes__)


def test_interruption_while_polling_deletes_the_rayjob():
    def interrupt(status: dict) -> None:
        if status.get("jobStatus") == "RUNNING":
            raise KeyboardInterrupt

    t = FakeTime()
    script = [
        created(),
        replies("GET", OBJECT, ["kuberay/rayjob_initializing", "kuberay/rayjob_running"]),
        reply("DELETE", OBJECT, fixture="kuberay/rayjob_deleting", query={"propagationPolicy": "Background"}),
    ]
    with RecordedAPI(script) as api, pytest.raises(KeyboardInterrupt):
        run_rayjob(make_spec(), api_client(api.url), sleep=t.sleep, clock=t.clock, on_status=interrupt)
    api.assert_all_used()


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


def test_an_existing_rayjob_is_not_adopted():
    script = [reply("POST", COLLECTION, status=409, fixture="kuberay/status_already_exists")]
    with (
        RecordedAPI(script) as api,
        pytest.raises(RuntimeError, match=f"RayJob homefeed/{NAME} already exists.*refusing to adopt") as info,
    ):
        run_rayjob(make_spec(), api_client(api.url))
    api.assert_all_used()
    assert isinstance(info.value.__cause__, ApiException) and info.value.__cause__.status == 409
    assert [r.method for r in api.requests] == ["POST"]


def test_the_fake_server_is_loud_about_unscripted_requests():
    with (
        RecordedAPI([created()]) as api,
        pytest.raises(RuntimeError, match="HTTP 501.*unexpected request GET /apis/ray.io/v1"),
    ):
        run_rayjob(make_spec(), api_client(api.url), timeout_s=0.0, sleep=lambda s: None)
        with pytest.raises(AssertionError, match=f"unexpected request: GET {OBJECT}"):
            api.assert_all_used()


def test_a_rejected_body_surfaces_the_api_message():
    invalid = {
        "kind": "Status",
        "code": 422,
        "reason": "Invalid",
        "message": f'RayJob.ray.io "{NAME}" is invalid: spec.activeDeadlineSeconds: Invalid value: "string"',
    }
    with RecordedAPI([reply("POST", COLLECTION, status=422, body=invalid)]) as api, pytest.raises(RuntimeError) as info:
        run_rayjob(make_spec(), api_client(api.url))
    api.assert_all_used()
    assert str(info.value) == (
        f"creating RayJob homefeed/{NAME} failed with HTTP 422 Unprocessable Entity: {invalid['message']}"
    )


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
