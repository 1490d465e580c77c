"""What an experiment serves: the pipeline's artifacts trained on the world's whole history, one ranking model per arm.

    features/            the Feast repository (online store filled up to the world's end)
    retrieval/           the two-tower model every arm shares
    index/               its pin index (Milvus Lite file)
    ranking-<arm>/       each arm's ranking model: the same Pinnability, trained the same way, with the arm's
                         sequence module ("none" = the model without the realtime sequence)

Built with the pipeline's own steps and their defaults (as components/evaluate/drift_scenarios.train_model does):
retrieval on everything, ranking on the last `ranking_days` days. A folder that already holds its artifact is
reused, so a second experiment on the same world trains nothing.
"""

from __future__ import annotations

from pathlib import Path

from components.data.world.config import DAY_MS
from homefeed.experiment.design import Arm

DEFAULT_ARMS = {"control": "none", "treatment": "transact_v11"}
DONE_FILE = {"features": "feature_store.yaml", "retrieval": "model.pt", "index": "index.json", "ranking": "model.pt"}


def prepare(
    dataset_dir: Path,
    out_dir: Path,
    arms: dict[str, str] | None = None,
    *,
    retrieval_epochs: int = 3,
    ranking_epochs: int = 2,
    ranking_days: float = 3.0,
    max_examples: int = 30_000,
    seed: int = 0,
    progress=print,
) -> dict:
    """Train or reuse the artifacts; returns {"features", "retrieval", "index": Path, "arms": [Arm, ...]}."""
    from components.data.dataset import Dataset
    from pipelines import steps

    arms = arms or DEFAULT_ARMS
    out_dir = Path(out_dir)
    end = int(Dataset(dataset_dir).read("events", columns=["ts"])["ts"].max()) + 1
    split = steps.TimeSplit(end - round(ranking_days * DAY_MS), end, end + DAY_MS)
    paths = {k: out_dir / k for k in ("features", "retrieval", "index")}

    def missing(path: Path, kind: str) -> bool:
        todo = not (path / DONE_FILE[kind]).exists()
        if todo:
            progress(f"training {path.name}" if kind in ("retrieval", "ranking") else f"building {path.name}")
        return todo

    if missing(paths["features"], "features"):
        steps.build_features(dataset_dir, paths["features"])
    if missing(paths["retrieval"], "retrieval"):
        steps.train_retrieval_step(dataset_dir, paths["retrieval"], split, epochs=retrieval_epochs, seed=seed)
    if missing(paths["index"], "index"):
        steps.index_pins(dataset_dir, paths["retrieval"], paths["index"])
    built = []
    for name, kind in arms.items():
        ranking = out_dir / f"ranking-{name}"
        if missing(ranking, "ranking"):
            steps.train_ranking_step(dataset_dir, paths["retrieval"], ranking, split, epochs=ranking_epochs,
                                     max_examples=max_examples, seed=seed, sequence=kind)  # fmt: skip
        built.append(Arm(name, str(ranking)))
    return {**paths, "arms": built}
