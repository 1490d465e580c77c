"""Built-in kinds against Kubernetes' schema, custom resources against the vendored upstream CRD schemas."""

from __future__ import annotations

import pytest
from render import target_names
from schemas import CUSTOM_RESOURCES, _validator, builtin_violations, custom_resource_violations, is_builtin

pytestmark = pytest.mark.manifests


@pytest.mark.parametrize("target", target_names())
def test_builtin_kinds_follow_the_kubernetes_schema(targets, target):
    assert builtin_violations(targets(target)) == []


@pytest.mark.parametrize("target", target_names())
def test_custom_resources_follow_their_crd_schema(targets, target):
    assert custom_resource_violations(targets(target)) == []


@pytest.mark.parametrize(("api_version", "kind"), sorted(CUSTOM_RESOURCES))
def test_every_known_custom_resource_has_its_schema_vendored(api_version, kind):
    # Loading fails with the expected path when a vendored file is missing; the schema must describe a spec.
    validator = _validator(*CUSTOM_RESOURCES[api_version, kind])
    assert "spec" in validator.schema["properties"]
    assert not is_builtin(api_version)


@pytest.mark.parametrize(
    ("api_version", "builtin"),
    [("v1", True), ("apps/v1", True), ("rbac.authorization.k8s.io/v1", True), ("ray.io/v1", False)],
)
def test_builtin_groups(api_version, builtin):
    assert is_builtin(api_version) is builtin
