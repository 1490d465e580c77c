"""The `homefeed_retraining` pipeline: the training pipeline on a fresh window of the log, meant to recur.

Seed 003 retrains Pinnability twice a week because engagement decays with a stale model; `homefeed pipeline
schedule` creates that recurring run (KFP cron "0 0 3 * * 1,4": 03:00 on Mondays and Thursdays). Each run takes the
last `window_days` of events, trains, and deploys only when the gate finds the challenger at least as good as the
champion re-evaluated on the same fresh holdout. (No `from __future__ import annotations`: KFP reads annotations.)
"""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Metrics

from pipelines import kfp_components as c
from pipelines import stages
from pipelines.factory import pipeline_of
from pipelines.params import RETRAINING, PipelineParams

PIPELINE_NAME = "homefeed-retraining"


class Outputs(NamedTuple):
    dataset: Dataset
    metrics: Metrics
    decision: Artifact
    gate_metrics: Metrics


@pipeline_of(PIPELINE_NAME, "Retrain on the latest window; gate against the champion; deploy.", RETRAINING)
def homefeed_retraining(p: PipelineParams) -> Outputs:
    data = stages.small(c.data(source=p.source, seed=p.seed).set_display_name("data"))
    window = c.window(dataset=data.outputs["dataset"], window_days=p.window_days, end_days_ago=p.end_days_ago)
    dataset = stages.small(window.set_display_name("fresh window")).outputs["windowed"]
    tasks = stages.train_gate_release(dataset, p)
    return Outputs(
        dataset=dataset,
        metrics=tasks["evaluate"].outputs["metrics"],
        decision=tasks["gate"].outputs["decision"],
        gate_metrics=tasks["gate"].outputs["gate_metrics"],
    )
