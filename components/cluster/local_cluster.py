"""The dev overlay as containers on this machine: `homefeed cluster up|down|status`, and the deploy target
`podman:<dir>` that rolls a release out to it.

Every workload runs from the rendered manifests (`kubectl kustomize manifests/overlays/dev`), made into pods by
components/cluster/pods.py and started with `podman kube play` on a bridge network of the cluster's own, each pod at
a fixed address that the other pods reach by its Service's names:

    up        Milvus (the Milvus CR), Redis (StatefulSet), the Evidently UI (Deployment), and the release last
              deployed, if any
    deploy    the release: the retrieval and ranking predictors (InferenceServices on their ServingRuntimes), the
              homefeed predictor (a custom-container InferenceService) and the stream processor (Deployment)

A cluster directory holds

    cluster.json             the state: network, subnet, each workload's pod and address, the version served
    pods/<pod>.yaml          what each pod was played from
    volumes/<claim>/         the PersistentVolumeClaims (homefeed-work holds events/actions.jsonl, the log the stream
                             processor follows), owned by the pods' fsGroup
    config/<configmap>/      a ConfigMap's files; the Feast configuration's registry is a file here (its data/
                             registry.db, copied from the deployed run's features), as no object storage runs here
    releases/v<N>/           the bundle the predictors serve (retrieval/ ranking/ index/), what KServe's storage
                             initializer would download
    scratch/<pod>/<volume>/  the pods' emptyDirs, emptied each time a pod starts

Needs rootful podman (pod addresses are reached from this machine), kubectl and the images `make image` builds. A
release must have been built against this cluster's stores (`client_settings`: the pipeline's online store is its
Redis, the index on its Milvus or a Milvus Lite file), which `deploy` checks before anything stops.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import yaml

from components.artifacts import read_json
from components.cluster import podman
from components.cluster.pods import (
    MILVUS_HEALTH_PORT,
    MILVUS_PORT,
    PREDICTOR_PORT,
    Service,
    find,
    kserve_pod,
    local_pod,
    milvus_pod,
    with_services,
    workload_pod,
)

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "manifests" / "overlays" / "dev"
STATE_FILE = "cluster.json"
MILVUS_IMAGE = "localhost/homefeed-milvus:2.3.5"  # image/milvus.Containerfile
# Milvus 2.3.5 has no `common.security.defaultRootPassword` (the CR's Secret cannot set it): its root user keeps the
# built-in password, which the local Secret therefore holds.
MILVUS_ROOT_PASSWORD = "Milvus"
FEATURE_STORE_CONFIGMAP = "homefeed-feature-store"
REGISTRY_FILE = "data/registry.db"  # the Feast registry, relative to the feature repository as the pipeline writes it
BUNDLE_PARTS = ("retrieval", "ranking", "index")


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str  # the manifest object's name
    host: int  # the pod's address is the cluster subnet's address number `host`


INFRA = (Workload("Milvus", "homefeed-milvus", 10), Workload("StatefulSet", "redis", 11),
         Workload("Deployment", "evidently-ui", 12), Workload("Deployment", "actions", 13))  # fmt: skip
RELEASE = (Workload("InferenceService", "retrieval", 20), Workload("InferenceService", "ranking", 21),
           Workload("InferenceService", "homefeed", 22), Workload("Deployment", "stream-processor", 30))  # fmt: skip


@dataclass
class ClusterState:
    name: str
    network: str
    subnet: str
    namespace: str
    version: int | None = None
    deployed_at: str | None = None
    # Redis's requirepass (the Secret homefeed-redis), made when the cluster is first made; hex, as Feast's
    # connection string needs (components/features/online_store.py).
    redis_password: str = field(default_factory=lambda: secrets.token_hex(24))
    up_seconds: float | None = None
    pods: dict[str, str] = field(default_factory=dict)  # workload name -> pod name, for the pods played

    def address(self, workload: Workload) -> str:
        return str(ipaddress.ip_network(self.subnet)[workload.host])

    @property
    def milvus_uri(self) -> str:
        return f"http://{self.address(INFRA[0])}:{MILVUS_PORT}"

    @property
    def redis(self) -> str:
        return f"redis://{self.address(INFRA[1])}:6379/0"

    def write(self, cluster_dir: Path) -> None:
        path = Path(cluster_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.chmod(0o600)  # it holds Redis's password
        tmp.replace(path)

    @classmethod
    def read(cls, cluster_dir: Path) -> ClusterState | None:
        path = Path(cluster_dir) / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def release_dir(cluster_dir: Path, version: int) -> Path:
    return Path(cluster_dir) / "releases" / f"v{version}"


def client_settings(cluster_dir: Path) -> dict:
    """What a pipeline run that deploys to this cluster builds against: {"online_store", "index_uri", "milvus_token",
    "redis_password"}."""
    state = _required_state(cluster_dir)
    return {
        "online_store": state.redis,
        "index_uri": state.milvus_uri,
        "milvus_token": f"root:{MILVUS_ROOT_PASSWORD}",
        "redis_password": state.redis_password,
    }


def render(overlay: Path = OVERLAY) -> list[dict]:
    """The overlay's objects, as `kubectl apply -k` would send them."""
    if shutil.which("kubectl") is None:
        raise FileNotFoundError("kubectl renders the manifests (Debian package kubectl)")
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def up(cluster_dir: Path, name: str = "homefeed", timeout_s: float = 300.0) -> ClusterState:
    """Start the cluster's stores and UI, and the release last deployed; returns the state once all are ready.
    Pods already running are replaced, so `up` also repairs a cluster."""
    cluster_dir = Path(cluster_dir).resolve()
    cluster_dir.mkdir(parents=True, exist_ok=True)
    docs = render()
    start = time.monotonic()
    state = ClusterState.read(cluster_dir) or _new_state(name, docs)
    podman.network_create(state.network, state.subnet)
    workloads = INFRA + (RELEASE if state.version is not None else ())
    _start(cluster_dir, state, docs, workloads, timeout_s)
    state.up_seconds = round(time.monotonic() - start, 1)
    state.write(cluster_dir)
    return state


