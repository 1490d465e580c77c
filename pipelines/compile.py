"""Compile `homefeed_training` to the IR YAML a Kubeflow Pipelines cluster runs.

`pipelines/golden/homefeed_training.yaml` is the committed compilation; a test compiles again and compares, so any
change to what a cluster would run shows up as a reviewed diff of that file (`homefeed pipeline compile --golden`).
"""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.homefeed_training import homefeed_training

GOLDEN = Path(__file__).resolve().parent / "golden" / "homefeed_training.yaml"


def compile_pipeline(out: Path) -> Path:
    """Write the pipeline's IR YAML to `out` (parent folders created) and return the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(homefeed_training, str(out))
    return out
