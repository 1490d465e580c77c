"""The rendered targets, once per session: `targets(name)` -> that target's objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from render import MANIFESTS, kubectl, load_target


@pytest.fixture(scope="session")
def targets() -> Callable[[str], list[dict[str, Any]]]:
    if kubectl() is None:
        pytest.skip("kubectl is not installed (Debian package kubectl, which .ci/run installs; it renders kustomize)")
    cache: dict[str, list[dict[str, Any]]] = {}

    def get(name: str) -> list[dict[str, Any]]:
        if name not in cache:
            cache[name] = load_target(MANIFESTS, name)
        return cache[name]

    return get
