"""The platform's rules over every rendered overlay and the templates: one test per rule and target.

A failure lists every violation: object, pod spec, container, field.
"""

from __future__ import annotations

import network
import policy
import pytest
import rbac
from render import TEMPLATES, overlay_names, target_names

pytestmark = pytest.mark.manifests

# Rules for anything that runs in the namespace: the overlays and the templates the pipelines submit.
EVERYWHERE = {
    "runAsNonRoot": policy.run_as_non_root,
    "allowPrivilegeEscalation false": policy.no_privilege_escalation,
    "capabilities drop ALL": policy.drop_all_capabilities,
    "seccomp RuntimeDefault": policy.seccomp_runtime_default,
    "readOnlyRootFilesystem": policy.read_only_root,
    "no host access": policy.no_host_access,
    "emptyDir scratch": policy.scratch_is_empty_dir,
    "requests and limits": policy.requests_and_limits,
    "pinned image tags": policy.pinned_images,
    "project images only": policy.project_images,
    "s3 storageUri": policy.s3_storage_uris,
    "no Secret data": policy.no_secret_data,
    "no literal secret env": policy.no_literal_secret_env,
    "no RBAC wildcards": rbac.no_wildcards,
    "namespaced RBAC": rbac.namespaced_only,
}
# Rules about what an overlay as a whole sets up.
PER_OVERLAY = {
    "restricted namespace": network.restricted_namespace,
    "default-deny NetworkPolicy": network.default_deny,
    "minimal monitoring role": rbac.monitoring_role_minimal,
}


@pytest.mark.parametrize("target", target_names())
@pytest.mark.parametrize("rule", sorted(EVERYWHERE))
def test_rule(targets, rule, target):
    violations = EVERYWHERE[rule](targets(target))
    assert violations == [], f"{rule} in {target}:\n  " + "\n  ".join(violations)


@pytest.mark.parametrize("overlay", overlay_names())
@pytest.mark.parametrize("rule", sorted(PER_OVERLAY))
def test_overlay_rule(targets, rule, overlay):
    violations = PER_OVERLAY[rule](targets(overlay))
    assert violations == [], f"{rule} in {overlay}:\n  " + "\n  ".join(violations)


@pytest.mark.parametrize("overlay", overlay_names())
def test_every_workload_has_an_allow_policy(targets, overlay):
    # The templates' pods run in each overlay's namespace, under its policies.
    objects = targets(overlay) + (targets(TEMPLATES) if TEMPLATES in target_names() else [])
    violations = network.workloads_allowed(objects)
    assert violations == [], f"in {overlay}:\n  " + "\n  ".join(violations)


def test_dev_requests_no_gpu(targets):
    assert policy.no_gpus(targets("overlays/dev")) == []


def test_prod_ranking_runs_on_a_gpu(targets):
    if "overlays/prod" not in overlay_names():
        pytest.skip("manifests/overlays/prod/kustomization.yaml does not exist yet")
    assert policy.ranking_on_gpu(targets("overlays/prod")) == []
