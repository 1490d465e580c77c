"""Running one pipeline step on a throwaway KubeRay cluster, as a `RayJob` (ray.io/v1), and waiting for it.

A KFP step that needs more than its own pod (distributed training, the embedding pass) creates a RayJob: KubeRay
brings up a head and `workers` worker pods, submits `entrypoint` from a submitter Job, and tears the cluster down when
the job finishes (`shutdownAfterJobFinishes`, then `ttlSecondsAfterFinished`). Inputs and outputs travel through a
shared PVC mounted on every Ray pod, so the step's artifacts land where the KFP step can pick them up.

The step must never leave a cluster running: on our own timeout, or when the step is interrupted or crashes while
waiting, the RayJob is deleted (its RayCluster is an owned object and goes with it).

On an HTTP 409 at creation (a RayJob of that name exists) we raise rather than adopt it. The name is derived from the
KFP run and task ids, so a 409 means an earlier attempt of this very step (a KFP retry) or a name collision; adopting
would report the earlier attempt's outcome (possibly a failure we are retrying) or someone else's job as ours. The
error names the job and the command to delete it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from components.cluster.kube import api_error, api_message

GROUP = "ray.io"
VERSION = "v1"
PLURAL = "rayjobs"

# KubeRay names the RayCluster `<rayjob>-<5 chars>` and its services after that, so it rejects RayJob names longer
# than 53 - 6 = 47 characters, and requires a DNS-1035 label (must start with a letter).
MAX_NAME_LENGTH = 47
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The Kubernetes resource.Quantity grammar (as the CRDs' own int-or-string patterns spell it).
_QUANTITY = re.compile(
    r"(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
)

SUCCEEDED = "SUCCEEDED"
FAILED_JOB_STATUSES = frozenset({"FAILED", "STOPPED"})
COMPLETE = "Complete"
DEPLOYMENT_FAILED = "Failed"

GPU_RESOURCE = "nvidia.com/gpu"


def _installed_ray_version() -> str:
    # The cluster must run the Ray the step's code was written against; the package metadata gives ray.__version__
    # without importing Ray into the launcher process.
    return metadata.version("ray")


@dataclass(frozen=True)
class RayJobSpec:
    """What one step needs from a Ray cluster. Quantities are Kubernetes strings ("2", "500m", "8Gi")."""

    name: str
    namespace: str
    image: str
    entrypoint: str
    runtime_env: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    worker_cpu: str = "2"
    worker_memory: str = "8Gi"
    worker_gpus: int = 0
    head_cpu: str = "1"
    head_memory: str = "4Gi"
    pvc_name: str | None = None
    mount_path: str = "/workspace"
    service_account: str | None = None
    ttl_seconds_after_finished: int = 600
    active_deadline_seconds: int = 6 * 3600
    labels: dict[str, str] = field(default_factory=dict)
    ray_version: str = field(default_factory=_installed_ray_version)
    # The project image's user (Dockerfile: uid and gid 10001); fsGroup makes the shared PVC writable for it.
    run_as_user: int = 10001
    fs_group: int = 10001

    def __post_init__(self) -> None:
        if len(self.name) > MAX_NAME_LENGTH or not _DNS1035.fullmatch(self.name):
            raise ValueError(
                f"RayJob name {self.name!r} is invalid: KubeRay needs a DNS-1035 label (lowercase letters, digits and "
                f"'-', starting with a letter, ending with a letter or digit) of at most {MAX_NAME_LENGTH} characters; "
                "use rayjob_name() to derive one"
            )
        if not self.namespace:
            raise ValueError(f"RayJob {self.name}: namespace is empty")
        if not self.image or not self.entrypoint.strip():
            raise ValueError(f"RayJob {self.name}: image and entrypoint are required")
        if self.workers < 1:
            raise ValueError(f"RayJob {self.name}: workers must be >= 1, got {self.workers}")
        if self.worker_gpus < 0:
            raise ValueError(f"RayJob {self.name}: worker_gpus must be >= 0, got {self.worker_gpus}")
        for what in ("worker_cpu", "worker_memory", "head_cpu", "head_memory"):
            value = getattr(self, what)
            if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
                raise ValueError(f"RayJob {self.name}: {what}={value!r} is not a Kubernetes quantity (e.g. '2', '8Gi')")
        if self.ttl_seconds_after_finished < 0:
            raise ValueError(f"RayJob {self.name}: ttl_seconds_after_finished must be >= 0")
        if self.active_deadline_seconds <= 0:
            raise ValueError(f"RayJob {self.name}: active_deadline_seconds must be > 0 (KubeRay rejects 0)")
        if self.pvc_name is not None and not self.mount_path.startswith("/"):
            raise ValueError(f"RayJob {self.name}: mount_path {self.mount_path!r} must be absolute")


def rayjob_name(prefix: str, unique: str) -> str:
    """A valid RayJob name: the step name, sanitised and cut, plus a hash of `unique` (e.g. the KFP run and task id).

    The same (prefix, unique) always gives the same name, so a retried task finds its earlier RayJob (a 409) instead
    of starting a second cluster next to it.
    """
    if not unique:
        raise ValueError("rayjob_name needs a non-empty unique part (e.g. the KFP run id and task name)")
    digest = hashlib.sha256(unique.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    stem = re.sub(r"-{2,}", "-", stem)
    if not stem or not stem[0].isalpha():
        stem = f"step-{stem}".rstrip("-")
    stem = stem[: MAX_NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{stem}-{digest}"


def _security_context() -> dict[str, Any]:
    # What Pod Security "restricted" demands of every container, and a read-only image: Ray writes only under /tmp
    # (an emptyDir) and the workspace volume.
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security_context(spec: RayJobSpec) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": spec.run_as_user,
        "runAsGroup": spec.fs_group,
        "fsGroup": spec.fs_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _ray_pod(spec: RayJobSpec, container: str, cpu: str, memory: str, gpus: int) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus > 0:
        resources[GPU_RESOURCE] = str(gpus)
    # Ray writes its session directory (logs, sockets, spilled objects) under /tmp.
    mounts = [{"name": "ray-tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "ray-tmp", "emptyDir": {}}]
    if spec.pvc_name:
        mounts.append({"name": "workspace", "mountPath": spec.mount_path})
        volumes.append({"name": "workspace", "persistentVolumeClaim": {"claimName": spec.pvc_name}})
    pod: dict[str, Any] = {
        # Ray's pods never call the Kubernetes API (no autoscaler here): a mounted token would only be a credential
        # for whoever runs code on the cluster to take
        "automountServiceAccountToken": False,
        "securityContext": _pod_security_context(spec),
        "containers": [
            {
                "name": container,
                "image": spec.image,
                # Requests == limits: Guaranteed QoS, so a training pod is the last to be evicted.
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "securityContext": _security_context(),
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    return {"metadata": {"labels": dict(spec.labels)}, "spec": pod}


def _submitter_pod(spec: RayJobSpec) -> dict[str, Any]:
    # KubeRay's default submitter pod has no securityContext, which a Pod Security "restricted" namespace rejects, and
    # the RayJob would then wait for a submitter that never starts. With no command given, KubeRay fills in its own
    # `ray job submit` command, so only the container's image, resources and security are ours.
    return {
        "metadata": {"labels": dict(spec.labels)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,  # `ray job submit` speaks to Ray's dashboard, not the API
            "securityContext": _pod_security_context(spec),
            "containers": [
                {
                    "name": "ray-job-submitter",
                    "image": spec.image,
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                    },
                    "securityContext": _security_context(),
                    # the image is read-only: the `ray job submit` CLI writes its state under /tmp
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def rayjob_manifest(spec: RayJobSpec) -> dict[str, Any]:
    """The RayJob body for `spec`."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": dict(spec.labels)},
        "spec": {
            "entrypoint": spec.entrypoint,
            "runtimeEnvYAML": yaml.safe_dump(spec.runtime_env, sort_keys=True),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "submitterPodTemplate": _submitter_pod(spec),
            "rayClusterSpec": {
                "rayVersion": spec.ray_version,
                "headGroupSpec": {
                    # num-cpus 0: no task or actor is scheduled on the head, which only coordinates.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": _ray_pod(spec, "ray-head", spec.head_cpu, spec.head_memory, 0),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        # A fixed size: the step asks for exactly this many workers, no autoscaling.
                        "replicas": spec.workers,
                        "minReplicas": spec.workers,
                        "maxReplicas": spec.workers,
                        # KubeRay's defaults, written out: its schema makes this list atomic, so a server-side
                        # apply that leaves out what the server filled in conflicts with the stored object
                        "numOfHosts": 1,
                        "priority": 0,
                        "rayStartParams": {},
                        "template": _ray_pod(spec, "ray-worker", spec.worker_cpu, spec.worker_memory, spec.worker_gpus),
                    }
                ],
            },
        },
    }


