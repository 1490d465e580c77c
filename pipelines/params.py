"""The parameters of the pipelines, typed and validated: one definition for the pipelines' defaults, the settings
file (`pipeline:` in homefeed.yaml) and the CLI (`--set name=value`). Each pipeline takes the subset it declares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.features.online_store import SQLITE, parse_online_store
from components.index.client import parse_index_target
from components.registry import parse_registry


class PipelineParams(BaseModel):
    # pydantic would echo each bad value after its message, and a uri may carry a password (index_uri refuses one
    # without echoing it); the messages here name the field and, where it is safe, the value.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    source: str = Field(
        "world:small",
        description="world:<preset>, movielens:<folder>, sequences:<file> or log:<event log>?catalog=<dataset>",
    )
    seed: int = 0
    half_life_days: float = Field(
        7.0, gt=0, description="half-life of the pins' time-decayed engagement score (features and serving corpus)"
    )
    online_store: str = Field(
        SQLITE,
        description="Feast online store: sqlite (in the feature_store artifact) or redis://HOST:PORT[/DB] "
        "(password from $REDIS_PASSWORD, never in the URL)",
    )
    holdout_days: float = Field(1.0, gt=0, description="the last days of events, held out for evaluation")
    ranking_days: float = Field(3.0, gt=0, description="ranking trains on this many days before the holdout")
    id_pretrain_epochs: int = Field(
        0, ge=0, description="contrastive ID pretraining before retrieval; 0: off (it measured worse here)"
    )
    retrieval_epochs: int = Field(3, ge=1)
    ranking_epochs: int = Field(2, ge=1)
    ranking_max_examples: int = Field(30_000, ge=1_000, description="impressions sampled for ranking training")
    hnsw_m: int = Field(16, ge=4, le=64, description="HNSW graph degree of the pin index (Milvus `M`)")
    hnsw_ef_construction: int = Field(200, ge=8, le=2048, description="HNSW build breadth (Milvus `efConstruction`)")
    index_uri: str = Field(
        "",
        description="Milvus server the index step publishes to, http(s)://host:port (token from $MILVUS_TOKEN); "
        "empty: a Milvus Lite file in the pin_index artifact",
    )
    reference_days: float = Field(7.0, gt=0, description="drift report: the reference window before the current")
    current_days: float = Field(1.0, gt=0, description="drift report: the latest window")
    # retraining: the fresh window a run trains and evaluates on
    window_days: float = Field(14.0, gt=0, description="homefeed_retraining: the last days of events it uses")
    end_days_ago: float = Field(0.0, ge=0, description="homefeed_retraining: end the window this many days early")
    # release: the gate, the registry and where a passing model goes
    registry: str = Field(
        "", description="model registry: a path or s3://bucket/prefix (empty: <workspace>/registry for local runs)"
    )
    deploy_target: str = Field(
        "",
        description="local:<dir>, podman:<dir> (homefeed cluster up), kserve:<namespace> or none (empty: <workspace>/serving "
        "for local runs)",
    )
    gate_policy: str = Field("", description="gate rules as JSON (components/gate.py); empty: the default policy")
    # where training runs
    ray_backend: str = Field(
        "local", description="local (a Ray instance in the step), kuberay (a RayJob) or jobs (a running Ray cluster)"
    )
    ray_address: str = Field("", description="ray_backend=jobs: the Ray cluster's Jobs API, http(s)://HOST:8265")
    ray_workers: int = Field(
        2, ge=0, le=64, description="Ray Train workers per training step; 0: in the step's own process (local only)"
    )
    ranking_gpus: int = Field(0, ge=0, le=8, description="GPUs for ranking training (per Ray worker on KubeRay)")

    @field_validator("ray_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from pipelines.ray_backend import BACKENDS

        if value not in BACKENDS:
            raise ValueError(f"ray_backend must be one of {BACKENDS}")
        return value

    @model_validator(mode="after")
    def _workers_for_the_backend(self) -> PipelineParams:
        if self.ray_backend == "kuberay" and self.ray_workers < 1:
            raise ValueError("ray_workers must be >= 1 with ray_backend=kuberay: a RayJob needs workers")
        if self.ray_backend == "jobs":
            from pipelines.ray_backend import RayBackend

            RayBackend("jobs", self.ray_workers, address=self.ray_address)  # its checks, before any step runs
        return self

    @field_validator("deploy_target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        from components.release import DeployTarget

        if value:
            DeployTarget.parse(value)
        return value

    @field_validator("gate_policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        import json

        from components.gate import GatePolicy

        if value.strip():
            GatePolicy.from_dict(json.loads(value))
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        return str(parse_registry(value)) if value.strip() else value  # empty: a local run fills in its own

    @field_validator("index_uri")
    @classmethod
    def _index_target(cls, value: str) -> str:
        return str(parse_index_target(value))

    @field_validator("online_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        return str(parse_online_store(value))  # a clear error before any step runs; normalized (redis DB explicit)


DEFAULTS = PipelineParams()


def parameters(exclude: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Names of PipelineParams in declaration order: `only` those, or all but `exclude`."""
    names = tuple(PipelineParams.model_fields)
    unknown = [n for n in (*exclude, *only) if n not in names]
    if unknown:
        raise ValueError(f"not pipeline parameters: {unknown}")
    return tuple(n for n in names if (n in only if only else n not in exclude))


# What each pipeline declares (pipelines/homefeed_training.py, homefeed_retraining.py, embedding_refresh.py).
RETRAINING_ONLY = ("window_days", "end_days_ago")
DRIFT_REPORT = ("reference_days", "current_days")
TRAINING = parameters(exclude=RETRAINING_ONLY)
RETRAINING = (
    "source",
    "seed",
    *RETRAINING_ONLY,
    *parameters(exclude=("source", "seed", *RETRAINING_ONLY, *DRIFT_REPORT)),
)
EMBEDDING_REFRESH = parameters(
    only=(
        "source",
        "seed",
        "half_life_days",
        "online_store",
        "hnsw_m",
        "hnsw_ef_construction",
        "index_uri",
        "ray_workers",
        "registry",
        "deploy_target",
    )  # fmt: skip
)
