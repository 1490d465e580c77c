"""Ray Train against one process: the retrieval two-tower (the pipeline's configuration) trained on the same
examples with the same epochs, by `train_retrieval` (Ray Train TorchTrainer, 2 CPU workers with DDP, Ray started
by the run) and by `train_retrieval_local` (this process, all cores' threads); wall time, samples/s and the
recall@100 each model reaches, so speed is not bought with quality.

Run: `python -m bench.ray_training` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import time

from bench.harness import prepared_dataset, write_result

NAME = "ray_training"
SOURCE = "world:small"
EPOCHS = 3


def main() -> dict:
    from components.evaluate.offline import evaluate_retrieval
    from components.train.retrieval import RetrievalTraining, train_retrieval, train_retrieval_local
    from pipelines import steps

    opts = RetrievalTraining(epochs=EPOCHS, seed=0)
    runs = {}
    with prepared_dataset(SOURCE) as tmp:
        data = tmp / "dataset"
        cut = steps.time_split(data).train_end_ms
        for name, train in (("single process", train_retrieval_local), ("Ray Train, 2 workers", train_retrieval)):
            t0 = time.perf_counter()
            summary = train(data, tmp / name.replace(" ", "_"), cut, opts)
            wall = time.perf_counter() - t0
            rec = evaluate_retrieval(data, tmp / name.replace(" ", "_"), cut, ks=(100,))
            per_worker = float(summary["samples_per_s"])
            workers = opts.num_workers if name.startswith("Ray") else 1
            runs[name] = {
                "wall_s": round(wall, 1),
                "samples_per_s": round(per_worker * workers),
                "train_examples": summary["train_examples"],
                "final_loss": round(float(summary["train_loss"]), 4),
                "recall@100": round(rec["recall"]["100"], 4),
                "popularity_recall@100": round(rec["popularity_recall"]["100"], 4),
            }
    result = {"dataset": SOURCE, "epochs": EPOCHS, "options": vars(opts), "runs": runs}
    rows = "\n".join(
        f"| {name} | {r['wall_s']:.1f} | {r['samples_per_s']:,} | {r['final_loss']:.3f} | {r['recall@100']:.4f} |"
        for name, r in runs.items()
    )
    md = f"""### Retrieval training: Ray Train against one process ({SOURCE}, {EPOCHS} epochs, plain two-tower)

Both train on the same {next(iter(runs.values()))["train_examples"]:,} positives. Wall time covers example
preparation and training (for Ray also its start and the workers' start); samples/s is the last epoch's training
throughput (Ray: both workers together). Popularity recall@100 on the same holdout:
{next(iter(runs.values()))["popularity_recall@100"]:.4f}.

| run | wall s | samples/s | final loss | recall@100 |
|---|---|---|---|---|
{rows}

Reproduce: `python -m bench.ray_training`.
"""
    write_result(NAME, result, md)
    return result


if __name__ == "__main__":
    main()
