"""The platform's rules for what may run: Pod Security "restricted", requests and limits, images,
secrets, RBAC, GPUs. Each check takes a target's objects and returns violations, one string each, naming the object
(Kind/name), where the pod spec is, the container and the field, so a failing test says exactly what to fix.

Network policies live in network.py. What operators build and our objects cannot express is listed in pods.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from pods import CONTAINER_SECURITY, IMAGE, POD_SECURITY, RESOURCES, SCRATCH, Container, Pod, pods
from render import describe

from pipelines.ray_backend import IMAGE as PROJECT_IMAGE

Check = Callable[[list[dict[str, Any]]], list[str]]


def _containers(objects: list[dict[str, Any]], aspect: str) -> Iterator[tuple[Pod, Container]]:
    for obj in objects:
        for pod in pods(obj):
            if aspect in pod.settable:
                for container in pod.containers:
                    yield pod, container


def _security(spec: dict[str, Any]) -> dict[str, Any]:
    return spec.get("securityContext") or {}


# ---- Pod Security "restricted"


def run_as_non_root(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for pod, c in _containers(objects, POD_SECURITY):
        # The container's setting wins over the pod's, so a container-level false undoes a pod-level true.
        value = _security(c.spec).get("runAsNonRoot", _security(pod.spec).get("runAsNonRoot"))
        if value is not True:
            out.append(f"{pod.where(c)}: securityContext.runAsNonRoot is {value!r} (container or pod), want true")
    return out


def seccomp_runtime_default(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for pod, c in _containers(objects, POD_SECURITY):
        profile = _security(c.spec).get("seccompProfile") or _security(pod.spec).get("seccompProfile") or {}
        if profile.get("type") != "RuntimeDefault":
            out.append(
                f"{pod.where(c)}: securityContext.seccompProfile.type is {profile.get('type')!r} (container or pod),"
                " want RuntimeDefault"
            )
    return out


def no_privilege_escalation(objects: list[dict[str, Any]]) -> list[str]:
    return [
        f"{pod.where(c)}: securityContext.allowPrivilegeEscalation is {value!r}, want false"
        for pod, c in _containers(objects, CONTAINER_SECURITY)
        if (value := _security(c.spec).get("allowPrivilegeEscalation")) is not False
    ]


def drop_all_capabilities(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for pod, c in _containers(objects, CONTAINER_SECURITY):
        caps = _security(c.spec).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{pod.where(c)}: securityContext.capabilities.drop is {caps.get('drop')!r}, want [ALL]")
        if caps.get("add"):
            out.append(f"{pod.where(c)}: securityContext.capabilities.add is {caps['add']!r}, want none")
    return out


def read_only_root(objects: list[dict[str, Any]]) -> list[str]:
    return [
        f"{pod.where(c)}: securityContext.readOnlyRootFilesystem is {value!r}, want true"
        for pod, c in _containers(objects, CONTAINER_SECURITY)
        if (value := _security(c.spec).get("readOnlyRootFilesystem")) is not True
    ]


def no_host_access(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for obj in objects:
        for pod in pods(obj):
            if POD_SECURITY not in pod.settable:
                continue
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.spec.get(flag):
                    out.append(f"{pod.owner} ({pod.path}): {flag} is true, want unset or false")
            for volume in pod.spec.get("volumes") or []:
                if "hostPath" in volume:
                    out.append(f"{pod.owner} ({pod.path}): volume {volume.get('name')} is a hostPath")
            for c in pod.containers:
                if _security(c.spec).get("privileged"):
                    out.append(f"{pod.where(c)}: securityContext.privileged is true")
    return out


def scratch_is_empty_dir(objects: list[dict[str, Any]]) -> list[str]:
    """With a read-only root filesystem, a container's scratch space (/tmp) must be an emptyDir it mounts."""
    out = []
    for pod, c in _containers(objects, SCRATCH):
        if SCRATCH in c.inherited:
            continue
        empty = {v.get("name") for v in pod.spec.get("volumes") or [] if "emptyDir" in v}
        mounted = [m.get("name") for m in c.spec.get("volumeMounts") or []]
        if not empty.intersection(mounted):
            out.append(f"{pod.where(c)}: volumeMounts {mounted} include no emptyDir volume (its scratch space)")
    return out


# ---- resources


def requests_and_limits(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for pod, c in _containers(objects, RESOURCES):
        resources = c.spec.get("resources") or {}
        for section in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in (resources.get(section) or {})]
            if missing:
                out.append(f"{pod.where(c)}: resources.{section} lacks {', '.join(missing)}")
    return out


# ---- images and artifacts

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def split_image(image: str) -> tuple[str, str | None]:
    """(repository, tag or digest or None): "ghcr.io/a/b:1.0" -> ("ghcr.io/a/b", "1.0"); a registry port is not a tag."""
    if _DIGEST.search(image):
        repository, _, digest = image.partition("@")
        return repository.rsplit(":", 1)[0] if ":" in repository.rsplit("/", 1)[-1] else repository, digest
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, None
    return name, tag


