"""Deploying a model version to KServe: point an InferenceService at new weights and wait until they serve.

The InferenceServices themselves (runtime, resources, autoscaling) are declared in the manifests and applied by an
operator; the pipeline only changes `spec.predictor.model.storageUri`. It does so with a JSON merge patch that names
that one field, so nothing else an operator set is overwritten.

Readiness is judged against the generation our patch produced: KServe keeps reporting the previous revision's
`Ready=True` until its controller has seen the new spec, so a Ready condition only counts once
`status.observedGeneration` has caught up with that generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from components.cluster.kube import api_error, api_message

# The same values as kserve.constants (KSERVE_GROUP, KSERVE_V1BETA1_VERSION, KSERVE_PLURAL_INFERENCESERVICE); spelt
# out because importing the kserve package pulls in its whole model server. A test keeps them in step.
GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"


def storage_uri_patch(storage_uri: str) -> dict[str, Any]:
    """The merge patch that changes only the predictor's model storageUri."""
    return {"spec": {"predictor": {"model": {"storageUri": storage_uri}}}}


def set_storage_uri(api_client: client.ApiClient, name: str, namespace: str, storage_uri: str) -> int:
    """Point InferenceService `namespace/name` at `storage_uri`; return the resulting `metadata.generation`.

    CustomObjectsApi.patch_namespaced_custom_object (kubernetes 30.1.0) sends `application/merge-patch+json`, the
    right type for a CRD (strategic merge patch is not supported on custom resources).
    """
    if not storage_uri:
        raise ValueError(f"InferenceService {namespace}/{name}: storage_uri is empty")
    api = client.CustomObjectsApi(api_client)
    try:
        obj = api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, storage_uri_patch(storage_uri)
        )
    except ApiException as exc:
        if exc.status == 404:
            raise RuntimeError(
                f"InferenceService {namespace}/{name} does not exist: apply the serving manifests first "
                f"(it must be declared before a model version can be rolled out to it). API: {api_message(exc)}"
            ) from exc
        if exc.status == 403:
            raise RuntimeError(
                f"not allowed to patch InferenceService {namespace}/{name}: the service account needs the 'patch' "
                f"verb on inferenceservices.{GROUP} in namespace {namespace}. API: {api_message(exc)}"
            ) from exc
        raise api_error(exc, f"patching InferenceService {namespace}/{name}") from exc
    try:
        return int(obj["metadata"]["generation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RuntimeError(
            f"patched InferenceService {namespace}/{name} but the reply has no metadata.generation"
        ) from exc


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def describe_conditions(status: Mapping[str, Any]) -> str:
    """The conditions as `Type=Status (Reason: message)`, for errors and logs."""
    parts = []
    for c in status.get("conditions") or []:
        why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
        parts.append(f"{c.get('type')}={c.get('status')}" + (f" ({why})" if why else ""))
    return "; ".join(parts) or "no conditions reported"


def is_ready(status: Mapping[str, Any], generation: int) -> bool:
    """Ready for `generation`: the controller has observed it and reports Ready=True."""
    ready = _condition(status, "Ready")
    return (
        int(status.get("observedGeneration") or 0) >= generation and ready is not None and ready.get("status") == "True"
    )


def wait_ready(
    api_client: client.ApiClient,
    name: str,
    namespace: str,
    generation: int,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll until InferenceService `namespace/name` is ready at `generation`; return its `status`.

    A Ready=False is not final: KServe reports it transiently while the new revision rolls out (and a failing one
    keeps the old revision serving), so only `timeout_s` ends the wait, with a TimeoutError quoting the conditions.
    """
    api = client.CustomObjectsApi(api_client)
    deadline = clock() + timeout_s
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            raise api_error(exc, f"reading InferenceService {namespace}/{name}") from exc
        status = obj.get("status") or {}
        if is_ready(status, generation):
            return status
        if clock() >= deadline:
            raise TimeoutError(
                f"InferenceService {namespace}/{name} not ready at generation {generation} within {timeout_s:g} s "
                f"(observedGeneration={status.get('observedGeneration')}): {describe_conditions(status)}"
            )
        sleep(poll_s)


def rollout(
    api_client: client.ApiClient,
    namespace: str,
    uris: Mapping[str, str],
    *,
    timeout_s: float = 900.0,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """Patch every service in `uris` (name -> storageUri), then wait for each; `timeout_s` bounds the whole rollout.

    All patches go out before any wait so the services roll in parallel. Returns name -> {generation, url, status}.
    """
    if not uris:
        raise ValueError("rollout needs at least one InferenceService name -> storageUri")
    generations = {name: set_storage_uri(api_client, name, namespace, uri) for name, uri in uris.items()}
    deadline = clock() + timeout_s
    result: dict[str, dict[str, Any]] = {}
    for name, generation in generations.items():
        status = wait_ready(
            api_client,
            name,
            namespace,
            generation,
            timeout_s=max(0.0, deadline - clock()),
            poll_s=poll_s,
            sleep=sleep,
            clock=clock,
        )
        result[name] = {"generation": generation, "url": status.get("url"), "status": status}
    return result
