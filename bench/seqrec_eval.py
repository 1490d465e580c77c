"""The two-tower on the public sequence datasets with the SASRec protocol: what `homefeed eval seqrec` prints for
Amazon Beauty (BERT4Rec's file) and MovieLens-100K, kept in bench/results/ with the popularity baseline measured on
the same candidates.

The datasets are research-licensed and never committed: they are read from ../shared/datasets (next to the
repository); the benchmark says so and writes nothing when that folder is absent.

Run: `python -m bench.seqrec_eval` (about 2 minutes on 2 idle cores).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.harness import write_result

NAME = "seqrec_eval"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
DATASETS = [  # (name, path under SHARED, format)
    ("beauty", "bert4rec_beauty/beauty.txt", "sasrec"),
    ("ml-100k", "movielens_100k/u.data", "movielens"),
]


def main() -> dict | None:
    from components.evaluate.seqrec import evaluate_seqrec, markdown, training_options

    if not SHARED.is_dir():
        print(f"{SHARED} is absent (research-licensed data is never committed): nothing measured", file=sys.stderr)
        return None
    opts = training_options(seed=0)
    results, parts = {}, []
    for name, rel, fmt in DATASETS:
        command = f"homefeed eval seqrec --data ../shared/datasets/{rel} --format {fmt}"
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = evaluate_seqrec(SHARED / rel, fmt, Path(tmp), opts, on_ray=False, command=command)
        parts.append(markdown(results[name]))
    md = "\n".join(parts)
    write_result(NAME, {"datasets": results}, md)
    return results


if __name__ == "__main__":
    main()