def _images(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str | None]]:
    for pod, c in _containers(objects, IMAGE):
        image = c.spec.get("image")
        if image or IMAGE not in c.inherited:
            yield pod.where(c), image


def pinned_images(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for where, image in _images(objects):
        if not image:
            out.append(f"{where}: image is not set (an operator would pick its own default)")
            continue
        tag = split_image(image)[1]
        if tag is None or tag == "latest":
            out.append(f"{where}: image {image} has no pinned tag or digest (never latest)")
    return out


def project_images(objects: list[dict[str, Any]]) -> list[str]:
    """Only the image the project builds runs (its tag may differ per overlay)."""
    repository = split_image(PROJECT_IMAGE)[0]
    return [
        f"{where}: image {image} is not the project's image {repository}"
        for where, image in _images(objects)
        if image and split_image(image)[0] != repository
    ]


def s3_storage_uris(objects: list[dict[str, Any]]) -> list[str]:
    """Every KServe storageUri points at our model registry (s3://)."""
    return [
        f"{describe(obj)}: {path}: storageUri {value!r} is not an s3:// URI"
        for obj in objects
        if str(obj.get("apiVersion", "")).startswith("serving.kserve.io/")
        for path, key, value in _walk(obj)
        if key == "storageUri" and not str(value).startswith("s3://")
    ]


# ---- secrets

_SECRET_WORDS = {"PASSWORD", "PASSWD", "TOKEN", "SECRET", "KEY", "CREDENTIAL", "CREDENTIALS"}


def looks_secret(name: str) -> bool:
    """Whether an env var name has a secret-ish word part: AWS_SECRET_ACCESS_KEY, apiKey, DB_PASSWORD; not MONKEY."""
    parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)
    return any(part.upper() in _SECRET_WORDS for part in parts)


def no_secret_data(objects: list[dict[str, Any]]) -> list[str]:
    """Secrets are created out of band (docs/deploy.md); the manifests never carry their values."""
    return [
        f"{describe(obj)}: {field} is set (create the Secret out of band; reference it)"
        for obj in objects
        if obj.get("kind") == "Secret"
        for field in ("data", "stringData")
        if obj.get(field)
    ]


