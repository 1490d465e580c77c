"""The project image, run as the manifests run it: the retrieval and ranking predictors started as containers with
`podman kube play`, each from the pod KServe would make of its rendered InferenceService and ServingRuntime (dev
overlay; components/cluster/pods.py), with their securityContexts (uid 10001, read-only root filesystem, no
capabilities), args, env, resources and probes. Each must pass its own readiness probe and answer a request; nothing
is left running.

The bundle a pod reads at /mnt/models is the tiny world's (what the storage initializer would download), owned by
another user and not writable by the predictor's. The feature store is a local repository in place of the
ConfigMap's cluster configuration (Feast registry on S3, Redis). Needs podman and the image (`make image`; .ci/run
builds it); skips without them.
"""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
import yaml

from components.cluster import podman
from components.cluster.launcher import free_ports
from components.cluster.pods import find, predictor_pod
from components.index.corpus import read_corpus
from pipelines.ray_backend import IMAGE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if not podman.image_exists(IMAGE):
    pytest.skip(f"needs podman and the image {IMAGE} (make image)", allow_module_level=True)


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl renders the overlays (Debian package kubectl)")
    out = subprocess.run(["kubectl", "kustomize", "manifests/overlays/dev"], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def bundle(tiny_artifacts, tmp_path_factory):
    """A registry version's layout (retrieval/, ranking/, index/) and a feature repository, copied for the pods."""
    root = tmp_path_factory.mktemp("containers")
    for part in ("retrieval", "ranking", "index"):
        shutil.copytree(tiny_artifacts[part], root / "bundle" / part, ignore=shutil.ignore_patterns("LOCK", "work"))
    shutil.copytree(tiny_artifacts["features"], root / "features")
    return root


def served_pins(bundle, n: int) -> list[int]:
    pins, _ = read_corpus(bundle / "bundle" / "index" / "corpus")
    return [int(p) for p in pins.pin_id[:n]]


@pytest.mark.parametrize("name", ["retrieval", "ranking"])
def test_a_predictor_runs_as_its_manifests_say(rendered, bundle, tmp_path, name):
    if name == "retrieval":
        body, check = {"instances": [{"user_id": 3, "k": 5}]}, lambda p: len(p["candidates"]) == 5
    else:
        pins = served_pins(bundle, 3)
        body = {"instances": [{"user_id": 3, "candidates": pins}]}
        check = lambda p: sorted(s["pin_id"] for s in p["scores"]) == sorted(pins)  # noqa: E731
    isvc = find(rendered, "InferenceService", name)
    runtime = find(rendered, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
    (port,) = free_ports(1)
    pod = predictor_pod(
        isvc, runtime, bundle / "bundle",
        host_paths={"feature-store": bundle / "features"},
        host_ports={8080: port},
        # the Feast registry's S3 credentials (the registry here is local) and Redis' password (the online store here
        # is the bundle's SQLite, so it goes unused)
        secrets={"homefeed-registry-s3": {}, "homefeed-redis": {"password": "unused"}},
        scratch=tmp_path,
    )  # fmt: skip
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["securityContext"]["runAsUser"]
    with podman.played(pod, tmp_path):
        base = podman.wait_ready(pod)
        response = httpx.post(f"{base}/v1/models/{name}:predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["user_id"] == 3 and check(prediction), prediction
        whoami = podman.podman("exec", f"{pod['metadata']['name']}-{container['name']}", "id", "-u").stdout
        assert whoami.strip() == "10001"
    assert podman.containers(pod["metadata"]["name"]) == []


def test_the_evidently_ui_reads_its_workspace_only(rendered, tmp_path):
    """The Evidently UI's pod (its claim and mount read-only, `monitor ui --read-only`) on a claim folder the
    monitoring job has not written yet: ready with no projects; once the job has created its project, the project is
    listed, a DELETE is refused, the container cannot write the claim, and no file of it changes."""
    import contextlib
    import hashlib
    import os
    import time

    from components.cluster.pods import local_pod, workload_pod
    from monitoring.dashboard import PROJECT, open_project

    def tree() -> dict[str, str]:
        return {str(p.relative_to(claim)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
                for p in claim.rglob("*")}  # fmt: skip

    claim = tmp_path / "homefeed-monitoring"
    claim.mkdir()
    pod = workload_pod(find(rendered, "Deployment", "evidently-ui"))
    pod["metadata"]["name"] = f"evidently-ui-test{os.getpid()}"
    (port,) = free_ports(1)
    pod = local_pod(pod, {"workspace": claim}, {8000: port}, {}, tmp_path / "scratch")
    (container,) = pod["spec"]["containers"]
    assert {"name": "workspace", "mountPath": "/workspace", "readOnly": True} in container["volumeMounts"]
    with podman.played(pod, tmp_path):
        base = podman.wait_ready(pod, timeout_s=120)  # the readiness probe passes before the job's first run
        assert httpx.get(f"{base}/api/projects", timeout=10).json() == [] and tree() == {}
        open_project(claim / "monitoring" / "evidently")  # the monitoring job's first step, beside the pod
        deadline, projects = time.monotonic() + 60, []
        while not projects:  # the UI restarts on the workspace: a few seconds without an answer
            assert time.monotonic() < deadline, f"the project was not listed:\n{podman.logs(pod)}"
            time.sleep(1)
            with contextlib.suppress(httpx.HTTPError):
                projects = httpx.get(f"{base}/api/projects", timeout=10).json()
        assert [p["name"] for p in projects] == [PROJECT]
        before = tree()
        deleted = httpx.delete(f"{base}/api/v2/projects/{projects[0]['id']}", timeout=10)
        assert deleted.status_code == 403, deleted.text
        touched = podman.podman("exec", f"{pod['metadata']['name']}-{container['name']}", "touch",
                                "/workspace/monitoring/evidently/x", check=False)  # fmt: skip
        assert touched.returncode != 0 and "Read-only file system" in touched.stderr
        assert [p["name"] for p in httpx.get(f"{base}/api/projects", timeout=10).json()] == [PROJECT]
        assert tree() == before
    assert podman.containers(pod["metadata"]["name"]) == []
