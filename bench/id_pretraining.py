"""Pretrained ID embeddings against dropout and the pretraining window, on the default world: what
`homefeed eval ids --source world:small` prints, kept in bench/results/ for the README.

Run: `python -m bench.id_pretraining` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.harness import write_result

NAME = "id_pretraining"
SOURCE = "world:small"
EPOCHS = 3
COMMAND = f"homefeed eval ids --source {SOURCE} --epochs {EPOCHS}"


def main() -> dict:
    from components import steps
    from components.evaluate.id_overfitting import evaluate_id_pretraining, markdown
    from components.evaluate.retrieval_ablation import split_cut

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dataset"
        steps.prepare_data(SOURCE, data, seed=0)
        result = evaluate_id_pretraining(data, Path(tmp) / "eval", split_cut(data, 1.0), EPOCHS, seed=0)
    result["dataset"], result["command"] = SOURCE, COMMAND
    write_result(NAME, result, markdown(result) + f"\nReproduce: `{COMMAND}`.\n")
    return result


if __name__ == "__main__":
    main()
