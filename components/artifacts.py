"""Reading and writing the typed artifacts' JSON files (TimeSplit, Evaluation, IndexBundle, ReleaseDecision): one
way to find a file in an artifact directory and one error when it is not there; and the content hashes that tie a
release to the exact files its gate looked at."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_CHUNK = 1 << 20


def write_json(directory: Path, name: str, data: dict, sort_keys: bool = False) -> Path:
    """`data` as `directory/name` (the directory created), indented, with a final newline; returns the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
    return path


def read_json(directory: Path, name: str, what: str) -> dict:
    """`directory/name` parsed; FileNotFoundError saying the directory holds no `what` when it is missing, and a
    ValueError naming the file when it is not JSON (json's own error names only a line and column)."""
    path = Path(directory) / name
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no {what}: {name} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: the {what} is not valid JSON ({e})") from None


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks (model files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digests(directory: Path, prefix: str = "", ignore: Iterable[str] = ()) -> dict[str, str]:
    """sha256 of every file under `directory`, keyed `prefix/relative/path` ('/'-separated, sorted).

    `ignore`: glob patterns matched against each path component, as `shutil.ignore_patterns` matches them, so that
    the files hashed are exactly the ones a `copytree(..., ignore=shutil.ignore_patterns(*ignore))` copies.

    Example:
        tree_digests(Path("out/ranking"), "ranking", ignore=("work",))  # {"ranking/config.json": "3f...", ...}
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    patterns = tuple(ignore)

    def ignored(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    out = {}
    for root, dirs, files in os.walk(directory, followlinks=True):  # as copytree copies linked folders
        dirs[:] = [d for d in dirs if not ignored(d)]  # pruned, not just skipped: training scratch can be large
        for name in files:
            path = Path(root) / name
            if ignored(name) or not path.is_file():
                continue
            rel = path.relative_to(directory).as_posix()
            out[f"{prefix}/{rel}" if prefix else rel] = sha256_file(path)
    return dict(sorted(out.items()))


def digest_mismatches(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What differs between two `tree_digests` results, one line per file, naming it; [] when they agree."""
    problems = [
        f"{rel}: changed since it was hashed (sha256 {actual[rel][:12]}..., expected {expected[rel][:12]}...)"
        for rel in sorted(expected)
        if rel in actual and actual[rel] != expected[rel]
    ]
    problems += [f"{rel}: missing" for rel in sorted(set(expected) - set(actual))]
    problems += [f"{rel}: not among the hashed files (added since)" for rel in sorted(set(actual) - set(expected))]
    return problems
