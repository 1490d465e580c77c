"""Pods from the rendered manifests, for a container runtime on one machine (`podman kube play`).

The workloads keep the manifests' image, command, args, env, ports, probes, resources and securityContexts; only
what needs a cluster is replaced, by these rules (docs/deploy.md lists them):

- an InferenceService becomes the pod KServe would run for its predictor: for a `model` predictor, the
  ServingRuntime's container with the predictor's `model.resources` and `model.securityContext` over the runtime's,
  and the model bundle, which KServe's storage initializer would download from `storageUri`, mounted at /mnt/models
  from a local folder; for a custom predictor, its own `containers` and `volumes`; either way with the predictor's
  pod securityContext, labels and service account settings;
- a Deployment or StatefulSet becomes one pod of its template (replicas and update strategies need a controller);
  a StatefulSet's volumeClaimTemplate `data` is the volume `data`, which `host_paths` must name;
- the Milvus custom resource becomes the one pod of a standalone Milvus: the server of the `milvus` wheel (its own
  embedded etcd and local storage, where the operator adds etcd and MinIO) with the CR's env, resources, pod labels
  and securityContext, its data on the volume `data`, and the operator's ports and readiness probe;
- Services become names: each pod's `hostAliases` map every Service's names (`svc`, `svc.ns`, `svc.ns.svc`,
  `svc.ns.svc.cluster.local`) to the address of the pod it selects, and a URL in args or env that names a Service
  on a port its pod does not listen on (KServe's predictor Services take port 80 to 8080) gets the target port;
- a ConfigMap or PersistentVolumeClaim volume named in `host_paths` becomes a hostPath to that local folder; a claim
  taken `readOnly` makes every mount of it read-only, as the kubelet does;
- an emptyDir becomes a fresh folder of the pod's own under `scratch` (writable by all, as /tmp is): podman 4.3,
  Debian 12's, plays an emptyDir as a named volume that every pod with a volume of that name shares;
- environment taken from Secrets comes from `secrets` (name -> {key: value}); a reference to a Secret not given is
  left out when it is optional and refused otherwise;
- a container port named in `host_ports` is published on that host port (pods are otherwise reached by address);
- a predictor pod does not restart (`restartPolicy: Never`, where KServe's Deployment restarts it): a crash shows
  as an exited container with its log.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts the bundle
MODEL_VOLUME = "kserve-provision-location"
PREDICTOR_PORT = 80  # the port of KServe's `<name>-predictor` Service, whatever the container listens on
MILVUS_PORT, MILVUS_HEALTH_PORT = 19530, 9091  # the Milvus operator's Service ports: gRPC/REST proxy, health


def find(docs: Iterable[dict], kind: str, name: str) -> dict:
    """The rendered object of `kind` named `name`; KeyError naming both when absent."""
    for doc in docs:
        if doc and doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"no {kind} {name!r} in the rendered manifests")


def predictor_pod(
    isvc: dict,
    runtime: dict,
    bundle: Path,
    host_paths: Mapping[str, Path] | None = None,
    host_ports: Mapping[int, int] | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    scratch: Path | None = None,
) -> dict:
    """The Pod KServe would run for InferenceService `isvc`'s predictor on ServingRuntime `runtime`, its bundle read
    from the local folder `bundle` (retrieval/, ranking/, index/ as the registry stores a version), made local."""
    return local_pod(kserve_pod(isvc, runtime, bundle), host_paths or {}, host_ports or {}, secrets or {}, scratch)


def kserve_pod(isvc: dict, runtime: dict | None = None, bundle: Path | None = None) -> dict:
    """The Pod KServe would run for InferenceService `isvc`'s predictor: a `model` predictor on ServingRuntime
    `runtime` with its bundle at /mnt/models from the folder `bundle`, or a custom predictor's own containers."""
    predictor = isvc["spec"]["predictor"]
    if "model" in predictor:
        if runtime is None or bundle is None:
            raise ValueError(f"InferenceService {isvc['metadata']['name']} needs its ServingRuntime and a bundle")
        container, volumes = _runtime_container(isvc, runtime, Path(bundle))
        containers = [container]
    else:
        containers = copy.deepcopy(predictor["containers"])
        volumes = copy.deepcopy(predictor.get("volumes", []))
    spec = {
        "containers": containers,
        "volumes": volumes,
        "securityContext": copy.deepcopy(predictor.get("securityContext", {})),
        "automountServiceAccountToken": predictor.get("automountServiceAccountToken", False),
        "restartPolicy": "Never",
    }
    labels = {**predictor.get("labels", {}), "app.kubernetes.io/component": "predictor"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{isvc['metadata']['name']}-predictor", "labels": labels},
        "spec": spec,
    }