class RayJobFailed(RuntimeError):
    """The RayJob ended without success; `status` is its final `.status`."""

    def __init__(self, name: str, status: dict[str, Any]) -> None:
        self.name = name
        self.status = status
        reason = status.get("reason")
        message = status.get("message") or "no message"
        super().__init__(
            f"RayJob {name} failed: jobDeploymentStatus={status.get('jobDeploymentStatus')} "
            f"jobStatus={status.get('jobStatus')}" + (f" reason={reason}" if reason else "") + f": {message}"
        )


def _create(api: client.CustomObjectsApi, spec: RayJobSpec) -> None:
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, rayjob_manifest(spec))
    except ApiException as exc:
        if exc.status == 409:
            raise RuntimeError(
                f"RayJob {spec.namespace}/{spec.name} already exists (an earlier attempt of this step, or a name "
                f"collision); refusing to adopt it. Inspect it and delete it before retrying: "
                f"kubectl -n {spec.namespace} delete rayjob {spec.name}"
            ) from exc
        raise api_error(exc, f"creating RayJob {spec.namespace}/{spec.name}") from exc


def _delete(api: client.CustomObjectsApi, spec: RayJobSpec, error: BaseException) -> None:
    """Delete the RayJob (and with it its cluster); a failure here is noted on `error`, never raised over it."""
    try:
        api.delete_namespaced_custom_object(
            GROUP, VERSION, spec.namespace, PLURAL, spec.name, propagation_policy="Background"
        )
    except ApiException as exc:
        if exc.status != 404:
            error.add_note(
                f"deleting RayJob {spec.namespace}/{spec.name} also failed (HTTP {exc.status}: {api_message(exc)}); "
                f"delete it by hand: kubectl -n {spec.namespace} delete rayjob {spec.name}"
            )
    except Exception as exc:  # the cleanup must not hide why we are cleaning up
        error.add_note(f"deleting RayJob {spec.namespace}/{spec.name} also failed: {exc!r}")
    else:
        error.add_note(f"RayJob {spec.namespace}/{spec.name} was deleted")


