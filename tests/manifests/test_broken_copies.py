"""Each check fails on a deliberately broken copy of the manifests.

Every case copies manifests/ to a temporary folder, makes one small edit to one file on disk, renders the target
again from the copy, and asserts that the check reports a *new* violation (absent before the edit) naming the
object and field. Comparing against the unbroken copy keeps these tests meaningful while the real tree still has
violations of its own. An edit whose file or text is gone fails loudly: rewrite it against the file as it is now.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import network
import policy
import pytest
import rbac
import yaml
from render import MANIFESTS, kubectl, load_target, render_violations
from schemas import builtin_violations, custom_resource_violations

pytestmark = pytest.mark.manifests

RENDER = "render"  # the check is the rendering itself


@dataclass(frozen=True)
class Replace:
    """Replace the one occurrence of `old` in `file` (relative to manifests/) with `new`."""

    file: str
    old: str
    new: str

    def apply(self, root: Path) -> None:
        path = root / self.file
        text = path.read_text()  # FileNotFoundError names the file when it was renamed
        assert text.count(self.old) == 1, (
            f"{self.file}: expected {self.old!r} exactly once, found {text.count(self.old)}"
        )
        path.write_text(text.replace(self.old, self.new))


@dataclass(frozen=True)
class AddResource:
    """Write `text` to `folder/name` and list it in `folder/kustomization.yaml`'s resources."""

    folder: str
    name: str
    text: str

    def apply(self, root: Path) -> None:
        (root / self.folder / self.name).write_text(self.text)
        kustomization = root / self.folder / "kustomization.yaml"
        data = yaml.safe_load(kustomization.read_text())
        data["resources"].append(self.name)
        kustomization.write_text(yaml.safe_dump(data))


@dataclass(frozen=True)
class Case:
    description: str
    mutation: Replace | AddResource
    target: str  # "overlays/dev", "overlays/prod", "templates"
    check: Callable[[list[dict[str, Any]]], list[str]] | str
    expected: str  # a substring of the one new violation the edit must cause

    def violations(self, root: Path) -> list[str]:
        if self.check == RENDER:
            return render_violations(root, self.target)
        return self.check(load_target(root, self.target))


