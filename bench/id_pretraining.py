"""Pretrained ID embeddings against dropout and the pretraining window, on the default world: what
`homefeed eval ids --source world:small` prints, kept in bench/results/ for docs/results.md.

Run: `python -m bench.id_pretraining` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

from bench.harness import prepared_dataset, write_result

NAME = "id_pretraining"
SOURCE = "world:small"
EPOCHS = 3
COMMAND = f"homefeed eval ids --source {SOURCE} --epochs {EPOCHS}"


def main() -> dict:
    from components.data.split import time_split
    from components.evaluate.id_overfitting import evaluate_id_pretraining, markdown

    with prepared_dataset(SOURCE) as tmp:
        data = tmp / "dataset"
        result = evaluate_id_pretraining(data, tmp / "eval", time_split(data, 1.0).train_end_ms, EPOCHS, seed=0)
    result["dataset"], result["command"] = SOURCE, COMMAND
    write_result(NAME, result, markdown(result) + f"\nReproduce: `{COMMAND}`.\n")
    return result


if __name__ == "__main__":
    main()
