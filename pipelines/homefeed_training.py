"""The `homefeed_training` pipeline: data → features → retrieval → ranking → evaluate → gate → (corpus + index →
deploy), with the engagement-drift report alongside.

One definition for every target: pipelines/local.py runs it with kfp.local on this machine, pipelines/compile.py
writes the IR YAML a Kubeflow cluster runs. Parameters are the knobs a user turns per run; their types, defaults and
bounds live in pipelines/params.py. The stages shared with the other pipelines live in pipelines/stages.py.
(No `from __future__ import annotations`: KFP reads the live annotations.)

The index and deploy steps run only when the gate passes, so they are not pipeline outputs (KFP allows a conditional
output only through dsl.OneOf, which kfp.local cannot run yet); a local run still lists them in run.json.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from pipelines import kfp_components as c
from pipelines import stages
from pipelines.params import DEFAULTS

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


@dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate, gate, index and deploy the Homefeed models.")
def homefeed_training(
    source: str = DEFAULTS.source,
    seed: int = DEFAULTS.seed,
    half_life_days: float = DEFAULTS.half_life_days,
    online_store: str = DEFAULTS.online_store,
    holdout_days: float = DEFAULTS.holdout_days,
    ranking_days: float = DEFAULTS.ranking_days,
    id_pretrain_epochs: int = DEFAULTS.id_pretrain_epochs,
    retrieval_epochs: int = DEFAULTS.retrieval_epochs,
    ranking_epochs: int = DEFAULTS.ranking_epochs,
    ranking_max_examples: int = DEFAULTS.ranking_max_examples,
    hnsw_m: int = DEFAULTS.hnsw_m,
    hnsw_ef_construction: int = DEFAULTS.hnsw_ef_construction,
    index_uri: str = DEFAULTS.index_uri,
    reference_days: float = DEFAULTS.reference_days,
    current_days: float = DEFAULTS.current_days,
    registry: str = DEFAULTS.registry,
    deploy_target: str = DEFAULTS.deploy_target,
    gate_policy: str = DEFAULTS.gate_policy,
    ray_backend: str = DEFAULTS.ray_backend,
    ray_workers: int = DEFAULTS.ray_workers,
    ranking_gpus: int = DEFAULTS.ranking_gpus,
) -> Outputs:
    params = dict(locals())  # every parameter, by name, for the shared stages
    data = stages.small(c.data(source=source, seed=seed).set_display_name("data"))
    dataset = data.outputs["dataset"]
    tasks = stages.train_gate_release(dataset, params)
    monitor = c.monitor(dataset=dataset, reference_days=reference_days, current_days=current_days)
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