def _runtime_container(isvc: dict, runtime: dict, bundle: Path) -> tuple[dict, list[dict]]:
    model = isvc["spec"]["predictor"]["model"]
    if model.get("runtime") != runtime["metadata"]["name"]:
        raise ValueError(
            f"InferenceService {isvc['metadata']['name']} names runtime {model.get('runtime')!r}, "
            f"not {runtime['metadata']['name']!r}"
        )
    (container,) = copy.deepcopy(runtime["spec"]["containers"])
    for field in ("resources", "securityContext"):
        if field in model:
            container[field] = copy.deepcopy(model[field])
    container.setdefault("volumeMounts", []).append({"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT})
    volumes = copy.deepcopy(runtime["spec"].get("volumes", []))
    volumes.append({"name": MODEL_VOLUME, "hostPath": {"path": str(bundle.resolve()), "type": "Directory"}})
    return container, volumes


def workload_pod(workload: dict) -> dict:
    """One pod of a Deployment's or StatefulSet's template (a StatefulSet's first, `<name>-0`)."""
    kind, name = workload["kind"], workload["metadata"]["name"]
    if kind not in ("Deployment", "StatefulSet"):
        raise ValueError(f"{kind} {name}: only Deployments and StatefulSets become pods here")
    template = copy.deepcopy(workload["spec"]["template"])
    spec = template["spec"]
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        claim_name = claim["metadata"]["name"]
        spec.setdefault("volumes", []).append(
            {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}-0"}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-0" if kind == "StatefulSet" else name, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }


def milvus_pod(milvus: dict, image: str) -> dict:
    """The pod of a standalone Milvus custom resource, running `image` (the `milvus` wheel's server, image/)."""
    spec = milvus["spec"]
    if spec.get("mode", "standalone") != "standalone":
        raise ValueError(f"Milvus {milvus['metadata']['name']}: only mode standalone runs here")
    components = spec.get("components", {})
    auth = spec.get("config", {}).get("common", {}).get("security", {}).get("authorizationEnabled", False)
    container = {
        "name": "milvus",
        "image": components.get("image", image),
        "args": ["--data", "/var/lib/milvus", "--proxy-port", str(MILVUS_PORT),
                 "--authorization-enabled", str(bool(auth)).lower()],
        "env": copy.deepcopy(components.get("env", [])),
        "ports": [{"name": "milvus", "containerPort": MILVUS_PORT},
                  {"name": "metrics", "containerPort": MILVUS_HEALTH_PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": MILVUS_HEALTH_PORT}, "periodSeconds": 10},
        "resources": copy.deepcopy(components.get("resources", {})),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/milvus"}, {"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    name = milvus["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-milvus-standalone",
            "labels": {**components.get("podLabels", {}), "app.kubernetes.io/instance": name},
        },
        "spec": {
            "containers": [container],
            "securityContext": copy.deepcopy(components.get("securityContext", {})),
            "automountServiceAccountToken": False,
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}},
                        {"name": "tmp", "emptyDir": {}}],
        },
    }  # fmt: skip


@dataclass(frozen=True)
class Service:
    """A Service as a name to resolve: its names, the address of the pod it selects, its port -> target port."""

    name: str
    namespace: str
    address: str
    ports: dict[int, int]

    @property
    def hostnames(self) -> list[str]:
        n, ns = self.name, self.namespace
        return [n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local"]


def with_services(pod: dict, services: Iterable[Service]) -> dict:
    """`pod` resolving every Service's names to its pod's address, URLs to a Service port moved to the target port."""
    pod = copy.deepcopy(pod)
    services = list(services)
    pod["spec"]["hostAliases"] = [{"ip": s.address, "hostnames": s.hostnames} for s in services]
    for container in pod["spec"]["containers"]:
        container["args"] = [_retarget(a, services) for a in container.get("args", [])]
        for env in container.get("env", []):
            if "value" in env:
                env["value"] = _retarget(env["value"], services)
    return pod


def _retarget(text: str, services: list[Service]) -> str:
    for s in services:
        names = "|".join(re.escape(h) for h in sorted(s.hostnames, key=len, reverse=True))

        def port(m: re.Match, s: Service = s) -> str:
            given = int(m.group(3)) if m.group(3) else (443 if m.group(1) == "https" else 80)
            if s.ports.get(given, given) == given:
                return m.group(0)
            return f"{m.group(1)}://{m.group(2)}:{s.ports[given]}"

        text = re.sub(rf"\b(https?)://({names})(?::(\d+))?(?![\w.-])", port, text)
    return text


def local_pod(
    pod: dict,
    host_paths: Mapping[str, Path],
    host_ports: Mapping[int, int],
    secrets: Mapping[str, Mapping[str, str]],
    scratch: Path | None = None,
) -> dict:
    """`pod` with the volumes, Secrets and ports a single machine cannot serve replaced (the module docstring)."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    read_only: set[str] = set()  # claims the pod takes read-only: a hostPath has no such field, its mounts do
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume and volume["name"] not in host_paths:
            if scratch is None:
                raise ValueError(f"{pod['metadata']['name']}: emptyDir {volume['name']!r} needs a scratch folder")
            folder = Path(scratch).resolve() / pod["metadata"]["name"] / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o1777)
            del volume["emptyDir"]
            volume["hostPath"] = {"path": str(folder), "type": "Directory"}
        elif volume["name"] in host_paths:
            path = Path(host_paths[volume["name"]]).resolve()
            if volume.get("persistentVolumeClaim", {}).get("readOnly"):
                read_only.add(volume["name"])
            for source in ("configMap", "persistentVolumeClaim", "emptyDir", "secret"):
                volume.pop(source, None)
            volume["hostPath"] = {"path": str(path), "type": "Directory"}
        elif {"configMap", "persistentVolumeClaim", "secret"} & set(volume):
            raise ValueError(f"{pod['metadata']['name']}: volume {volume['name']!r} needs a folder in `host_paths`")
    for container in spec.get("containers", []):
        for mount in container.get("volumeMounts", []):
            if mount["name"] in read_only:
                mount["readOnly"] = True
        env = [_secret_value(e, secrets, pod) for e in container.get("env", [])]
        for source in container.pop("envFrom", []):
            env += _secret_env(source, secrets, pod)
        container["env"] = [e for e in env if e is not None]
        _expand_references(container, pod["metadata"]["name"])
        for port in container.get("ports", []):
            if port["containerPort"] in host_ports:
                port["hostPort"] = host_ports[port["containerPort"]]
    return pod


def _expand_references(container: dict, pod_name: str) -> None:
    """`$(NAME)` in `command` and `args` replaced by the container's env var NAME, as the kubelet does (podman 4.3
    does not); `$$` is a literal `$`, and a reference to no variable is left as it is. A `fieldRef` to
    `metadata.name` is the pod's name."""
    values = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    for e in container.get("env", []):
        if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[e["name"]] = pod_name

    def expand(text: str) -> str:
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else values.get(m.group(1), m.group(0)), text)  # fmt: skip

    for key in ("command", "args"):
        if key in container:
            container[key] = [expand(a) for a in container[key]]


def _missing(ref: dict, pod: dict, what: str) -> None:
    if not ref.get("optional", False):
        raise ValueError(f"{pod['metadata']['name']}: {what} needs Secret {ref['name']!r}; pass it in `secrets`")


def _secret_env(source: dict, secrets: Mapping[str, Mapping[str, str]], pod: dict) -> list[dict]:
    ref = source.get("secretRef")
    if ref is None:
        raise ValueError(f"{pod['metadata']['name']}: envFrom {source} is not supported here (Secrets only)")
    if ref["name"] not in secrets:
        _missing(ref, pod, "envFrom")
        return []
    return [{"name": k, "value": v} for k, v in secrets[ref["name"]].items()]


def _secret_value(env: dict, secrets: Mapping[str, Mapping[str, str]], pod: dict) -> dict | None:
    ref = env.get("valueFrom", {}).get("secretKeyRef")
    if ref is None:
        return env
    if ref["name"] in secrets and ref["key"] in secrets[ref["name"]]:
        return {"name": env["name"], "value": secrets[ref["name"]][ref["key"]]}
    _missing(ref, pod, f"env {env['name']}")
    return None
