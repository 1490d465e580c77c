"""The `embedding_refresh` pipeline: a fresh serving corpus and pin index for the champion's models, no training.

New pins need embeddings and the corpus' time-decayed engagement scores move daily (seed 000), while the models are
retrained only twice a week. This run fetches the champion from the registry, rebuilds the corpus and re-embeds it
into a new Milvus collection version behind the alias, and deploys the same models with the new index as a new
registry version. (No `from __future__ import annotations`: KFP reads the live annotations.)
"""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset

from pipelines import kfp_components as c
from pipelines import stages
from pipelines.factory import pipeline_of
from pipelines.params import EMBEDDING_REFRESH, PipelineParams

PIPELINE_NAME = "embedding-refresh"


class Outputs(NamedTuple):
    dataset: Dataset
    feature_store: Artifact


@pipeline_of(PIPELINE_NAME, "Rebuild the serving corpus and pin index for the champion's models.", EMBEDDING_REFRESH)
def embedding_refresh(p: PipelineParams) -> Outputs:
    data = stages.small(c.data(source=p.source, seed=p.seed).set_display_name("data"))
    dataset = data.outputs["dataset"]
    features = stages.features_step(dataset, p)
    champ = stages.with_registry(stages.small(c.champion(registry=p.registry).set_display_name("champion")))
    stages.release(
        dataset,
        champ.outputs["retrieval_model"],
        champ.outputs["ranking_model"],
        champ.outputs["evaluation"],
        features.outputs["feature_store"],
        champ.outputs["decision"],
        p,
    )
    return Outputs(dataset=dataset, feature_store=features.outputs["feature_store"])
