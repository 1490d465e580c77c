"""RBAC: namespaced roles only, no wildcards, and the monitoring job's role grants what it needs and nothing more."""

from __future__ import annotations

from typing import Any

from pods import pods
from render import describe

# What the monitoring CronJob's ServiceAccount may do: submit a retraining run (KFP authorizes API calls with
# SubjectAccessReviews on these resources) or a RayJob, and find (or create) the experiment the run goes into.
MONITORING_GRANTS = {
    ("pipelines.kubeflow.org", "runs"): {"create"},
    ("pipelines.kubeflow.org", "experiments"): {"create", "get", "list"},
    ("ray.io", "rayjobs"): {"create"},
}


def _roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") in ("Role", "ClusterRole")]


def no_wildcards(objects: list[dict[str, Any]]) -> list[str]:
    return [
        f"{describe(role)}: rules[{i}].{field} contains '*'"
        for role in _roles(objects)
        for i, rule in enumerate(role.get("rules") or [])
        for field in ("apiGroups", "resources", "verbs", "resourceNames")
        if "*" in (rule.get(field) or [])
    ]


def namespaced_only(objects: list[dict[str, Any]]) -> list[str]:
    return [
        f"{describe(o)}: cluster-scoped RBAC (use a Role/RoleBinding in the namespace)"
        for o in objects
        if o.get("kind") in ("ClusterRole", "ClusterRoleBinding")
    ]


def monitoring_role_minimal(objects: list[dict[str, Any]]) -> list[str]:
    """The ServiceAccount each CronJob runs as is bound only to grants within MONITORING_GRANTS."""
    out = []
    roles = {(o["kind"], o["metadata"]["name"]): o for o in _roles(objects)}
    bindings = [o for o in objects if o.get("kind") == "RoleBinding"]
    for job in (o for o in objects if o.get("kind") == "CronJob"):
        account = pods(job)[0].spec.get("serviceAccountName") or "default"
        bound = [
            b
            for b in bindings
            if any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b.get("subjects") or [])
        ]
        if not bound:
            out.append(f"{describe(job)}: no RoleBinding for its ServiceAccount {account} (it cannot submit runs)")
        for binding in bound:
            ref = binding.get("roleRef") or {}
            role = roles.get((ref.get("kind"), ref.get("name")))
            if role is None:
                out.append(f"{describe(binding)}: roleRef {ref.get('kind')}/{ref.get('name')} is not in the manifests")
                continue
            out += _excess(role, account)
    return out


def _excess(role: dict[str, Any], account: str) -> list[str]:
    out = []
    for i, rule in enumerate(role.get("rules") or []):
        if rule.get("nonResourceURLs"):
            out.append(f"{describe(role)}: rules[{i}] grants nonResourceURLs to ServiceAccount {account}")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                allowed = MONITORING_GRANTS.get((group, resource), set())
                extra = sorted(set(rule.get("verbs") or []) - allowed)
                if extra:
                    out.append(
                        f"{describe(role)}: rules[{i}] grants {extra} on {group or 'core'}/{resource} to"
                        f" ServiceAccount {account} (allowed: {sorted(allowed) or 'nothing'})"
                    )
    return out


# Who may create RayJobs (a RayJob runs the pod spec it carries): the pipelines' own ServiceAccount and the monitoring
# job's, never the profile's default-editor that every notebook and pipeline of the namespace runs as.
RAYJOB_CREATORS = {"homefeed-pipeline", "homefeed-monitor"}


def rayjob_create_scoped(objects: list[dict[str, Any]]) -> list[str]:
    roles = {(o["kind"], o["metadata"]["name"]): o for o in _roles(objects)}
    out = []
    for binding in (o for o in objects if o.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        ref = binding.get("roleRef") or {}
        role = roles.get((ref.get("kind"), ref.get("name"))) or {}
        grants = any(
            "ray.io" in (rule.get("apiGroups") or [])
            and "rayjobs" in (rule.get("resources") or [])
            and "create" in (rule.get("verbs") or [])
            for rule in role.get("rules") or []
        )
        if not grants:
            continue
        for subject in binding.get("subjects") or []:
            if subject.get("kind") != "ServiceAccount" or subject.get("name") not in RAYJOB_CREATORS:
                out.append(
                    f"{describe(binding)}: grants create on ray.io/rayjobs to {subject.get('kind')}"
                    f" {subject.get('name')} (allowed: ServiceAccounts {sorted(RAYJOB_CREATORS)})"
                )
    return out
