"""The `homefeed_training` pipeline: data → features → retrieval → ranking → evaluate → gate → (corpus + index →
deploy), with the engagement-drift report alongside.

One definition for every target: pipelines/local.py runs it with kfp.local on this machine, pipelines/compile.py
writes the IR YAML a Kubeflow cluster runs. Parameters are the knobs a user turns per run; their types, defaults and
bounds live in pipelines/params.py, from which pipelines/factory.py makes the KFP signature. The stages shared with
the other pipelines live in pipelines/stages.py.
(No `from __future__ import annotations`: KFP reads the live annotations.)

The index and deploy steps run only when the gate passes, so they are not pipeline outputs (KFP allows a conditional
output only through dsl.OneOf, which kfp.local cannot run yet); a local run still lists them in run.json.
"""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from pipelines import kfp_components as c
from pipelines import stages
from pipelines.factory import pipeline_of
from pipelines.params import TRAINING, PipelineParams

PIPELINE_NAME = "homefeed-training"


class Outputs(NamedTuple):
    dataset: Dataset
    feature_store: Artifact
    retrieval_model: Model
    ranking_model: Model
    evaluation: Artifact
    metrics: Metrics
    decision: Artifact
    gate_metrics: Metrics
    drift: Artifact
    drift_html: HTML


@pipeline_of(PIPELINE_NAME, "Train, evaluate, gate, index and deploy the Homefeed models.", TRAINING)
def homefeed_training(p: PipelineParams) -> Outputs:
    data = stages.small(c.data(source=p.source, seed=p.seed).set_display_name("data"))
    dataset = data.outputs["dataset"]
    tasks = stages.train_gate_release(dataset, p)
    monitor = c.monitor(dataset=dataset, reference_days=p.reference_days, current_days=p.current_days)
    stages.small(monitor.set_display_name("monitor"))
    return Outputs(
        dataset=dataset,
        feature_store=tasks["features"].outputs["feature_store"],
        retrieval_model=tasks["retrieval"].outputs["model"],
        ranking_model=tasks["ranking"].outputs["model"],
        evaluation=tasks["evaluate"].outputs["evaluation"],
        metrics=tasks["evaluate"].outputs["metrics"],
        decision=tasks["gate"].outputs["decision"],
        gate_metrics=tasks["gate"].outputs["gate_metrics"],
        drift=monitor.outputs["drift"],
        drift_html=monitor.outputs["drift_html"],
    )
