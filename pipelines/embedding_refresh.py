"""The `embedding_refresh` pipeline: a fresh serving corpus and pin index for the champion's models, no training.

New pins need embeddings and the corpus' time-decayed engagement scores move daily (seed 000), while the models are
retrained only twice a week. This run fetches the champion from the registry, rebuilds the corpus and re-embeds it
into a new Milvus collection version behind the alias, and deploys the same models with the new index as a new
registry version. (No `from __future__ import annotations`: KFP reads the live annotations.)
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset

from pipelines import kfp_components as c
from pipelines import stages
from pipelines.params import DEFAULTS

PIPELINE_NAME = "embedding-refresh"


class Outputs(NamedTuple):
    dataset: Dataset
    feature_store: Artifact


@dsl.pipeline(name=PIPELINE_NAME, description="Rebuild the serving corpus and pin index for the champion's models.")
def embedding_refresh(
    source: str = DEFAULTS.source,
    seed: int = DEFAULTS.seed,
    half_life_days: float = DEFAULTS.half_life_days,
    online_store: str = DEFAULTS.online_store,
    hnsw_m: int = DEFAULTS.hnsw_m,
    hnsw_ef_construction: int = DEFAULTS.hnsw_ef_construction,
    index_uri: str = DEFAULTS.index_uri,
    ray_workers: int = DEFAULTS.ray_workers,
    registry: str = DEFAULTS.registry,
    deploy_target: str = DEFAULTS.deploy_target,
) -> Outputs:
    params = dict(locals())  # every parameter, by name, for the shared stages
    data = stages.small(c.data(source=source, seed=seed).set_display_name("data"))
    dataset = data.outputs["dataset"]
    features = c.features(dataset=dataset, half_life_days=half_life_days, online_store=online_store)
    stages.small(features.set_display_name("features"))
    champ = stages.with_registry(stages.small(c.champion(registry=registry).set_display_name("champion")))
    stages.release(
        dataset,
        champ.outputs["retrieval_model"],
        champ.outputs["ranking_model"],
        champ.outputs["evaluation"],
        features.outputs["feature_store"],
        champ.outputs["decision"],
        params,
    )
    return Outputs(dataset=dataset, feature_store=features.outputs["feature_store"])