def _poll(
    api: client.CustomObjectsApi,
    spec: RayJobSpec,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    on_status: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    deadline = clock() + timeout_s
    seen: tuple[Any, ...] | None = None
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, spec.name)
        except ApiException as exc:
            raise api_error(exc, f"reading RayJob {spec.namespace}/{spec.name}") from exc
        status = obj.get("status") or {}
        deployment, job = status.get("jobDeploymentStatus"), status.get("jobStatus")
        key = (deployment, job, status.get("message"))
        if key != seen and on_status is not None:
            on_status(status)
        seen = key
        if deployment == COMPLETE and job == SUCCEEDED:
            return status
        # Complete with anything but SUCCEEDED (e.g. STOPPED) is a failure too.
        if deployment in (COMPLETE, DEPLOYMENT_FAILED) or job in FAILED_JOB_STATUSES:
            raise RayJobFailed(spec.name, status)
        if clock() >= deadline:
            raise TimeoutError(
                f"RayJob {spec.namespace}/{spec.name} did not finish within {timeout_s:g} s "
                f"(last jobDeploymentStatus={deployment} jobStatus={job}: {status.get('message') or 'no message'})"
            )
        sleep(poll_s)


def run_rayjob(
    spec: RayJobSpec,
    api_client: client.ApiClient,
    *,
    poll_s: float = 10.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_status: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Create the RayJob, wait until it is Complete with jobStatus SUCCEEDED, and return its final `status`.

    Raises RayJobFailed when it fails or is stopped (the RayJob is left for KubeRay's TTL, so its logs stay readable
    meanwhile), TimeoutError after `timeout_s` (default: KubeRay's own activeDeadlineSeconds plus 10 minutes, a
    backstop should the operator be down). On the timeout, or on any exception or interruption while waiting, the
    RayJob is deleted before the error propagates. `on_status` is called with the status on every change.
    """
    if timeout_s is None:
        timeout_s = spec.active_deadline_seconds + 600.0
    api = client.CustomObjectsApi(api_client)
    _create(api, spec)
    try:
        return _poll(api, spec, poll_s, timeout_s, sleep, clock, on_status)
    except RayJobFailed:
        raise
    except BaseException as exc:  # KeyboardInterrupt and SystemExit too: no cluster may outlive the step
        _delete(api, spec, exc)
        raise