def no_literal_secret_env(objects: list[dict[str, Any]]) -> list[str]:
    # Every env list anywhere (a custom resource's too), not only the containers pods.py knows about.
    out = []
    for obj in objects:
        for path, key, value in _walk(obj):
            if key != "env" or not isinstance(value, list):
                continue
            for var in value:
                name, literal = var.get("name", ""), var.get("value")
                if looks_secret(name) and literal is not None and not str(literal).startswith("/"):
                    out.append(f"{describe(obj)}: {path}: env {name} has a literal value (use valueFrom.secretKeyRef)")
    return out


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) for every mapping entry under `node`, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, key, value
            yield from _walk(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


# ---- GPUs

GPU = "nvidia.com/gpu"
_GPU_NODE_WORDS = ("gpu", "nvidia", "accelerator")


def no_gpus(objects: list[dict[str, Any]]) -> list[str]:
    """For the CPU-only dev cluster: nothing asks for a GPU."""
    return [f"{describe(obj)}: {path} requests a GPU" for obj in objects for path, key, _ in _walk(obj) if key == GPU]


def ranking_on_gpu(objects: list[dict[str, Any]]) -> list[str]:
    """For prod: the ranking InferenceService's predictor gets one GPU and is scheduled on GPU nodes."""
    ranking = [o for o in objects if o.get("kind") == "InferenceService" and o["metadata"].get("name") == "ranking"]
    if not ranking:
        return ["InferenceService/ranking: not found"]
    predictor = ranking[0]["spec"].get("predictor") or {}
    out = []
    containers = [predictor.get("model") or {}, *(predictor.get("containers") or [])]
    resources = [c.get("resources") or {} for c in containers]
    for section in ("requests", "limits"):
        if not any(str((r.get(section) or {}).get(GPU)) == "1" for r in resources):
            out.append(f"InferenceService/ranking: spec.predictor: no container has resources.{section}.{GPU}: 1")
    keys = list(predictor.get("nodeSelector") or {}) + [t.get("key", "") for t in predictor.get("tolerations") or []]
    if not any(word in key.lower() for key in keys for word in _GPU_NODE_WORDS):
        out.append(
            "InferenceService/ranking: spec.predictor: neither nodeSelector nor tolerations name GPU nodes"
            f" (keys {keys})"
        )
    return out


# ---- admin doors: read-only dashboards, passwords, tokens, operator-built pods

EVIDENTLY_UI = "Deployment/evidently-ui"


def evidently_workspace_read_only(objects: list[dict[str, Any]]) -> list[str]:
    """The Evidently UI (no login of its own) mounts every persistent volume read-only, mount and claim both."""
    found = [pod for obj in objects if describe(obj) == EVIDENTLY_UI for pod in pods(obj)]
    if not found:
        return [f"{EVIDENTLY_UI}: not found"]
    out = []
    for pod in found:
        claims = {
            v["name"]: v["persistentVolumeClaim"] for v in pod.spec.get("volumes") or [] if "persistentVolumeClaim" in v
        }
        for name, claim in claims.items():
            if claim.get("readOnly") is not True:
                out.append(f"{pod.owner} ({pod.path}): volume {name}: persistentVolumeClaim.readOnly is not true")
        for c in pod.containers:
            for mount in c.spec.get("volumeMounts") or []:
                if mount.get("name") in claims and mount.get("readOnly") is not True:
                    out.append(f"{pod.where(c)}: volumeMount {mount.get('name')} is not readOnly")
    return out


REDIS_SECRET = "homefeed-redis"  # key `password`: redis-server's requirepass and every client's
_VAR = re.compile(r"\$\((\w+)\)")


def _secret_env(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """env name -> (Secret, key) for the container's variables taken from a Secret."""
    out = {}
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            out[var["name"]] = (ref.get("name"), ref.get("key"))
    return out


def _all_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, container) for every container spec anywhere (pod templates, ServingRuntimes, predictors)."""
    for obj in objects:
        for path, key, value in _walk(obj):
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict):
                        yield f"{describe(obj)}: {path} container {c.get('name', '?')}", c


def _from_redis_secret(container: dict[str, Any], var: str) -> bool:
    return _secret_env(container).get(var) == (REDIS_SECRET, "password")


def redis_requires_password(objects: list[dict[str, Any]]) -> list[str]:
    """Every redis-server runs with --requirepass $(VAR), VAR from the Secret homefeed-redis, and protected mode on."""
    out = []
    for where, c in _all_containers(objects):
        words = [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]
        if not any(w.split("/")[-1] == "redis-server" for w in words):
            continue
        if "--requirepass" not in words:
            out.append(f"{where}: redis-server without --requirepass")
            continue
        value = words[words.index("--requirepass") + 1] if words.index("--requirepass") + 1 < len(words) else ""
        var = _VAR.fullmatch(value)
        if not var or not _from_redis_secret(c, var.group(1)):
            out.append(
                f"{where}: --requirepass {value!r} is not $(VAR) with VAR from Secret {REDIS_SECRET} key password"
            )
        if "--protected-mode" in words and words[words.index("--protected-mode") + 1] == "no":
            out.append(f"{where}: redis-server runs with --protected-mode no")
    return out


def redis_clients_authenticate(objects: list[dict[str, Any]]) -> list[str]:
    """Every container given a redis:// URL, and every one that mounts the Feast configuration, has REDIS_PASSWORD from
    the Secret homefeed-redis (the clients read it there: components/features/online_store.py); no URL carries
    credentials; the Feast configuration's connection_string names ${REDIS_PASSWORD}."""
    out = []
    feast_configs = {
        o["metadata"]["name"]
        for o in objects
        if o.get("kind") == "ConfigMap" and "redis" in str((o.get("data") or {}).get("feature_store.yaml", ""))
    }
    for o in objects:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] in feast_configs:
            text = o["data"]["feature_store.yaml"]
            if "password=${REDIS_PASSWORD}" not in text:
                out.append(
                    f"{describe(o)}: feature_store.yaml's Redis connection_string has no password=${{REDIS_PASSWORD}}"
                )
    for obj in objects:
        volumes_of = {}
        for _path, key, value in _walk(obj):
            if key == "volumes" and isinstance(value, list):
                volumes_of.update({v.get("name"): v for v in value if isinstance(v, dict)})
        for where, c in _all_containers([obj]):
            urls = [
                u
                for a in (c.get("command") or []) + (c.get("args") or [])
                for u in re.findall(r"rediss?://\S+", str(a))
            ]
            for url in urls:
                if "@" in url.split("?", 1)[0]:
                    out.append(f"{where}: {url} carries credentials (they belong in REDIS_PASSWORD)")
            mounted = {m.get("name") for m in c.get("volumeMounts") or []}
            feast = any(
                ((volumes_of.get(m) or {}).get("configMap") or {}).get("name") in feast_configs for m in mounted
            )
            if (urls or feast) and not _from_redis_secret(c, "REDIS_PASSWORD"):
                why = "is given a Redis URL" if urls else "mounts the Feast configuration"
                out.append(f"{where}: {why} without REDIS_PASSWORD from Secret {REDIS_SECRET} key password")
    return out


