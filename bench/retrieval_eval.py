"""The retrieval variants side by side on the medium world: what `homefeed eval retrieval --source world:medium`
prints, kept in bench/results/ so docs/results.md's table is generated from a measured run.

Run: `python -m bench.retrieval_eval` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

from bench.harness import prepared_dataset, write_result

NAME = "retrieval_eval"
SOURCE = "world:medium"
EPOCHS = 3
COMMAND = f"homefeed eval retrieval --source {SOURCE} --epochs {EPOCHS}"


def main() -> dict:
    from components.data.split import time_split
    from components.evaluate.retrieval_ablation import default_variants, evaluate_variants, markdown

    with prepared_dataset(SOURCE) as tmp:
        data = tmp / "dataset"
        result = evaluate_variants(
            data, tmp / "eval", time_split(data, 1.0).train_end_ms, default_variants(EPOCHS, seed=0)
        )
    result["dataset"] = SOURCE  # the temporary path is gone
    result["command"] = COMMAND
    md = markdown(result) + f"\nReproduce: `{COMMAND}`.\n"
    write_result(NAME, result, md)
    return result


if __name__ == "__main__":
    main()
