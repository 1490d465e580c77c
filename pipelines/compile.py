"""Compile the pipelines to the IR YAML a Kubeflow Pipelines cluster runs.

`pipelines/golden/<name>.yaml` is each pipeline's committed compilation; a test compiles again and compares, so any
change to what a cluster would run shows up as a reviewed diff of those files (`homefeed pipeline compile --golden`).
"""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.embedding_refresh import embedding_refresh
from pipelines.homefeed_retraining import homefeed_retraining
from pipelines.homefeed_training import homefeed_training

PIPELINES = {
    "homefeed_training": homefeed_training,
    "homefeed_retraining": homefeed_retraining,
    "embedding_refresh": embedding_refresh,
}
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def pipeline(name: str):
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    return PIPELINES[name]


def golden(name: str) -> Path:
    pipeline(name)
    return GOLDEN_DIR / f"{name}.yaml"


def compile_pipeline(out: Path, name: str = "homefeed_training") -> Path:
    """Write pipeline `name`'s IR YAML to `out` (parent folders created) and return the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline(name), str(out))
    return out


def parameter_names(name: str) -> list[str]:
    """The parameters pipeline `name` declares (each pipeline takes a subset of PipelineParams)."""
    return list(pipeline(name).component_spec.inputs or {})
