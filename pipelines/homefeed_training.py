"""The `homefeed_training` pipeline: data → features → retrieval → ranking → evaluate, index and monitor.

One definition for every target: pipelines/local.py runs it with kfp.local on this machine, pipelines/compile.py
writes the IR YAML a Kubeflow cluster runs. Parameters are the knobs a user turns per run; their types, defaults and
bounds live in pipelines/params.py. (No `from __future__ import annotations`: KFP reads the live annotations.)
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components import kfp_components as c
from pipelines.params import DEFAULTS

PIPELINE_NAME = "homefeed-training"


class Outputs(NamedTuple):
    dataset: Dataset
    feature_store: Artifact
    retrieval_model: Model
    ranking_model: Model
    evaluation: Artifact
    metrics: Metrics
    pin_index: Artifact
    drift: Artifact
    drift_html: HTML


@dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and index the Homefeed retrieval and ranking models.")
def homefeed_training(
    source: str = DEFAULTS.source,
    seed: int = DEFAULTS.seed,
    half_life_days: float = DEFAULTS.half_life_days,
    online_store: str = DEFAULTS.online_store,
    holdout_days: float = DEFAULTS.holdout_days,
    ranking_days: float = DEFAULTS.ranking_days,
    retrieval_epochs: int = DEFAULTS.retrieval_epochs,
    ranking_epochs: int = DEFAULTS.ranking_epochs,
    ranking_max_examples: int = DEFAULTS.ranking_max_examples,
    hnsw_m: int = DEFAULTS.hnsw_m,
    hnsw_ef_construction: int = DEFAULTS.hnsw_ef_construction,
    reference_days: float = DEFAULTS.reference_days,
    current_days: float = DEFAULTS.current_days,
) -> Outputs:
    data = c.data(source=source, seed=seed).set_display_name("data")
    dataset = data.outputs["dataset"]
    features = c.features(dataset=dataset, half_life_days=half_life_days, online_store=online_store)
    features.set_display_name("features")
    retrieval = c.train_retrieval(
        dataset=dataset, holdout_days=holdout_days, ranking_days=ranking_days, epochs=retrieval_epochs, seed=seed
    ).set_display_name("train retrieval")
    ranking = c.train_ranking(
        dataset=dataset,
        retrieval_model=retrieval.outputs["model"],
        holdout_days=holdout_days,
        ranking_days=ranking_days,
        epochs=ranking_epochs,
        max_examples=ranking_max_examples,
        seed=seed,
    ).set_display_name("train ranking")
    evaluation = c.evaluate(
        dataset=dataset,
        retrieval_model=retrieval.outputs["model"],
        ranking_model=ranking.outputs["model"],
        holdout_days=holdout_days,
        ranking_days=ranking_days,
    ).set_display_name("evaluate")
    index = c.index(
        dataset=dataset,
        retrieval_model=retrieval.outputs["model"],
        half_life_days=half_life_days,
        hnsw_m=hnsw_m,
        hnsw_ef_construction=hnsw_ef_construction,
    ).set_display_name("corpus + index")
    monitor = c.monitor(dataset=dataset, reference_days=reference_days, current_days=current_days)
    monitor.set_display_name("monitor")
    # Training steps run Ray with two workers; the rest fit in one core. Requests size the pods on a cluster.
    for task in (retrieval, ranking):
        task.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
    for task in (data, features, evaluation, index, monitor):
        task.set_cpu_request("1").set_memory_request("2G").set_memory_limit("4G")
    return Outputs(
        dataset=dataset,
        feature_store=features.outputs["feature_store"],
        retrieval_model=retrieval.outputs["model"],
        ranking_model=ranking.outputs["model"],
        evaluation=evaluation.outputs["evaluation"],
        metrics=evaluation.outputs["metrics"],
        pin_index=index.outputs["pin_index"],
        drift=monitor.outputs["drift"],
        drift_html=monitor.outputs["drift_html"],
    )
