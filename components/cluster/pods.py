"""Pods from the rendered manifests, for a container runtime on one machine (`podman kube play`).

The workloads keep the manifests' image, command, args, env, ports, probes, resources and securityContexts; only
what needs a cluster is replaced, by these rules (docs/deploy.md lists them):

- an InferenceService becomes the pod KServe would run for its predictor: the ServingRuntime's container, with the
  predictor's `model.resources` and `model.securityContext` over the runtime's, the predictor's pod securityContext,
  labels and service account settings, and the model bundle, which KServe's storage initializer would download from
  `storageUri`, mounted at /mnt/models from a local folder;
- a ConfigMap or PersistentVolumeClaim volume named in `host_paths` becomes a hostPath to that local folder;
- an emptyDir becomes a fresh folder of the pod's own under `scratch` (writable by all, as /tmp is): podman 4.3,
  Debian 12's, plays an emptyDir as a named volume that every pod with a volume of that name shares;
- environment taken from Secrets comes from `secrets` (name -> {key: value}); a reference to a Secret not given is
  left out when it is optional and refused otherwise;
- each container port gets a host port (`host_ports`, else the same number), since there are no Services;
- a predictor pod does not restart (`restartPolicy: Never`, where KServe's Deployment restarts it): a crash shows
  as an exited container with its log.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path

MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts the bundle
MODEL_VOLUME = "kserve-provision-location"


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
    from the local folder `bundle` (retrieval/, ranking/, index/ as the registry stores a version)."""
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
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
    volumes.append({"name": MODEL_VOLUME, "hostPath": {"path": str(Path(bundle).resolve()), "type": "Directory"}})
    spec = {
        "containers": [container],
        "volumes": volumes,
        "securityContext": copy.deepcopy(predictor.get("securityContext", {})),
        "automountServiceAccountToken": predictor.get("automountServiceAccountToken", False),
        "restartPolicy": "Never",
    }
    labels = {**predictor.get("labels", {}), "app.kubernetes.io/component": "predictor"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{isvc['metadata']['name']}-predictor", "labels": labels},
        "spec": spec,
    }
    return local_pod(pod, host_paths or {}, host_ports or {}, secrets or {}, scratch)


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
            for source in ("configMap", "persistentVolumeClaim", "emptyDir", "secret"):
                volume.pop(source, None)
            volume["hostPath"] = {"path": str(path), "type": "Directory"}
    for container in spec.get("containers", []):
        env = [_secret_value(e, secrets, pod) for e in container.get("env", [])]
        for source in container.pop("envFrom", []):
            env += _secret_env(source, secrets, pod)
        container["env"] = [e for e in env if e is not None]
        for port in container.get("ports", []):
            port["hostPort"] = host_ports.get(port["containerPort"], port["containerPort"])
    return pod


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
