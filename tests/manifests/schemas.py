"""Schema validation of rendered objects: built-in kinds against Kubernetes' own schema, custom resources against
the upstream CRD schemas vendored in tests/fixtures/crds. Anything that is neither fails: nothing goes unvalidated.

Both validators are strict: an unknown field is an error (the API server's strict field validation rejects it for
built-in kinds, and silently prunes it from a custom resource, which is worse).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import kubernetes_validate
from recorded_api import vendored_crd_validator
from render import describe

# The kubectl we render with (1.32, kustomize v5.5) and the Pod Security version the namespace pins
# (pod-security.kubernetes.io/enforce-version: v1.32): the API our manifests are written against.
KUBERNETES_VERSION = "1.32.0"

# (apiVersion, kind) -> the vendored CRD file and version. The version is part of the key: a resource written
# against another version of the CRD (say feast.dev/v1alpha1) has no schema here and fails, rather than passing
# against the wrong one.
CUSTOM_RESOURCES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    ("serving.kserve.io/v1alpha1", "InferenceGraph"): ("serving.kserve.io_inferencegraphs.yaml", "v1alpha1"),
    ("ray.io/v1", "RayJob"): ("ray.io_rayjobs.yaml", "v1"),
    ("ray.io/v1", "RayCluster"): ("ray.io_rayclusters.yaml", "v1"),
    ("milvus.io/v1beta1", "Milvus"): ("milvus.io_milvuses.yaml", "v1beta1"),
    ("feast.dev/v1", "FeatureStore"): ("feast.dev_featurestores.yaml", "v1"),
}


def is_builtin(api_version: str) -> bool:
    """Core ("v1") and the API groups Kubernetes itself serves: un-dotted (apps, batch, policy, autoscaling) or
    under k8s.io (networking.k8s.io, rbac.authorization.k8s.io, ...)."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def builtin_violations(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for obj in objects:
        if not is_builtin(str(obj.get("apiVersion", ""))):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            field = ".".join(map(str, exc.path)) or "(top level)"
            out.append(f"{describe(obj)}: {field}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            out.append(f"{describe(obj)}: {exc.message}")
    return out


def custom_resource_violations(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for obj in objects:
        api_version, kind = str(obj.get("apiVersion", "")), obj.get("kind")
        if is_builtin(api_version):
            continue
        if (api_version, kind) not in CUSTOM_RESOURCES:
            known = ", ".join(f"{k} {v}" for v, k in CUSTOM_RESOURCES)
            out.append(f"{describe(obj)}: no schema for {kind} {api_version} (neither built-in nor one of: {known})")
            continue
        if not (obj.get("metadata") or {}).get("name"):
            out.append(f"{describe(obj)}: metadata.name is missing")
        validator = _validator(*CUSTOM_RESOURCES[api_version, kind])
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            field = ".".join(map(str, error.absolute_path)) or "(top level)"
            out.append(f"{describe(obj)}: {field}: {error.message}")
    return out


@cache
def _validator(crd_file: str, version: str):
    return vendored_crd_validator(crd_file, version)
