"""`make bench`: run every benchmark, then regenerate docs/results.md from the JSON they wrote."""

from __future__ import annotations

import subprocess
import sys

from bench.results_page import write_page

# bench.ranking_eval and bench.ranking_serving are not in this list: the first's 66 trainings take hours on 2 CPU
# cores, and the second measures a GPU; both ran on an H200 through the device tool (see their docstrings)
BENCHMARKS = [
    ["bench.world_generation", "--preset", "large"],
    ["bench.demo_loop"],
    ["bench.stream_processor"],
    ["bench.live_events"],
    ["bench.online_fetch"],
    ["bench.retrieval_eval"],
    ["bench.seqrec_eval"],
    ["bench.id_pretraining"],
    ["bench.ray_training"],
    ["bench.ann", "--one-graph"],
    ["bench.ann", "--uri", "standalone", "--name", "ann_standalone"],  # the same corpus on the Milvus server
    ["bench.serving_latency"],
    ["bench.ranking_memory"],
    ["bench.monitoring_job"],
    ["bench.monitoring_scenarios"],
    ["bench.online_experiment"],
]


def main() -> None:
    for argv in BENCHMARKS:
        print(f"== {' '.join(argv)}", flush=True)
        subprocess.run([sys.executable, "-m", *argv], check=True)
    write_page()


if __name__ == "__main__":
    main()
