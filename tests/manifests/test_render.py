"""Every overlay renders with kustomize and every template parses."""

from __future__ import annotations

import pytest
from render import MANIFESTS, overlay_names, render_violations, target_names

pytestmark = pytest.mark.manifests


def test_there_is_an_overlay():
    assert "overlays/dev" in overlay_names(), f"no overlays/dev/kustomization.yaml under {MANIFESTS}"


@pytest.mark.parametrize("target", target_names())
def test_target_renders(targets, target):
    assert render_violations(MANIFESTS, target) == []
    assert targets(target), f"{target} rendered no objects"
