"""Seed 003's comparison table on our data: Pinnability with each sequence module, 3 seeds each, on world:medium and
on MovieLens-100K (when ../shared/datasets is there), kept in bench/results/ for docs/results.md.

The variants train with torch alone, so the training half runs wherever a GPU is. On 2 CPU cores one TransAct epoch
over 50k impressions takes minutes, and the table needs 33 trainings per dataset; the published tables were
therefore trained on an NVIDIA H200 through the device tool, from data prepared here:

    python -m bench.ranking_eval prepare [NAME...]  # examples + user embeddings into build/rank_<name>/data
    python3 -m components.evaluate.ranking_comparison --data build/rank_<name>/data --out OUT/<name> --device cuda
    python -m bench.ranking_eval publish OUT        # OUT/<name>/ranking_eval.json -> bench/results/

`python -m bench.ranking_eval` alone does all three on this machine's best device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.harness import prepared_dataset, write_result

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
SHARED = ROOT.parent / "shared" / "datasets"
# name -> (source, holdout days, ranking-window days): ML-100K spans seven months with sparse days, so its windows
# are a month of holdout after four months of training impressions
DATASETS = {
    "world": ("world:medium", 1.0, 3.0),
    # the same world sizes with short-term intent that shows in the sequence (config.SCENARIOS["intent"])
    "world_intent": ("world:medium+intent", 1.0, 3.0),
    "ml100k": (f"movielens:{SHARED / 'movielens_100k'}", 30.0, 120.0),
}
SEEDS, EPOCHS, BATCH = 3, 2, 512


def _available(names: list[str] | None = None) -> dict:
    unknown = set(names or []) - set(DATASETS)
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}; choose from {list(DATASETS)}")
    return {
        n: d for n, d in DATASETS.items() if (not names or n in names) and (n.startswith("world") or SHARED.is_dir())
    }


def prepare_all(names: list[str] | None = None) -> dict[str, Path]:
    from components.evaluate.ranking_comparison import prepare

    out = {}
    for name, (source, holdout, ranking) in _available(names).items():
        with prepared_dataset(source) as tmp:
            out[name] = prepare(tmp / "dataset", BUILD / f"rank_{name}", holdout, ranking, 200_000, seed=0)
    return out


def publish(results_dir: Path) -> None:
    from components.evaluate.ranking_comparison import markdown

    for name, (source, _, _) in _available().items():
        path = Path(results_dir) / name / "ranking_eval.json"
        if not path.exists():
            print(f"{path} is missing: {name} not published", file=sys.stderr)
            continue
        result = json.loads(path.read_text())
        result["dataset"] = source  # the path it was prepared from is gone
        result["command"] = (
            f"python3 -m components.evaluate.ranking_comparison --data build/rank_{name}/data --device cuda "
            f"--seeds {SEEDS} --epochs {EPOCHS} --batch-size {BATCH} (data: python -m bench.ranking_eval prepare)"
        )
        # where the variants trained: the examples were prepared on this machine, the training ran on result's device
        result["machine"] = {"trained_on": result["device"]}
        label = source if source.startswith("world") else source.split(":")[0]  # no local paths in docs/results.md
        md = markdown(result).replace("(`homefeed eval ranking`)", f"(`homefeed eval ranking`, {label})")
        write_result(f"ranking_eval_{name}", result, md + f"\nReproduce: {result['command']}.\n")


def main() -> None:
    import torch

    from components.evaluate.ranking_comparison import default_variants, run
    from components.train.ranking import RankingTraining

    device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = RankingTraining(epochs=EPOCHS, batch_size=BATCH)
    for name, data in prepare_all().items():
        run(data, BUILD / "rank_out" / name, default_variants(), SEEDS, opts, device)
    publish(BUILD / "rank_out")


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"]:
        print(prepare_all(sys.argv[2:]))
    elif sys.argv[1:2] == ["publish"]:
        publish(Path(sys.argv[2]))
    else:
        main()
