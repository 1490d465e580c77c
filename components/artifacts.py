"""Reading and writing the typed artifacts' JSON files (TimeSplit, Evaluation, IndexBundle, ReleaseDecision): one
way to find a file in an artifact directory and one error when it is not there."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(directory: Path, name: str, data: dict, sort_keys: bool = False) -> Path:
    """`data` as `directory/name` (the directory created), indented, with a final newline; returns the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
    return path


def read_json(directory: Path, name: str, what: str) -> dict:
    """`directory/name` parsed; FileNotFoundError saying the directory holds no `what` when it is missing."""
    path = Path(directory) / name
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no {what}: {name} is missing")
    return json.loads(path.read_text())
