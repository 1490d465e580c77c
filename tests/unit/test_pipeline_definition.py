"""The pipeline as a cluster sees it: the compiled IR matches the committed golden file, and its parameters are
exactly the typed PipelineParams (names, types and defaults)."""

from __future__ import annotations

import inspect

import pytest
import yaml

from pipelines.compile import GOLDEN, compile_pipeline
from pipelines.homefeed_training import homefeed_training
from pipelines.params import DEFAULTS, PipelineParams

pytestmark = pytest.mark.unit

STEPS = {"data", "features", "train-retrieval", "train-ranking", "evaluate", "index", "monitor"}


def test_compiled_pipeline_matches_golden(tmp_path):
    out = compile_pipeline(tmp_path / "homefeed_training.yaml")
    assert out.read_text() == GOLDEN.read_text(), (
        "the compiled pipeline differs from pipelines/golden/homefeed_training.yaml; if the change is intended, "
        "run `homefeed pipeline compile --golden` and review the diff"
    )


def test_golden_has_every_step_wired_to_its_inputs():
    ir = yaml.safe_load(GOLDEN.read_text())
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == STEPS
    assert tasks["train-ranking"]["dependentTasks"] == ["data", "train-retrieval"]
    assert set(tasks["evaluate"]["dependentTasks"]) == {"data", "train-retrieval", "train-ranking"}
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert len(images) == 1 and not images.pop().endswith(":latest")


def test_pipeline_parameters_are_the_typed_params():
    signature = inspect.signature(homefeed_training.pipeline_func)
    assert list(signature.parameters) == list(PipelineParams.model_fields)
    for name, param in signature.parameters.items():
        assert param.default == getattr(DEFAULTS, name), name
        assert param.annotation is PipelineParams.model_fields[name].annotation, name