def deploy(cluster_dir: Path, version: int, features_dir: Path, timeout_s: float = 300.0) -> dict:
    """Serve `release_dir(cluster_dir, version)` (already fetched) with the Feast registry of `features_dir`: the
    release's workloads are played anew. When they do not become ready, the previous version is played again and
    RuntimeError says so. Returns a summary: version, pods, addresses, seconds."""
    cluster_dir = Path(cluster_dir).resolve()
    state = _required_state(cluster_dir)
    bundle = release_dir(cluster_dir, version)
    _check_release(state, bundle, Path(features_dir))
    docs = render()
    previous = state.version
    _write_registry(cluster_dir, Path(features_dir))
    start = time.monotonic()
    state.version = version
    try:
        _start(cluster_dir, state, docs, RELEASE, timeout_s)
    except RuntimeError as exc:
        state.version = previous
        if previous is None:
            _stop(cluster_dir, state, RELEASE)
            state.write(cluster_dir)
            raise RuntimeError(f"v{version} did not start: {exc}") from exc
        _start(cluster_dir, state, docs, RELEASE, timeout_s)
        state.write(cluster_dir)
        raise RuntimeError(f"v{version} did not start, v{previous} serves again: {exc}") from exc
    state.deployed_at = datetime.now(UTC).isoformat()
    state.write(cluster_dir)
    return {
        "version": version,
        "cluster": str(cluster_dir),
        "seconds": round(time.monotonic() - start, 1),
        "urls": {w.name: _url(_played(cluster_dir, state.pods[w.name]), state.address(w)) for w in RELEASE},
    }


def down(cluster_dir: Path) -> list[str]:
    """Stop and remove every pod of the cluster and its network; the volumes and releases stay (`up` resumes).
    Returns the pods removed."""
    cluster_dir = Path(cluster_dir).resolve()
    state = ClusterState.read(cluster_dir)
    if state is None:
        return []
    removed = _stop(cluster_dir, state, INFRA + RELEASE)
    podman.network_remove(state.network)
    state.write(cluster_dir)
    return removed


def status(cluster_dir: Path) -> list[dict]:
    """Each workload: its pod, the containers' states, whether it passes its readiness probe, and its URL."""
    cluster_dir = Path(cluster_dir).resolve()
    state = _required_state(cluster_dir)
    rows = []
    for workload in INFRA + RELEASE:
        pod_name = state.pods.get(workload.name)
        states = (
            [c["state"] for c in podman.containers(pod_name) if not c["name"].endswith("-infra")] if pod_name else []
        )
        pod = _played(cluster_dir, pod_name) if pod_name and states else None
        rows.append({
            "workload": workload.name,
            "kind": workload.kind,
            "pod": pod_name if states else None,
            "state": ", ".join(states) or "not running",
            "ready": bool(pod) and podman.ready(pod, state.address(workload)),
            "url": _url(pod, state.address(workload)) if pod else None,
        })  # fmt: skip
    return rows


def _new_state(name: str, docs: list[dict]) -> ClusterState:
    namespace = next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    taken = {ipaddress.ip_network(s) for s in podman.subnets()}
    for third in range(100, 250):
        subnet = ipaddress.ip_network(f"10.89.{third}.0/24")
        if not any(subnet.overlaps(t) for t in taken):
            return ClusterState(name=name, network=name, subnet=str(subnet), namespace=namespace)
    raise RuntimeError("no free 10.89.x.0/24 subnet for the cluster's network")


