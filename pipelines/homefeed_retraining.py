"""The `homefeed_retraining` pipeline: the training pipeline on a fresh window of the log, meant to recur.

Seed 003 retrains Pinnability twice a week because engagement decays with a stale model; `homefeed pipeline
schedule` creates that recurring run (KFP cron "0 0 3 * * 1,4": 03:00 on Mondays and Thursdays). Each run takes the
last `window_days` of events, trains, and deploys only when the gate finds the challenger at least as good as the
champion re-evaluated on the same fresh holdout. (No `from __future__ import annotations`: KFP reads annotations.)
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics

from pipelines import kfp_components as c
from pipelines import stages
from pipelines.params import DEFAULTS

PIPELINE_NAME = "homefeed-retraining"


class Outputs(NamedTuple):
    dataset: Dataset
    metrics: Metrics
    decision: Artifact
    gate_metrics: Metrics


@dsl.pipeline(name=PIPELINE_NAME, description="Retrain on the latest window; gate against the champion; deploy.")
def homefeed_retraining(
    source: str = DEFAULTS.source,
    seed: int = DEFAULTS.seed,
    window_days: float = DEFAULTS.window_days,
    end_days_ago: float = DEFAULTS.end_days_ago,
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
    registry: str = DEFAULTS.registry,
    deploy_target: str = DEFAULTS.deploy_target,
    gate_policy: str = DEFAULTS.gate_policy,
    ray_backend: str = DEFAULTS.ray_backend,
    ray_workers: int = DEFAULTS.ray_workers,
    ranking_gpus: int = DEFAULTS.ranking_gpus,
) -> Outputs:
    params = dict(locals())  # every parameter, by name, for the shared stages
    data = stages.small(c.data(source=source, seed=seed).set_display_name("data"))
    window = c.window(dataset=data.outputs["dataset"], window_days=window_days, end_days_ago=end_days_ago)
    dataset = stages.small(window.set_display_name("fresh window")).outputs["windowed"]
    tasks = stages.train_gate_release(dataset, params)
    return Outputs(
        dataset=dataset,
        metrics=tasks["evaluate"].outputs["metrics"],
        decision=tasks["gate"].outputs["decision"],
        gate_metrics=tasks["gate"].outputs["gate_metrics"],
    )
