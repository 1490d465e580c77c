"""Benchmark plumbing: a description of the machine, and results written as JSON (for tools and docs/results.md) plus
a markdown table (for people) under bench/results/."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_result(name: str, result: dict, markdown: str) -> Path:
    """Write bench/results/<name>.json (with the machine and time) and <name>.md, and print the markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    print(f"written {path}")
    return path


def run_child(module: str, *args: str) -> dict:
    """Run `python -m module args` in a fresh process (so its peak memory is its own) and parse its JSON line."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


@contextlib.contextmanager
def prepared_dataset(source: str, seed: int = 0) -> Iterator[Path]:
    """`source` prepared as the pipeline's data step prepares it, in a temporary directory that is removed after;
    yields the work directory, with the dataset in its `dataset/`."""
    from pipelines import steps

    with tempfile.TemporaryDirectory() as tmp:
        steps.prepare_data(source, Path(tmp) / "dataset", seed)
        yield Path(tmp)