def _required_state(cluster_dir: Path) -> ClusterState:
    state = ClusterState.read(cluster_dir)
    if state is None:
        raise FileNotFoundError(
            f"no cluster in {cluster_dir}: start one with `homefeed cluster up --dir {cluster_dir}`"
        )
    return state


def _check_release(state: ClusterState, bundle: Path, features_dir: Path) -> None:
    """Refuse a release the cluster's pods could not serve, before anything is stopped."""
    for part in BUNDLE_PARTS:
        if not (bundle / part).is_dir():
            raise FileNotFoundError(f"release {bundle} has no {part}/ folder")
    uri = read_json(bundle / "index", "index.json", "index")["uri"]  # components/index/bundle.py
    if "://" in uri and uri.rstrip("/") != state.milvus_uri:
        raise ValueError(
            f"the release's index is on {uri}, which this cluster's pods do not reach; build it on the "
            f"cluster's Milvus (index_uri={state.milvus_uri}) or as a Milvus Lite file (index_uri empty)"
        )
    config = yaml.safe_load((features_dir / "feature_store.yaml").read_text())
    online = config.get("online_store", {})
    host_port = online.get("connection_string", "").split(",")[0]
    if online.get("type") != "redis" or host_port != urlparse(state.redis).netloc:
        raise ValueError(
            f"the release's features were written to the online store {online}, not this cluster's Redis: run the "
            f"pipeline with online_store={state.redis}"
        )
    if not (features_dir / REGISTRY_FILE).is_file():
        raise FileNotFoundError(f"{features_dir} has no Feast registry ({REGISTRY_FILE})")


def _write_registry(cluster_dir: Path, features_dir: Path) -> None:
    target = cluster_dir / "config" / FEATURE_STORE_CONFIGMAP / REGISTRY_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(features_dir / REGISTRY_FILE, tmp)
    tmp.chmod(0o644)
    tmp.replace(target)  # a reader sees the old registry or the new one, never half of one


def _start(cluster_dir: Path, state: ClusterState, docs: list[dict], workloads: tuple, timeout_s: float) -> None:
    """Play `workloads` (replacing their pods) and wait until each is ready; RuntimeError naming the first that is
    not. All are played before any is waited for, so they start side by side."""
    pods = _pods(cluster_dir, state, docs)
    for image in sorted({c["image"] for w in workloads for c in pods[w.name]["spec"]["containers"]}):
        if not podman.image_exists(image):
            raise FileNotFoundError(f"image {image} is missing: build it with `make image`")
    for workload in workloads:
        pod = pods[workload.name]
        podman.play(pod, cluster_dir / "pods", state.network, state.address(workload))
        state.pods[workload.name] = pod["metadata"]["name"]
        state.write(cluster_dir)
    deadline = time.monotonic() + timeout_s
    for workload in workloads:
        podman.wait_ready(pods[workload.name], max(1.0, deadline - time.monotonic()), state.address(workload))


def _stop(cluster_dir: Path, state: ClusterState, workloads: tuple) -> list[str]:
    removed = []
    for workload in reversed(workloads):
        pod_name = state.pods.pop(workload.name, None)
        path = cluster_dir / "pods" / f"{pod_name}.yaml"
        if pod_name and path.exists():
            podman.down(path)
            removed.append(pod_name)
    return removed


def _played(cluster_dir: Path, pod_name: str) -> dict | None:
    path = Path(cluster_dir) / "pods" / f"{pod_name}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _secrets(state: ClusterState) -> dict[str, dict[str, str]]:
    """The Secrets the workloads name, as this machine fills them: no object storage credentials (the registry is a
    file here), Milvus's root user and the cluster's Redis password."""
    return {
        "homefeed-registry-s3": {},
        "homefeed-milvus": {"password": MILVUS_ROOT_PASSWORD, "token": f"root:{MILVUS_ROOT_PASSWORD}"},
        "homefeed-redis": {"password": state.redis_password},
    }


def _cluster_pods(docs: list[dict], bundle: Path) -> dict[str, dict]:
    """Each workload's pod as the cluster would run it (pods.py), before the local rules; the predictors read
    `bundle` (played only once a release exists)."""
    pods = {}
    for w in INFRA + RELEASE:
        obj = find(docs, w.kind, w.name)
        if w.kind == "Milvus":
            pods[w.name] = milvus_pod(obj, MILVUS_IMAGE)
        elif w.kind == "InferenceService":
            model = obj["spec"]["predictor"].get("model")
            runtime = find(docs, "ServingRuntime", model["runtime"]) if model else None
            pods[w.name] = kserve_pod(obj, runtime, bundle)
        else:
            pods[w.name] = workload_pod(obj)
    return pods


