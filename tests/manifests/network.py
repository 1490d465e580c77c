"""Namespace isolation: the restricted Pod Security label, a default-deny NetworkPolicy, and an explicit allow for
every workload (so nothing is silently cut off by the default deny)."""

from __future__ import annotations

from typing import Any

from pods import pods
from render import describe


def restricted_namespace(objects: list[dict[str, Any]]) -> list[str]:
    namespaces = [o for o in objects if o.get("kind") == "Namespace"]
    if not namespaces:
        return ["no Namespace object: the pod-security.kubernetes.io/enforce label has nowhere to be"]
    label = "pod-security.kubernetes.io/enforce"
    return [
        f"{describe(ns)}: metadata.labels[{label}] is {value!r}, want 'restricted'"
        for ns in namespaces
        if (value := ((ns.get("metadata") or {}).get("labels") or {}).get(label)) != "restricted"
    ]


def _policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == "NetworkPolicy"]


def _selects_all(selector: dict[str, Any] | None) -> bool:
    return not (selector or {}).get("matchLabels") and not (selector or {}).get("matchExpressions")


def default_deny(objects: list[dict[str, Any]]) -> list[str]:
    for policy in _policies(objects):
        spec = policy.get("spec") or {}
        if (
            _selects_all(spec.get("podSelector"))
            and set(spec.get("policyTypes") or []) >= {"Ingress", "Egress"}
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            return []
    return ["no default-deny NetworkPolicy (podSelector: {}, policyTypes [Ingress, Egress], no ingress/egress rules)"]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and every matchExpressions requirement holds."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        holds = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op)
        if holds is None:
            raise ValueError(f"unknown label selector operator {op!r}")
        if not holds:
            return False
    return True


def workloads_allowed(objects: list[dict[str, Any]]) -> list[str]:
    """Every workload's pods are picked by an allow policy written for them: one with rules and a non-empty
    podSelector. Namespace-wide allows (DNS for every pod) do not count: on their own they still cut a workload off
    from everything it exists to talk to."""
    allows = [
        p
        for p in _policies(objects)
        if not _selects_all((p.get("spec") or {}).get("podSelector"))
        and ((p.get("spec") or {}).get("ingress") or (p.get("spec") or {}).get("egress"))
    ]
    out = []
    for obj in objects:
        for pod in pods(obj):
            if pod.labels is None:
                continue
            if not any(selects(p["spec"].get("podSelector"), pod.labels) for p in allows):
                names = [describe(p) for p in allows]
                out.append(
                    f"{pod.owner} ({pod.path}): pod labels {pod.labels} are selected by no allow NetworkPolicy"
                    f" (allows: {names})"
                )
    return out


# ---- who may reach what: admin endpoints and the way out

RAY_JOB_API_PORT = 8265  # Ray's dashboard: its job API runs code on the cluster
RAY_POD = {"homefeed.io/ray": "member", "ray.io/node-type": "head"}  # the labels of every Ray head we define
UI_GATEWAY_LABEL = "homefeed.io/ui-gateway"  # the namespace label of the ingress gateway that fronts the Evidently UI
EVIDENTLY_UI = {"app.kubernetes.io/name": "evidently-ui"}


def _ingress_rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return (policy.get("spec") or {}).get("ingress") or []


def _port_numbers(rule: dict[str, Any]) -> set[int] | None:
    """The ports a rule opens; None when it names none (every port)."""
    ports = rule.get("ports")
    return None if not ports else {p.get("port") for p in ports}


def no_ingress_from_every_namespace(objects: list[dict[str, Any]]) -> list[str]:
    """No ingress peer is `namespaceSelector: {}` (every namespace): a peer from outside names its namespace."""
    return [
        f"{describe(p)}: spec.ingress[{i}].from[{j}]: namespaceSelector selects every namespace"
        for p in _policies(objects)
        for i, rule in enumerate(_ingress_rules(p))
        for j, peer in enumerate(rule.get("from") or [])
        if "namespaceSelector" in peer and _selects_all(peer["namespaceSelector"])
    ]


def ray_job_api_scoped(objects: list[dict[str, Any]]) -> list[str]:
    """On the Ray heads, the job API port is opened only to peers in this namespace or in one namespace named by
    kubernetes.io/metadata.name (the KubeRay operator's), never to a label any namespace could carry."""
    out = []
    for p in _policies(objects):
        if not selects((p.get("spec") or {}).get("podSelector"), RAY_POD):
            continue
        for i, rule in enumerate(_ingress_rules(p)):
            ports = _port_numbers(rule)
            if ports is not None and RAY_JOB_API_PORT not in ports:
                continue
            if not rule.get("from"):
                out.append(f"{describe(p)}: spec.ingress[{i}] opens {RAY_JOB_API_PORT} to every peer")
            for j, peer in enumerate(rule.get("from") or []):
                if "ipBlock" in peer:
                    out.append(f"{describe(p)}: spec.ingress[{i}].from[{j}]: an ipBlock reaches {RAY_JOB_API_PORT}")
                ns = peer.get("namespaceSelector")
                if ns is not None and set(ns.get("matchLabels") or {}) != {"kubernetes.io/metadata.name"}:
                    out.append(
                        f"{describe(p)}: spec.ingress[{i}].from[{j}]: namespaceSelector {ns} reaches"
                        f" {RAY_JOB_API_PORT}; name the namespace (kubernetes.io/metadata.name)"
                    )
    return out


def evidently_ui_only_from_gateway(objects: list[dict[str, Any]]) -> list[str]:
    """Every ingress rule of a policy selecting the Evidently UI admits only the gateway's namespace."""
    out = []
    selecting = [p for p in _policies(objects) if selects((p.get("spec") or {}).get("podSelector"), EVIDENTLY_UI)]
    if not any(_ingress_rules(p) for p in selecting):
        return ["no NetworkPolicy admits the ingress gateway to the Evidently UI"]
    for p in selecting:
        for i, rule in enumerate(_ingress_rules(p)):
            peers = rule.get("from") or []
            if not peers:
                out.append(f"{describe(p)}: spec.ingress[{i}] admits every peer to the Evidently UI")
            for j, peer in enumerate(peers):
                labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                if labels.get(UI_GATEWAY_LABEL) != "true":
                    out.append(
                        f"{describe(p)}: spec.ingress[{i}].from[{j}] {peer} is not the gateway namespace"
                        f" ({UI_GATEWAY_LABEL}=true)"
                    )
    return out


def _open_cidr(cidr: str) -> bool:
    return cidr.strip().endswith("/0")


def no_open_egress(objects: list[dict[str, Any]]) -> list[str]:
    """Every egress rule names its peers (a rule without `to` reaches any address) and no ipBlock is a /0."""
    out = []
    for p in _policies(objects):
        for i, rule in enumerate((p.get("spec") or {}).get("egress") or []):
            if not rule.get("to"):
                out.append(f"{describe(p)}: spec.egress[{i}] has no `to`: it reaches any address")
            for j, peer in enumerate(rule.get("to") or []):
                cidr = (peer.get("ipBlock") or {}).get("cidr", "")
                if cidr and _open_cidr(cidr):
                    out.append(f"{describe(p)}: spec.egress[{i}].to[{j}].ipBlock.cidr is {cidr}: any address")
    return out
