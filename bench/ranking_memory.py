"""Ranking's peak memory by request size: scoring in passes (serving/scorer.py, PASS_PAIRS) against one pass.

    python -m bench.ranking_memory [--users 4 16 32] [--out PATH]

Each measurement runs in a fresh process (a process's peak resident memory only grows): it builds the model
bench.ranking_serving times (Pinnability at its defaults, a 100,000-pin content table, random weights: memory does
not depend on the values), scores one request of U users with 1,000
candidates each and a full 100-action sequence on the CPU, and reports its peak RSS before and after the request
and the request's time. Arms: passes of PASS_PAIRS["cpu"] pairs (what the server does) and the whole request in one
pass (what it did). 32 x 1,000 is the largest request the ranking server accepts (serving/ranking.py, MAX_PAIRS).
Time is reported as measured once, on whatever else the machine was doing: memory is the claim here, not speed.
Writes a JSON file (default bench/results/ranking_memory.json) and a markdown table next to it (.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ranking_memory.json"
CANDIDATES = 1000


def _measure(users: int, one_pass: bool) -> dict:
    """In this process: peak RSS (MB) after building the scorer and after scoring one request, and its seconds."""
    import numpy as np

    from bench.ranking_serving import build_model
    from serving.scorer import Scorer, synthetic_request

    scorer = Scorer(build_model(), "cpu")
    if one_pass:
        scorer.pass_pairs = users * CANDIDATES
    request = synthetic_request(scorer.model, users * CANDIDATES, users, scorer.seq_len, np.random.default_rng(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    scorer.score(*request)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"users": users, "pairs": users * CANDIDATES, "one_pass": one_pass, "pass_pairs": scorer.pass_pairs,
            "rss_before_mb": round(before), "rss_peak_mb": round(peak), "seconds": round(seconds, 2)}  # fmt: skip


def run(users: list[int]) -> dict:
    rows = []
    for u in users:
        for one_pass in (False, True):
            arg = json.dumps({"users": u, "one_pass": one_pass})
            out = subprocess.run([sys.executable, "-m", "bench.ranking_memory", "--one", arg],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return {
        "benchmark": "ranking_memory",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "candidates_per_user": CANDIDATES,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        "## Ranking: peak memory by request size (`python -m bench.ranking_memory`)",
        "",
        f"{result['when']}, CPU. Pinnability at its defaults (100,000 pins, random weights), one request of U users x "
        f"{result['candidates_per_user']} candidates, each arm in a fresh process. Peak RSS of the process; the time "
        "is one measurement on a shared machine.",
        "",
        "| users | pairs | scored | peak RSS before (MB) | peak RSS after (MB) | grew (MB) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        how = "one pass" if r["one_pass"] else f"passes of {r['pass_pairs']}"
        grew = r["rss_peak_mb"] - r["rss_before_mb"]
        lines.append(f"| {r['users']} | {r['pairs']:,} | {how} | {r['rss_before_mb']:,} | {r['rss_peak_mb']:,} | "
                     f"{grew:,} | {r['seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, in this process
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(_measure(spec["users"], spec["one_pass"])))
        return
    result = run(args.users)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