def _services(state: ClusterState, docs: list[dict], pods: dict[str, dict]) -> list[Service]:
    """The Services the pods reach each other by: the rendered ones, and those the operators would create (KServe's
    `<name>-predictor` on port 80, the Milvus operator's `<name>-milvus`)."""
    by_workload = {w.name: w for w in INFRA + RELEASE}
    services = []
    for doc in docs:
        if doc["kind"] != "Service":
            continue
        selector = doc["spec"].get("selector", {})
        for wname, pod in pods.items():
            if selector and selector.items() <= pod["metadata"]["labels"].items():
                container = pod["spec"]["containers"][0]
                ports = {
                    p["port"]: podman.port_number(container, p.get("targetPort", p["port"]))
                    for p in doc["spec"]["ports"]
                }
                services.append(
                    Service(doc["metadata"]["name"], state.namespace, state.address(by_workload[wname]), ports)
                )
    for w in INFRA + RELEASE:
        if w.kind == "InferenceService":
            port = pods[w.name]["spec"]["containers"][0]["ports"][0]["containerPort"]
            services.append(Service(f"{w.name}-predictor", state.namespace, state.address(w), {PREDICTOR_PORT: port}))
        elif w.kind == "Milvus":
            ports = {MILVUS_PORT: MILVUS_PORT, MILVUS_HEALTH_PORT: MILVUS_HEALTH_PORT}
            services.append(Service(f"{w.name}-milvus", state.namespace, state.address(w), ports))
    return services


def _pods(cluster_dir: Path, state: ClusterState, docs: list[dict]) -> dict[str, dict]:
    """Every workload's pod, ready to play: named for the cluster, its Services resolved, the local rules applied
    (volumes under the cluster directory, Secrets from `_secrets`)."""
    pods = _cluster_pods(docs, release_dir(cluster_dir, state.version or 0))
    services = _services(state, docs, pods)
    out = {}
    for wname, pod in pods.items():
        pod = with_services(pod, services)
        pod["metadata"]["name"] = f"{state.name}-{pod['metadata']['name']}"
        shutil.rmtree(cluster_dir / "scratch" / pod["metadata"]["name"], ignore_errors=True)  # a new emptyDir
        out[wname] = local_pod(pod, _host_paths(cluster_dir, docs, pod), {}, _secrets(state), cluster_dir / "scratch")
    return out


def _host_paths(cluster_dir: Path, docs: list[dict], pod: dict) -> dict[str, Path]:
    """The folders that stand in for `pod`'s PersistentVolumeClaims and ConfigMaps."""
    gid = pod["spec"].get("securityContext", {}).get("fsGroup")
    paths = {}
    for volume in pod["spec"].get("volumes", []):
        if "persistentVolumeClaim" in volume:
            paths[volume["name"]] = _owned(cluster_dir / "volumes" / volume["persistentVolumeClaim"]["claimName"], gid)
        elif "configMap" in volume:
            paths[volume["name"]] = _config_map(cluster_dir, find(docs, "ConfigMap", volume["configMap"]["name"]))
    return paths


def _owned(folder: Path, gid: int | None) -> Path:
    """A claim's folder, writable by the pod's fsGroup as a cluster's volume would be (setgid, so what the pod
    writes stays in the group); writable by all where this user cannot give it away."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if gid is None:
            raise PermissionError
        os.chown(folder, -1, gid)
        folder.chmod(0o2775)
    except PermissionError:
        folder.chmod(0o1777)
    return folder


def _config_map(cluster_dir: Path, config_map: dict) -> Path:
    """The ConfigMap's files; the Feast configuration's registry becomes the file `REGISTRY_FILE` beside it."""
    folder = cluster_dir / "config" / config_map["metadata"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    for key, text in config_map.get("data", {}).items():
        if key == "feature_store.yaml":
            config = yaml.safe_load(text)
            config["registry"]["path"] = REGISTRY_FILE
            text = "# the ConfigMap's, with its registry a file here (components/cluster/local_cluster.py)\n" + (
                yaml.safe_dump(config, sort_keys=False)
            )
        (folder / key).write_text(text)
        (folder / key).chmod(0o644)
    return folder


def _url(pod: dict, address: str) -> str:
    port = pod["spec"]["containers"][0]["ports"][0]
    url = podman.base_url(pod, port["containerPort"], address)
    return url.replace("http://", "redis://") if port.get("name") == "redis" else url
