"""The retrieval variants side by side on the default world: what `homefeed eval retrieval --source world:small`
prints, kept in bench/results/ so the README's table is generated from a measured run.

Run: `python -m bench.retrieval_eval` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.harness import write_result

NAME = "retrieval_eval"
SOURCE = "world:small"
EPOCHS = 3
COMMAND = f"homefeed eval retrieval --source {SOURCE} --epochs {EPOCHS}"


def main() -> dict:
    from components import steps
    from components.evaluate.retrieval_ablation import default_variants, evaluate_variants, markdown, split_cut

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dataset"
        steps.prepare_data(SOURCE, data, seed=0)
        result = evaluate_variants(data, Path(tmp) / "eval", split_cut(data, 1.0), default_variants(EPOCHS, seed=0))
    result["dataset"] = SOURCE  # the temporary path is gone
    result["command"] = COMMAND
    md = markdown(result) + f"\nReproduce: `{COMMAND}`.\n"
    write_result(NAME, result, md)
    return result


if __name__ == "__main__":
    main()
