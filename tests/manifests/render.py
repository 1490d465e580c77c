"""Render the kustomize overlays and read the templates: the objects every manifest check runs over.

A *target* is what gets deployed together: one rendered overlay (`overlays/dev`, `overlays/prod`, whatever
`manifests/overlays/*/kustomization.yaml` lists) or `templates` (the resources the pipelines submit themselves,
`manifests/templates/*.yaml`, which kustomize never sees but which run in the same namespace).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
TEMPLATES = "templates"


class RenderError(RuntimeError):
    """`kubectl kustomize` refused an overlay; the message carries its stderr."""


def kubectl() -> str | None:
    return shutil.which("kubectl")


def overlay_names(root: Path = MANIFESTS) -> list[str]:
    """`overlays/<name>` for each overlay with a kustomization.yaml, sorted: new overlays are picked up as they land."""
    return sorted(f"overlays/{p.parent.name}" for p in (root / "overlays").glob("*/kustomization.yaml"))


def target_names(root: Path = MANIFESTS) -> list[str]:
    return overlay_names(root) + ([TEMPLATES] if (root / TEMPLATES).is_dir() else [])


def render_overlay(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize <directory>` renders (kustomize v5, as the cluster's kubectl applies them)."""
    exe = kubectl()
    if exe is None:
        raise RenderError("kubectl is not installed")
    done = subprocess.run([exe, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {done.stderr.strip()}")
    return _documents(done.stdout)


def read_templates(directory: Path) -> list[dict[str, Any]]:
    """Every document of every `*.yaml` in `directory` (multi-document files allowed)."""
    return [obj for path in sorted(directory.glob("*.yaml")) for obj in _documents(path.read_text())]


def load_target(root: Path, name: str) -> list[dict[str, Any]]:
    """The objects of target `name` ("overlays/dev", "templates") under the manifests tree `root`."""
    return read_templates(root / name) if name == TEMPLATES else render_overlay(root / name)


def render_violations(root: Path, name: str) -> list[str]:
    """The render check: [] when the target renders and parses, else the reason (kustomize's or YAML's message)."""
    try:
        load_target(root, name)
    except (RenderError, yaml.YAMLError) as exc:
        return [f"{name}: {exc}"]
    return []


def describe(obj: dict[str, Any]) -> str:
    """ "Kind/name", the way every violation names its object."""
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
