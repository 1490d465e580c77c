"""The doors an audit found open, each closed in the manifests and kept closed here (docs/security.md): the Evidently
UI reachable from the ingress gateway only, its workspace read-only; Ray's job API from the KubeRay operator's
namespace only; Redis behind a password that every client presents; the operator-built pods' security
context where the CRs have a field for it; egress to named ranges only; `create rayjobs` off default-editor, with an
admission policy for what a RayJob may run; no API token where a pod needs none."""

from __future__ import annotations

from pathlib import Path

import network
import policy
import pytest
import rbac
import yaml
from render import MANIFESTS, overlay_names, target_names
from schemas import builtin_violations

from pipelines.ray_backend import IMAGE as PROJECT_IMAGE

pytestmark = pytest.mark.manifests

CLUSTER = MANIFESTS / "cluster"  # cluster-scoped objects an administrator applies; no overlay renders them


def _assert_none(violations: list[str], what: str) -> None:
    assert violations == [], f"{what}:\n  " + "\n  ".join(violations)


@pytest.mark.parametrize("overlay", overlay_names())
def test_only_the_gateway_reaches_the_evidently_ui(targets, overlay):
    _assert_none(network.evidently_ui_only_from_gateway(targets(overlay)), overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_the_evidently_ui_reads_its_workspace_only(targets, overlay):
    _assert_none(policy.evidently_workspace_read_only(targets(overlay)), overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_ray_job_api_is_reached_from_the_operators_namespace_only(targets, overlay):
    objects = targets(overlay)
    _assert_none(network.no_ingress_from_every_namespace(objects) + network.ray_job_api_scoped(objects), overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_redis_requires_a_password_that_every_client_presents(targets, overlay):
    objects = targets(overlay)
    _assert_none(policy.redis_requires_password(objects) + policy.redis_clients_authenticate(objects), overlay)
    assert any("redis-server" in str(c.get("command")) for _, c in policy._all_containers(objects)), "no Redis found"


@pytest.mark.parametrize("overlay", overlay_names())
def test_every_model_server_takes_its_token_from_a_secret(targets, overlay):
    _assert_none(policy.model_servers_take_a_token(targets(overlay)), overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_operator_built_pods_get_the_security_context_their_crs_allow(targets, overlay):
    _assert_none(policy.operator_crs_security(targets(overlay)), overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_no_egress_to_any_address(targets, overlay):
    _assert_none(network.no_open_egress(targets(overlay)), overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_only_the_pipelines_own_account_creates_rayjobs(targets, overlay):
    _assert_none(rbac.rayjob_create_scoped(targets(overlay)), overlay)


def test_a_cluster_admission_policy_restricts_what_a_rayjob_runs():
    objects = [d for p in sorted(CLUSTER.glob("*.yaml")) if p.name != "kustomization.yaml"
               for d in yaml.safe_load_all(p.read_text()) if d]  # fmt: skip
    _assert_none(builtin_violations(objects), "manifests/cluster")
    by_kind = {o["kind"]: o for o in objects}
    vap, binding = by_kind["ValidatingAdmissionPolicy"], by_kind["ValidatingAdmissionPolicyBinding"]
    assert vap["spec"]["failurePolicy"] == "Fail"
    (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["ray.io"] and "rayjobs" in rule["resources"]
    assert {"CREATE", "UPDATE"} <= set(rule["operations"])
    assert binding["spec"]["policyName"] == vap["metadata"]["name"] and binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "homefeed"
    }
    expressions = " ".join(v["expression"] for v in vap["spec"]["validations"])
    repository = policy.split_image(PROJECT_IMAGE)[0]
    assert f"startsWith('{repository}:')" in expressions  # the image the code's RayJobs run
    for field in (
        "runAsNonRoot",
        "allowPrivilegeEscalation",
        "privileged",
        "hostPath",
        "hostNetwork",
        "serviceAccountName",
    ):
        assert field in expressions, field
    assert (Path(CLUSTER) / "kustomization.yaml").is_file()


@pytest.mark.parametrize("target", target_names())
def test_no_api_token_where_a_pod_needs_none(targets, target):
    _assert_none(policy.token_only_where_needed(targets(target)), target)
