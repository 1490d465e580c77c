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
