"""`make bench`: run every benchmark, then regenerate the README's results section from the JSON they wrote."""

from __future__ import annotations

import subprocess
import sys

from bench.readme import update_readme

# bench.ranking_eval is not in this list: its 66 trainings take hours on 2 CPU cores; its tables were trained on a
# GPU through the device tool (see its docstring)
BENCHMARKS = [
    ["bench.world_generation", "--preset", "large"],
    ["bench.demo_loop"],
    ["bench.stream_processor"],
    ["bench.online_fetch"],
    ["bench.retrieval_eval"],
    ["bench.seqrec_eval"],
    ["bench.id_pretraining"],
    ["bench.ray_training"],
]


def main() -> None:
    for argv in BENCHMARKS:
        print(f"== {' '.join(argv)}", flush=True)
        subprocess.run([sys.executable, "-m", *argv], check=True)
    update_readme()


if __name__ == "__main__":
    main()