CRONJOB = "base/monitoring/cronjob.yaml"
UI = "base/monitoring/evidently-ui.yaml"
ROLE = "base/monitoring/role.yaml"
DEV = "overlays/dev"
UI_CONTAINER = "Deployment/evidently-ui (spec.template.spec) container ui: "
MONITOR_CONTAINER = "CronJob/homefeed-monitor (spec.jobTemplate.spec.template.spec) container monitor: "
CASES = [
    Case(
        "kustomization lists a missing file",
        Replace("base/monitoring/kustomization.yaml", "  - role.yaml\n", "  - role.yaml\n  - missing.yaml\n"),
        DEV, RENDER, "missing.yaml",
    ),
    Case(
        "replicas is a string",
        Replace(UI, "  replicas: 1\n", '  replicas: "two"\n'),
        DEV, builtin_violations, "Deployment/evidently-ui: spec.replicas: 'two' is not of type 'integer'",
    ),
    Case(
        "a misspelt Deployment field",
        Replace(UI, "automountServiceAccountToken: false", "automountServiceAcountToken: false"),
        DEV, builtin_violations, "'automountServiceAcountToken' was unexpected",
    ),
    Case(
        "a kind nobody knows",
        AddResource("base/monitoring", "widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"),
        DEV, custom_resource_violations, "Widget/w: no schema for Widget example.com/v1",
    ),
    Case(
        "storageURI misspelt in an InferenceService",
        Replace("base/serving/ranking.yaml", "      storageUri:", "      storageURI:"),
        DEV, custom_resource_violations,
        "InferenceService/ranking: spec.predictor.model: Additional properties are not allowed ('storageURI' was",
    ),
    Case(
        "a misspelt RayJob field in a template",
        Replace("templates/rayjob.yaml", "shutdownAfterJobFinishes: true", "shutdownAfterJobFinish: true"),
        "templates", custom_resource_violations, "'shutdownAfterJobFinish' was unexpected",
    ),
    Case(
        "runAsNonRoot false", Replace(UI, "runAsNonRoot: true", "runAsNonRoot: false"),
        DEV, policy.run_as_non_root, UI_CONTAINER + "securityContext.runAsNonRoot is False",
    ),
    Case(
        "privilege escalation allowed",
        Replace(CRONJOB, "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"),
        DEV, policy.no_privilege_escalation, MONITOR_CONTAINER + "securityContext.allowPrivilegeEscalation is True",
    ),
    Case(
        "capabilities not all dropped", Replace(UI, 'drop: ["ALL"]', 'drop: ["NET_RAW"]'),
        DEV, policy.drop_all_capabilities, UI_CONTAINER + "securityContext.capabilities.drop is ['NET_RAW']",
    ),
    Case(
        "a capability added", Replace(UI, 'drop: ["ALL"]', 'drop: ["ALL"]\n              add: ["NET_ADMIN"]'),
        DEV, policy.drop_all_capabilities, UI_CONTAINER + "securityContext.capabilities.add is ['NET_ADMIN']",
    ),
    Case(
        "seccomp unconfined", Replace(UI, "type: RuntimeDefault", "type: Unconfined"),
        DEV, policy.seccomp_runtime_default, UI_CONTAINER + "securityContext.seccompProfile.type is 'Unconfined'",
    ),
    Case(
        "readOnlyRootFilesystem removed", Replace(UI, "            readOnlyRootFilesystem: true\n", ""),
        DEV, policy.read_only_root, UI_CONTAINER + "securityContext.readOnlyRootFilesystem is None",
    ),
    Case(
        "hostNetwork",
        Replace(UI, "      automountServiceAccountToken: false\n", "      automountServiceAccountToken: false\n      hostNetwork: true\n"),
        DEV, policy.no_host_access, "Deployment/evidently-ui (spec.template.spec): hostNetwork is true",
    ),
    Case(
        "a hostPath volume",
        Replace(UI, "          persistentVolumeClaim:\n            claimName: homefeed-monitoring\n"
                "            readOnly: true\n", "          hostPath:\n            path: /srv/workspace\n"),
        DEV, policy.no_host_access, "Deployment/evidently-ui (spec.template.spec): volume workspace is a hostPath",
    ),
    Case(
        "the UI's workspace mounted read-write",
        Replace(UI, "mountPath: /workspace, readOnly: true}", "mountPath: /workspace}"),
        DEV, policy.evidently_workspace_read_only, UI_CONTAINER + "volumeMount workspace is not readOnly",
    ),
    Case(
        "the UI's workspace claim read-write",
        Replace(UI, "            claimName: homefeed-monitoring\n            readOnly: true\n",
                "            claimName: homefeed-monitoring\n"),
        DEV, policy.evidently_workspace_read_only,
        "Deployment/evidently-ui (spec.template.spec): volume workspace: persistentVolumeClaim.readOnly is not true",
    ),
    Case(
        "the /tmp emptyDir unmounted", Replace(UI, "            - {name: tmp, mountPath: /tmp}\n", ""),
        DEV, policy.scratch_is_empty_dir, UI_CONTAINER + "volumeMounts ['workspace'] include no emptyDir volume",
    ),
    Case(
        "a CPU limit missing", Replace(CRONJOB, 'limits: {cpu: "2", memory: 6Gi}', "limits: {memory: 6Gi}"),
        DEV, policy.requests_and_limits, MONITOR_CONTAINER + "resources.limits lacks cpu",
    ),
    Case(
        "the namespace is only baseline",
        Replace("base/namespace.yaml", "enforce: restricted", "enforce: baseline"),
        DEV, network.restricted_namespace,
        "Namespace/homefeed: metadata.labels[pod-security.kubernetes.io/enforce] is 'baseline'",
    ),
    Case(
        "the default deny dropped", Replace("base/network/kustomization.yaml", "  - default-deny.yaml\n", ""),
        DEV, network.default_deny, "no default-deny NetworkPolicy",
    ),
    Case(
        "the UI's allow selects another label",
        Replace("base/monitoring/network.yaml", "app.kubernetes.io/name: evidently-ui", "app.kubernetes.io/name: evidently"),
        DEV, network.workloads_allowed, "Deployment/evidently-ui (spec.template.spec): pod labels",
    ),
    Case(
        "an image tagged latest",
        Replace(UI, "ghcr.io/homefeed-platform/homefeed:0.1.0", "ghcr.io/homefeed-platform/homefeed:latest"),
        DEV, policy.pinned_images, UI_CONTAINER + "image ghcr.io/homefeed-platform/homefeed:latest has no pinned tag",
    ),
    Case(
        "someone else's image",
        Replace(CRONJOB, "ghcr.io/homefeed-platform/homefeed:0.1.0", "docker.io/library/python:3.11"),
        DEV, policy.project_images, MONITOR_CONTAINER + "image docker.io/library/python:3.11 is not the project's image",
    ),
    Case(
        "a model from outside the registry",
        Replace("base/serving/ranking.yaml", "storageUri: s3://", "storageUri: https://example.com/"),
        DEV, policy.s3_storage_uris, "InferenceService/ranking: spec.predictor.model.storageUri: storageUri 'https://",
    ),
    Case(
        "a Secret with stringData",
        AddResource("base/monitoring", "leak.yaml",
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n"),
        DEV, policy.no_secret_data, "Secret/db: stringData is set",
    ),
    Case(
        "a literal password in env",
        Replace(CRONJOB, "                - name: HOME\n",
                "                - name: DB_PASSWORD\n                  value: hunter2\n                - name: HOME\n"),
        DEV, policy.no_literal_secret_env, "CronJob/homefeed-monitor: spec.jobTemplate.spec.template.spec.containers[0].env: env DB_PASSWORD has a literal value",
    ),
    Case(
        "a wildcard verb", Replace(ROLE, 'verbs: ["create"]', 'verbs: ["create", "*"]'),
        DEV, rbac.no_wildcards, "Role/homefeed-monitor: rules[0].verbs contains '*'",
    ),
    Case(
        "a ClusterRole", Replace(ROLE, "kind: Role\nmetadata:", "kind: ClusterRole\nmetadata:"),
        DEV, rbac.namespaced_only, "ClusterRole/homefeed-monitor: cluster-scoped RBAC",
    ),
    Case(
        "the monitoring role may delete runs", Replace(ROLE, 'verbs: ["create"]', 'verbs: ["create", "delete"]'),
        DEV, rbac.monitoring_role_minimal,
        "Role/homefeed-monitor: rules[0] grants ['delete'] on pipelines.kubeflow.org/runs to ServiceAccount homefeed-monitor",
    ),
    Case(
        "the monitoring role may read secrets",
        Replace(ROLE, "rules:\n", 'rules:\n  - apiGroups: [""]\n    resources: ["secrets"]\n    verbs: ["get"]\n'),
        DEV, rbac.monitoring_role_minimal, "Role/homefeed-monitor: rules[0] grants ['get'] on core/secrets",
    ),
    Case(
        "a GPU in dev",
        Replace(CRONJOB, 'requests: {cpu: "1", memory: 4Gi}', 'requests: {cpu: "1", memory: 4Gi, nvidia.com/gpu: 1}'),
        DEV, policy.no_gpus,
        "CronJob/homefeed-monitor: spec.jobTemplate.spec.template.spec.containers[0].resources.requests.nvidia.com/gpu requests a GPU",
    ),
    Case(
        "the prod ranking GPU limit dropped",
        Replace("overlays/prod/ranking-gpu.yaml", 'limits: {cpu: "4", memory: 16Gi, nvidia.com/gpu: "1"}',
                'limits: {cpu: "4", memory: 16Gi}'),
        "overlays/prod", policy.ranking_on_gpu,
        "InferenceService/ranking: spec.predictor: no container has resources.limits.nvidia.com/gpu: 1",
    ),
    Case(
        "the prod ranking without GPU nodes",
        Replace(
            "overlays/prod/ranking-gpu.yaml",
            '    nodeSelector:\n      nvidia.com/gpu.present: "true"\n'
            "    tolerations:\n      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n",
            "",
        ),
        "overlays/prod", policy.ranking_on_gpu, "neither nodeSelector nor tolerations name GPU nodes",
    ),
    Case(
        "Redis without its password",
        Replace("base/features/redis.yaml", '"--requirepass", "$(REDIS_PASSWORD)", ', ""),
        DEV, policy.redis_requires_password, "StatefulSet/redis: spec.template.spec.containers container redis: "
        "redis-server without --requirepass",
    ),
    Case(
        "Redis in unprotected mode",
        Replace("base/features/redis.yaml", '"--bind", "0.0.0.0", ', '"--bind", "0.0.0.0", "--protected-mode", "no", '),
        DEV, policy.redis_requires_password, "redis-server runs with --protected-mode no",
    ),
    Case(
        "a Redis client without the password",
        Replace("base/actions/deployment.yaml", "secretKeyRef: {name: homefeed-redis, key: password}",
                "secretKeyRef: {name: homefeed-milvus, key: password}"),
        DEV, policy.redis_clients_authenticate, "Deployment/actions: spec.template.spec.containers container actions: "
        "is given a Redis URL without REDIS_PASSWORD",
    ),
    Case(
        "a password in a Redis URL",
        Replace("base/stream/deployment.yaml", "- redis://redis:6379/0", "- redis://:hunter2@redis:6379/0"),
        DEV, policy.redis_clients_authenticate, "carries credentials (they belong in REDIS_PASSWORD)",
    ),
    Case(
        "the Feast configuration without the password",
        Replace("base/features/feature_store.yaml", ",password=${REDIS_PASSWORD}", ""),
        DEV, policy.redis_clients_authenticate, "feature_store.yaml's Redis connection_string has no password",
    ),
    Case(
        "a model server without its token",
        Replace("base/serving/homefeed.yaml", "secretKeyRef: {name: homefeed-serving, key: token, optional: true}",
                "secretKeyRef: {name: homefeed-redis, key: password}"),
        DEV, policy.model_servers_take_a_token, "InferenceService/homefeed: spec.predictor.containers container "
        "kserve-container: no SERVING_TOKEN from Secret homefeed-serving key token",
    ),
]  # fmt: skip


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed (Debian package kubectl; .ci/run installs it)")
@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_check_catches_the_broken_copy(case, tmp_path):
    root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, root)
    before = case.violations(root)
    case.mutation.apply(root)
    new = [v for v in case.violations(root) if v not in before]
    assert any(case.expected in v for v in new), (
        f"{case.description} ({case.mutation}) was not reported as {case.expected!r}; new violations: {new}"
    )
