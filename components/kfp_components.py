"""KFP v2 lightweight components: one thin wrapper per step of components/steps.py.

A wrapper turns KFP artifacts into directories, calls its step and records a few figures in the output's metadata
(they show in the KFP UI and come back from a local run). Its body is all KFP ships to the pod, so it imports what
it needs inside; the project image has the project installed, and kfp.local's SubprocessRunner runs the same body
in this environment. The step arguments that depend on the time split are recomputed by each step from the dataset
(`steps.time_split`), so they cannot disagree between steps.

No `from __future__ import annotations` here: KFP reads the artifact types from the live annotations.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

# The project image (Dockerfile, F9). Its tag follows the package version, so a pipeline compiled from a release
# runs the code it was compiled from. kfp is in the image, so the component need not pip-install it at start-up.
IMAGE = "ghcr.io/homefeed-platform/homefeed:0.1.0"


def _component(fn):
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(fn)


@_component
def data(source: str, seed: int, dataset: Output[Dataset]) -> None:
    """Simulate a world or ingest a dataset (`source`: world:<preset>, movielens:<folder>, sequences:<file>)."""
    from components import steps

    manifest = steps.prepare_data(source, dataset.path, seed)
    dataset.metadata.update({"source": source, **{f"rows_{k}": v for k, v in manifest["rows"].items()}})


@_component
def features(
    dataset: Input[Dataset], half_life_days: float, online_store: str, feature_store: Output[Artifact]
) -> None:
    """A Feast repository with the batch views materialized and the last-100 sequences streamed online."""
    from components import steps

    summary = steps.build_features(dataset.path, feature_store.path, half_life_days, online_store)
    feature_store.metadata.update(summary)


@_component
def train_retrieval(
    dataset: Input[Dataset], holdout_days: float, ranking_days: float, epochs: int, seed: int, model: Output[Model]
) -> None:
    """The two-tower retrieval model, trained on Ray Train."""
    from components import steps

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    summary = steps.train_retrieval_step(dataset.path, model.path, split, epochs, seed)
    model.metadata.update({k: summary[k] for k in ("train_examples", "train_loss")})


@_component
def train_ranking(
    dataset: Input[Dataset],
    retrieval_model: Input[Model],
    holdout_days: float,
    ranking_days: float,
    epochs: int,
    max_examples: int,
    seed: int,
    model: Output[Model],
) -> None:
    """Pinnability with the TransAct realtime-sequence module, trained on Ray Train."""
    from components import steps

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    summary = steps.train_ranking_step(
        dataset.path, retrieval_model.path, model.path, split, epochs, max_examples, seed
    )
    model.metadata.update({k: summary[k] for k in ("train_examples", "train_loss")})


@_component
def evaluate(
    dataset: Input[Dataset],
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    holdout_days: float,
    ranking_days: float,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """recall@K and HIT@3 per head on the holdout, with their baselines: a JSON file and KFP Metrics."""
    from components import steps

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    result = steps.evaluate(dataset.path, retrieval_model.path, ranking_model.path, evaluation.path, split)
    for name, value in steps.flat_metrics(result).items():
        metrics.log_metric(name, value)


@_component
def index(
    dataset: Input[Dataset],
    retrieval_model: Input[Model],
    half_life_days: float,
    hnsw_m: int,
    hnsw_ef_construction: int,
    pin_index: Output[Artifact],
) -> None:
    """The serving corpus (decayed engagement, signature dedup) as a new Milvus collection version behind an alias."""
    from components import steps
    from components.index.corpus import CorpusOptions

    info = steps.index_pins(
        dataset.path,
        retrieval_model.path,
        pin_index.path,
        corpus=CorpusOptions(half_life_days=half_life_days),
        hnsw={"M": hnsw_m, "efConstruction": hnsw_ef_construction},
    )
    pin_index.metadata.update(info)


@_component
def monitor(
    dataset: Input[Dataset],
    reference_days: float,
    current_days: float,
    drift: Output[Artifact],
    drift_html: Output[HTML],
) -> None:
    """The Evidently engagement-drift report: the latest window's repin, click and hide rates against a reference."""
    import shutil

    from components import steps

    summary = steps.engagement_drift(dataset.path, drift.path, reference_days, current_days)
    shutil.copyfile(summary["html"], drift_html.path)  # an HTML artifact is what the KFP UI renders inline
    drift.metadata.update(
        {"drift_detected": summary["drift_detected"]}
        | {f"{a}_relative_change": v["relative_change"] for a, v in summary["actions"].items()}
    )