SERVING_SECRET = "homefeed-serving"  # key `token`: the bearer token of the model servers' data plane


def model_servers_take_a_token(objects: list[dict[str, Any]]) -> list[str]:
    """Every model server (`python -m serving` in a ServingRuntime or a predictor) has SERVING_TOKEN from the Secret
    homefeed-serving, key token: creating that Secret turns bearer authentication on (serving/server.py)."""
    out, found = [], 0
    for obj in objects:
        if obj.get("kind") not in ("ServingRuntime", "InferenceService"):
            continue
        for where, c in _all_containers([obj]):
            if "serving" not in [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]:
                continue
            found += 1
            if _secret_env(c).get("SERVING_TOKEN") != (SERVING_SECRET, "token"):
                out.append(f"{where}: no SERVING_TOKEN from Secret {SERVING_SECRET} key token")
    return out if found else ["no model server (`python -m serving`) found"]


def _restricted_container(context: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" asks of a container's securityContext that `context` does not set."""
    missing = []
    if context.get("allowPrivilegeEscalation") is not False:
        missing.append("allowPrivilegeEscalation: false")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        missing.append("capabilities.drop [ALL]")
    if context.get("runAsNonRoot") is not True:
        missing.append("runAsNonRoot: true")
    if (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        missing.append("seccompProfile RuntimeDefault")
    return missing


def operator_crs_security(objects: list[dict[str, Any]]) -> list[str]:
    """The operator-built pods get what the CRs can give them: the Milvus container's securityContext (the operator
    applies components.securityContext to the container) and its etcd chart's container and pod settings; the
    FeatureStore's pod securityContext (its CR has no container field: docs/security.md)."""
    out = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "Milvus":
            components = spec.get("components") or {}
            if components.get("runAsNonRoot") is not True:
                out.append(f"{describe(obj)}: spec.components.runAsNonRoot is not true (the pod's runAsNonRoot)")
            for part in [None, *(k for k, v in components.items() if isinstance(v, dict) and "securityContext" in v)]:
                context = components.get("securityContext") if part is None else components[part]["securityContext"]
                path = "spec.components" + (f".{part}" if part else "")
                for gap in _restricted_container(context or {}):
                    out.append(f"{describe(obj)}: {path}.securityContext lacks {gap}")
            etcd = ((((spec.get("dependencies") or {}).get("etcd") or {}).get("inCluster") or {}).get("values")) or {}
            if (spec.get("dependencies") or {}).get("etcd", {}).get("inCluster") is not None:
                container = etcd.get("containerSecurityContext") or {}
                if container.get("enabled") is not True:
                    out.append(f"{describe(obj)}: etcd values containerSecurityContext.enabled is not true")
                for gap in _restricted_container(container):
                    out.append(f"{describe(obj)}: etcd values containerSecurityContext lacks {gap}")
        if obj.get("kind") == "FeatureStore":
            context = (spec.get("services") or {}).get("securityContext") or {}
            if (
                context.get("runAsNonRoot") is not True
                or (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault"
            ):
                out.append(
                    f"{describe(obj)}: spec.services.securityContext lacks runAsNonRoot or seccomp RuntimeDefault"
                )
    return out


# Pods that call the Kubernetes API with their ServiceAccount's token. None today: the monitoring job talks to
# Kubeflow Pipelines with a projected token of its own audience, not the API-server token.
NEEDS_API_TOKEN: frozenset[str] = frozenset()
# Kinds whose CR has no field for the token (nor a ServiceAccount of ours): listed in docs/security.md.
NO_TOKEN_FIELD = frozenset({"FeatureStore", "ServingRuntime"})  # a ServingRuntime's pods are its InferenceServices'


def token_only_where_needed(objects: list[dict[str, Any]]) -> list[str]:
    """Every pod that needs no API access mounts no ServiceAccount token: automountServiceAccountToken false on the
    pod, or (where the CR has no such field) a ServiceAccount of ours that turns it off."""
    accounts = {
        o["metadata"]["name"]: o.get("automountServiceAccountToken")
        for o in objects
        if o.get("kind") == "ServiceAccount"
    }
    out = []
    for obj in objects:
        for pod in pods(obj):
            if pod.kind in NO_TOKEN_FIELD or pod.owner in NEEDS_API_TOKEN:
                continue
            spec = obj["spec"].get("components", {}) if pod.kind == "Milvus" else pod.spec
            if spec.get("automountServiceAccountToken") is False:
                continue
            account = spec.get("serviceAccountName")
            if "automountServiceAccountToken" not in spec and account and accounts.get(account) is False:
                continue
            out.append(
                f"{pod.owner} ({pod.path}): mounts an API token it does not need (automountServiceAccountToken"
                f" {spec.get('automountServiceAccountToken')!r}, serviceAccountName {account!r})"
            )
    return out
