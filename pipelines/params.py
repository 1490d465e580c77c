"""The parameters of `homefeed_training`, typed and validated: one definition for the pipeline's defaults, the
settings file (`pipeline:` in homefeed.yaml) and the CLI (`--set name=value`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.features.online_store import OnlineStore


class PipelineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field("world:small", description="world:<preset>, movielens:<folder> or sequences:<file>")
    seed: int = 0
    half_life_days: float = Field(
        7.0, gt=0, description="half-life of the pins' time-decayed engagement score (features and serving corpus)"
    )
    online_store: str = Field(
        "sqlite", description="Feast online store: sqlite (in the feature_store artifact) or redis://HOST:PORT[/DB]"
    )
    holdout_days: float = Field(1.0, gt=0, description="the last days of events, held out for evaluation")
    ranking_days: float = Field(3.0, gt=0, description="ranking trains on this many days before the holdout")
    retrieval_epochs: int = Field(3, ge=1)
    ranking_epochs: int = Field(2, ge=1)
    ranking_max_examples: int = Field(30_000, ge=1_000, description="impressions sampled for ranking training")
    hnsw_m: int = Field(16, ge=4, le=64, description="HNSW graph degree of the pin index (Milvus `M`)")
    hnsw_ef_construction: int = Field(200, ge=8, le=2048, description="HNSW build breadth (Milvus `efConstruction`)")
    reference_days: float = Field(7.0, gt=0, description="drift report: the reference window before the current")
    current_days: float = Field(1.0, gt=0, description="drift report: the latest window")

    @field_validator("online_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        return str(OnlineStore.parse(value))  # a clear error before any step runs; normalized (redis DB explicit)


DEFAULTS = PipelineParams()
