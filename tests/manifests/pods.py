"""Where each kind keeps its pods: one function, `pods(obj)`, that the policy checks iterate.

A `Pod` is what one object makes the cluster run: its pod-level fields, its containers, the labels the pods will
carry (for NetworkPolicy selection) and which policy aspects the object can express at all. Operators build some
pods themselves; where a custom resource has no field for something, the check for it is left out (`settable`)
rather than pretended:

- InferenceService: KServe adds the storage-initializer init container and (serverless mode) Knative's queue-proxy
  sidecar; their security context and resources come from KServe's configuration, not from our objects.
- InferenceGraph: the router pods are KServe's; the CR sets their `resources` only.
- ServingRuntime: has no pod-level securityContext; its containers must carry runAsNonRoot and seccomp themselves
  (at runtime they merge with the InferenceService's predictor, but the runtime should not rely on that).
- Milvus: the operator builds the containers and, unless the CR names one, runs the Milvus image its release pins
  (the project builds none, so our objects name none); the CR sets image, resources, env, volumes and a
  securityContext that the operator applies to the Milvus container (`runAsNonRoot` sets the pod's). A read-only
  root is impossible there (the operator's start script writes the configuration into the image), so the container
  rules are checked by policy.operator_crs_security rather than here, as are its etcd's Helm values (the schema
  leaves them open).
- FeatureStore: the operator builds the containers; the CR sets the pod securityContext (services.securityContext)
  and, per server, image, env and resources: same exclusions as Milvus.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from render import describe

# The policy aspects; a Pod lists those its object can express.
CONTAINER_SECURITY = "container securityContext"
POD_SECURITY = "pod securityContext"
SCRATCH = "emptyDir scratch"
RESOURCES = "resources"
IMAGE = "image"
ALL = frozenset({CONTAINER_SECURITY, POD_SECURITY, SCRATCH, RESOURCES, IMAGE})
OPERATOR_BUILT = frozenset({POD_SECURITY, RESOURCES, IMAGE})


@dataclass(frozen=True)
class Container:
    name: str
    spec: dict[str, Any]
    # Aspects this container takes from elsewhere, checked there: an InferenceService's `model` is merged into the
    # ServingRuntime's container (its image, volumeMounts and scratch volume), and the milvus-operator's release
    # pins the Milvus image when the CR names none (the project builds no Milvus image). A value that is set here is
    # still checked.
    inherited: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Pod:
    owner: str  # "Kind/name"
    path: str  # where the pod-level fields are, e.g. "spec.jobTemplate.spec.template.spec"
    spec: dict[str, Any]  # the pod-level fields (securityContext, volumes, host*, nodeSelector, tolerations)
    containers: list[Container]
    labels: dict[str, str] | None  # None: not a workload of its own (a ServingRuntime)
    settable: frozenset[str] = ALL
    kind: str = field(default="", compare=False)

    def where(self, container: Container) -> str:
        return f"{self.owner} ({self.path}) container {container.name}"


_TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
_ISVC_COMPONENTS = ("predictor", "transformer", "explainer")
_MILVUS_COMPONENTS = (
    "standalone", "proxy", "mixCoord", "rootCoord", "dataCoord", "queryCoord", "indexCoord",
    "dataNode", "queryNode", "indexNode", "streamingNode", "cdc",
)  # fmt: skip


def pods(obj: dict[str, Any]) -> list[Pod]:
    """The pods `obj` makes the cluster run ([] for kinds that run none)."""
    kind, spec, name = obj.get("kind"), obj.get("spec") or {}, describe(obj)
    meta_labels = (obj.get("metadata") or {}).get("labels") or {}
    if kind in _TEMPLATED:
        return [_templated(name, kind, spec.get("template") or {}, "spec.template")]
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return [_templated(name, kind, template, "spec.jobTemplate.spec.template")]
    if kind == "Pod":
        return [_plain(name, kind, spec, "spec", meta_labels)]
    if kind == "RayCluster":
        return list(_ray_cluster(name, kind, spec, "spec"))
    if kind == "RayJob":
        # The cluster the job brings up, plus the submitter pod (K8sJobMode) when we give its template.
        found = list(_ray_cluster(name, kind, spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec"))
        if "submitterPodTemplate" in spec:
            found.append(_templated(name, kind, spec["submitterPodTemplate"], "spec.submitterPodTemplate"))
        return found
    if kind == "InferenceService":
        return [_isvc_component(obj, part) for part in _ISVC_COMPONENTS if part in spec]
    if kind == "ServingRuntime":
        # A pod template for the InferenceServices that select it: no labels of its own, no pod securityContext.
        return [_plain(name, kind, spec, "spec", None)]
    if kind == "InferenceGraph":
        router = Container("router", {"resources": spec.get("resources")} if "resources" in spec else {})
        labels = {**meta_labels, "serving.kserve.io/inferencegraph": obj["metadata"]["name"]}
        return [Pod(name, "spec", spec, [router], labels, frozenset({RESOURCES}), kind)]
    if kind == "Milvus":
        return _milvus(obj)
    if kind == "FeatureStore":
        return _feature_store(obj)
    return []


def _plain(owner: str, kind: str, spec: dict, path: str, labels: dict | None) -> Pod:
    containers = [Container(c.get("name", "?"), c) for c in spec.get("initContainers") or []]
    containers += [Container(c.get("name", "?"), c) for c in spec.get("containers") or []]
    return Pod(owner, path, spec, containers, labels, ALL, kind)


def _templated(owner: str, kind: str, template: dict, path: str) -> Pod:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return _plain(owner, kind, template.get("spec") or {}, f"{path}.spec", labels)


def _ray_cluster(owner: str, kind: str, cluster: dict, path: str) -> Iterator[Pod]:
    # KubeRay adds ray.io/node-type (and the cluster name) to the template's labels.
    head = _templated(
        owner, kind, (cluster.get("headGroupSpec") or {}).get("template") or {}, f"{path}.headGroupSpec.template"
    )
    yield _with_labels(head, {"ray.io/node-type": "head"})
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        worker = _templated(owner, kind, group.get("template") or {}, f"{path}.workerGroupSpecs[{i}].template")
        yield _with_labels(worker, {"ray.io/node-type": "worker"})


def _with_labels(pod: Pod, extra: dict[str, str]) -> Pod:
    return Pod(pod.owner, pod.path, pod.spec, pod.containers, {**(pod.labels or {}), **extra}, pod.settable, pod.kind)


def _isvc_component(obj: dict, part: str) -> Pod:
    # A PodSpec inlined in the component, plus `model`: a container (resources, securityContext, env, volumeMounts)
    # that inherits the component's pod-level fields. KServe copies the InferenceService's labels and the
    # component's `labels` to the pods, and adds the two below.
    component = obj["spec"][part] or {}
    pod = _plain(describe(obj), "InferenceService", component, f"spec.{part}", None)
    containers = list(pod.containers)
    if "model" in component:
        containers.append(Container("model", component["model"] or {}, inherited=frozenset({IMAGE, SCRATCH})))
    labels = {
        **((obj.get("metadata") or {}).get("labels") or {}),
        **(component.get("labels") or {}),
        "serving.kserve.io/inferenceservice": obj["metadata"]["name"],
        "component": part,
    }
    return Pod(pod.owner, pod.path, component, containers, labels, ALL, "InferenceService")


def _milvus(obj: dict) -> list[Pod]:
    # spec.components holds the defaults every component inherits (image, resources, env, securityContext, ...);
    # a named component (standalone, proxy, queryNode...) overrides them. The operator labels its pods with the
    # instance name; podLabels adds ours.
    defaults = (obj.get("spec") or {}).get("components") or {}
    named = [c for c in _MILVUS_COMPONENTS if isinstance(defaults.get(c), dict)]
    found = []
    for part in named or [None]:
        merged = {**defaults, **(defaults[part] if part else {})}
        path = f"spec.components.{part}" if part else "spec.components"
        fields = {k: merged[k] for k in ("image", "resources", "env") if k in merged}
        container = Container(part or "milvus", fields, inherited=frozenset({IMAGE}))
        security = dict(merged.get("securityContext") or {})
        if "runAsNonRoot" in merged:  # the CR's shorthand for the pod securityContext field
            security.setdefault("runAsNonRoot", merged["runAsNonRoot"])
        pod_spec = {"securityContext": security, "hostNetwork": merged.get("hostNetwork")}
        labels = {
            **(merged.get("podLabels") or {}),
            "app.kubernetes.io/name": "milvus",
            "app.kubernetes.io/instance": obj["metadata"]["name"],
        }
        found.append(Pod(describe(obj), path, pod_spec, [container], labels, OPERATOR_BUILT, "Milvus"))
    return found


def _feature_store(obj: dict) -> list[Pod]:
    # One Deployment for all the servers; each server (online, offline, registry, ui) is a container whose image,
    # env and resources we set under services.<store>.server (services.ui directly). The operator labels the pod
    # feast.dev/name=<name>.
    services = (obj.get("spec") or {}).get("services") or {}
    servers = {
        "online": (services.get("onlineStore") or {}).get("server"),
        "offline": (services.get("offlineStore") or {}).get("server"),
        "registry": ((services.get("registry") or {}).get("local") or {}).get("server"),
        "ui": services.get("ui"),
    }
    containers = [Container(name, server) for name, server in servers.items() if isinstance(server, dict)]
    pod_spec = {"securityContext": services.get("securityContext") or {}}
    labels = {"feast.dev/name": obj["metadata"]["name"]}
    return [Pod(describe(obj), "spec.services", pod_spec, containers, labels, OPERATOR_BUILT, "FeatureStore")]
