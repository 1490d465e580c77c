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
