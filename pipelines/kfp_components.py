"""KFP v2 lightweight components: one thin wrapper per step of pipelines/steps.py.

A wrapper turns KFP artifacts into directories, calls its step and records a few figures in the output's metadata
(they show in the KFP UI and come back from a local run). Its body is all KFP ships to the pod, so it imports what
it needs inside; the project image has the project installed, and kfp.local's SubprocessRunner runs the same body
in this environment. The step arguments that depend on the time split are recomputed by each step from the dataset
(`steps.time_split`), so they cannot disagree between steps.

No `from __future__ import annotations` here: KFP reads the artifact types from the live annotations.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from pipelines.ray_backend import IMAGE


def _component(fn):
    # kfp is in the image, so the component need not pip-install it at start-up
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(fn)


@_component
def data(source: str, seed: int, dataset: Output[Dataset]) -> None:
    """Simulate a world or ingest a dataset (`source`: world:<preset>, movielens:<folder>, sequences:<file>)."""
    from pipelines import steps

    manifest = steps.prepare_data(source, dataset.path, seed)
    dataset.metadata.update({"source": source, **{f"rows_{k}": v for k, v in manifest["rows"].items()}})


@_component
def features(
    dataset: Input[Dataset], half_life_days: float, online_store: str, feature_store: Output[Artifact]
) -> None:
    """A Feast repository with the batch views materialized and the last-100 sequences streamed online."""
    from pipelines import steps

    summary = steps.build_features(dataset.path, feature_store.path, half_life_days, online_store)
    feature_store.metadata.update(summary)


@_component
def window(dataset: Input[Dataset], window_days: float, end_days_ago: float, windowed: Output[Dataset]) -> None:
    """The last `window_days` of events (ending `end_days_ago` before the log's end): a retraining run's data."""
    from components.data.window import window_dataset

    manifest = window_dataset(dataset.path, windowed.path, window_days, end_days_ago)
    windowed.metadata.update({"events": manifest["rows"]["events"], **manifest["window"]})


@_component
def pretrain_ids(
    dataset: Input[Dataset],
    holdout_days: float,
    ranking_days: float,
    epochs: int,
    seed: int,
    ray_backend: str,
    ray_address: str,
    ray_workers: int,
    job_id: str,
    ids: Output[Model],
) -> None:
    """Contrastive user/pin ID embeddings on the window aligned with retrieval training (`epochs` 0: off)."""
    from dataclasses import asdict

    from pipelines import steps
    from pipelines.ray_backend import RayBackend, run_step

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    kwargs = {"dataset_dir": dataset.path, "out_dir": ids.path, "split": asdict(split), "epochs": epochs,
              "seed": seed, "workers": ray_workers}  # fmt: skip
    if epochs == 0:  # nothing for a Ray cluster to do
        summary = steps.pretrain_ids_step(**kwargs)
    else:
        backend = RayBackend(ray_backend, ray_workers, address=ray_address)
        summary = run_step("pretrain_ids", kwargs, backend, job_id, ["dataset_dir"], ["out_dir"], print)
    ids.metadata.update({k: v for k, v in summary.items() if isinstance(v, (bool, int, float, str))})


@_component
def train_retrieval(
    dataset: Input[Dataset],
    pretrained_ids: Input[Model],
    holdout_days: float,
    ranking_days: float,
    epochs: int,
    seed: int,
    ray_backend: str,
    ray_address: str,
    ray_workers: int,
    job_id: str,
    model: Output[Model],
) -> None:
    """The two-tower retrieval model, trained on Ray Train: a local Ray, or a KubeRay RayJob (`ray_backend`); it
    starts from the pretrained ID embeddings when the ID pretraining step made some."""
    from dataclasses import asdict

    from pipelines import steps
    from pipelines.ray_backend import RayBackend, run_step

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    kwargs = {"dataset_dir": dataset.path, "out_dir": model.path, "split": asdict(split), "epochs": epochs,
              "seed": seed, "workers": ray_workers, "pretrained_dir": pretrained_ids.path}  # fmt: skip
    backend = RayBackend(ray_backend, ray_workers, address=ray_address)
    inputs = ["dataset_dir", "pretrained_dir"]
    summary = run_step("train_retrieval", kwargs, backend, job_id, inputs, ["out_dir"], print)
    model.metadata.update({k: summary[k] for k in ("train_examples", "train_loss")} | {"ray_backend": ray_backend})


@_component
def train_ranking(
    dataset: Input[Dataset],
    retrieval_model: Input[Model],
    holdout_days: float,
    ranking_days: float,
    epochs: int,
    max_examples: int,
    seed: int,
    ray_backend: str,
    ray_address: str,
    ray_workers: int,
    gpus: int,
    job_id: str,
    model: Output[Model],
) -> None:
    """Pinnability with the TransAct realtime-sequence module, trained on Ray Train: a local Ray, or a KubeRay RayJob
    whose workers have `gpus` GPUs each (`ray_backend`)."""
    from dataclasses import asdict

    from pipelines import steps
    from pipelines.ray_backend import RayBackend, run_step

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    kwargs = {"dataset_dir": dataset.path, "retrieval_dir": retrieval_model.path, "out_dir": model.path,
              "split": asdict(split), "epochs": epochs, "max_examples": max_examples, "seed": seed,
              "workers": ray_workers}  # fmt: skip
    backend = RayBackend(ray_backend, ray_workers, gpus, address=ray_address)
    inputs = ["dataset_dir", "retrieval_dir"]
    summary = run_step("train_ranking", kwargs, backend, job_id, inputs, ["out_dir"], print)
    model.metadata.update({k: summary[k] for k in ("train_examples", "train_loss")} | {"ray_backend": ray_backend})


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
    from components.evaluate.result import flat_metrics
    from pipelines import steps

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    result = steps.evaluate(dataset.path, retrieval_model.path, ranking_model.path, evaluation.path, split)
    for name, value in flat_metrics(result).items():
        metrics.log_metric(name, value)


@_component
def index(
    dataset: Input[Dataset],
    retrieval_model: Input[Model],
    half_life_days: float,
    hnsw_m: int,
    hnsw_ef_construction: int,
    index_uri: str,
    ray_workers: int,
    pin_index: Output[Artifact],
) -> None:
    """The serving corpus (decayed engagement, signature dedup) as a new Milvus collection version behind an alias:
    in a Milvus Lite file in `pin_index`, or on the Milvus server `index_uri` (token from $MILVUS_TOKEN). The pins
    are embedded on Ray, sized to the corpus, or in the step's process where the run trains there (`ray_workers` 0)."""
    from components.index.corpus import CorpusOptions
    from pipelines import steps

    info = steps.index_pins(
        dataset.path,
        retrieval_model.path,
        pin_index.path,
        corpus=CorpusOptions(half_life_days=half_life_days),
        hnsw={"M": hnsw_m, "efConstruction": hnsw_ef_construction},
        index_uri=index_uri,
        embed_workers=0 if ray_workers == 0 else None,
    )
    pin_index.metadata.update(info)


@_component
def gate(
    dataset: Input[Dataset],
    evaluation: Input[Artifact],
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    holdout_days: float,
    ranking_days: float,
    registry: str,
    gate_policy: str,
    run_id: str,
    decision: Output[Artifact],
    gate_metrics: Output[Metrics],
) -> bool:
    """Champion/challenger: both metric sets (the champion re-evaluated on this holdout) and the verdict, as KFP
    Metrics and a decision.json (with the sha256 of the models' files, which the deploy step checks); returns
    whether to deploy."""
    from components import release
    from pipelines import steps

    split = steps.time_split(dataset.path, holdout_days, ranking_days)
    record = release.gate_step(dataset.path, evaluation.path, decision.path, split, registry, run_id, gate_policy,
                               retrieval_dir=retrieval_model.path, ranking_dir=ranking_model.path)  # fmt: skip
    for name, value in record["metrics"].items():
        gate_metrics.log_metric(name, value)
    decision.metadata.update({"deploy": record["deploy"], "champion_version": record["champion_version"] or 0,
                              "basis": record["basis"], "verdict": record["reasons"][-1]})  # fmt: skip
    return bool(record["deploy"])


@_component
def deploy(
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    pin_index: Input[Artifact],
    evaluation: Input[Artifact],
    feature_store: Input[Artifact],
    decision: Input[Artifact],
    registry: str,
    target: str,
    run_id: str,
    deployment: Output[Artifact],
) -> None:
    """Check the bundle against the gate's hashes and load it in a scratch process; then register it, roll it out
    (local servers or KServe InferenceServices) and promote it to champion."""
    from components import release

    summary = release.deploy_step(
        retrieval_model.path,
        ranking_model.path,
        pin_index.path,
        evaluation.path,
        feature_store.path,
        decision.path,
        deployment.path,
        registry,
        target,
        run_id,
    )
    deployment.metadata.update({k: summary[k] for k in ("version", "target", "storage_uri")})


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

    from monitoring.drift import engagement_drift

    summary = engagement_drift(dataset.path, drift.path, reference_days, current_days)
    shutil.copyfile(summary["html"], drift_html.path)  # an HTML artifact is what the KFP UI renders inline
    drift.metadata.update(
        {"drift_detected": summary["drift_detected"]}
        | {f"{a}_relative_change": v["relative_change"] for a, v in summary["actions"].items()}
    )


@_component
def champion(
    registry: str,
    retrieval_model: Output[Model],
    ranking_model: Output[Model],
    evaluation: Output[Artifact],
    decision: Output[Artifact],
) -> None:
    """The serving champion's models from the registry, for a run that refreshes its corpus and index only."""
    from components import release

    info = release.champion_step(registry, retrieval_model.path, ranking_model.path, evaluation.path, decision.path)
    decision.metadata.update({"champion_version": info["version"]})
