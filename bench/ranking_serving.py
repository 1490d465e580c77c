"""Ranking model time per serving request: eager fp32 vs bf16 + torch.compile, once-per-user (grouped) on vs off.

    python -m bench.ranking_serving [--device cuda|cpu] [--out PATH] [--requests N] [--cpu-requests N]

One request = one user with a full 100-action sequence and 1,000 candidates, the ranking predictor's largest
request. Model time runs from the request's arrays on the host to the probabilities on the host (transfers
included; on CUDA the device is synchronised before the clock stops); feature fetching and JSON are not part of it.
The model is Pinnability at its defaults (TransAct v1.1, seq_len 100) with random weights: time does not depend on
the values. Arms: CPU fp32 eager (grouped off / on) always; with --device cuda also CUDA fp32 eager and bf16 +
torch.compile, each grouped off / on.

Runs on the GPU machine, which has torch and numpy but none of the project's other dependencies: this file imports
only the stdlib, torch, numpy, models.* and serving.scorer (whose imports are torch, numpy and models.*), not
bench.harness (psutil). Writes a JSON file (default bench/results/ranking_serving.json) and a markdown table next
to it (.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from models.ranking.pinnability import Pinnability, PinnabilityConfig
from serving.scorer import Scorer, synthetic_request

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ranking_serving.json"
N_PINS, PIN_DIM, USER_DIM, N_INTERESTS = 100_000, 64, 64, 32
CANDIDATES = 1000
TARGET_P99_MS, TARGET_SPEEDUP = 5.0, 4.0
WARMUP_REQUESTS = 3


def build_model(seed: int = 0) -> Pinnability:
    """Default PinnabilityConfig / SequenceConfig, a 100,000 x 64 content table of random unit rows."""
    torch.manual_seed(seed)
    content = torch.nn.functional.normalize(torch.randn(N_PINS, PIN_DIM), dim=1)
    return Pinnability(PinnabilityConfig(n_interests=N_INTERESTS), content, USER_DIM).eval()


def arms(device: str) -> list[dict]:
    """The configurations measured, CPU first (it runs everywhere)."""
    out = [{"device": "cpu", "dtype": "fp32", "compile": False, "grouped": g} for g in (False, True)]
    if device == "cuda":
        for dtype, compiled, mode in (("fp32", False, None), ("bf16", True, None), ("bf16", True, "reduce-overhead")):
            out += [{"device": "cuda", "dtype": dtype, "compile": compiled, "compile_mode": mode, "grouped": g}
                    for g in (False, True)]  # fmt: skip
    for arm in out:
        arm.setdefault("compile_mode", None)
        mode = "bf16+compile" if arm["compile"] else f"{arm['dtype']} eager"
        mode += "+cudagraphs" if arm["compile_mode"] == "reduce-overhead" else ""
        arm["name"] = f"{arm['device']} {mode} grouped {'on' if arm['grouped'] else 'off'}"
    return out


def time_requests(scorer: Scorer, requests: list[tuple]) -> np.ndarray:
    """Per-request model time in ms: host arrays in, host probabilities out."""
    times = []
    for request in requests:
        start = time.perf_counter()
        scorer.score(*request)
        if scorer.device.type == "cuda":
            torch.cuda.synchronize(scorer.device)  # score() already copies to the host; this makes it explicit
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def run_arm(model: Pinnability, arm: dict, requests: list[tuple], reference: dict) -> dict:
    """Warm up (compile), time the requests, and compare the first request's scores to the same device's fp32
    eager ungrouped arm (`reference` holds it once measured)."""
    start = time.perf_counter()
    scorer = Scorer(model, arm["device"], arm["dtype"], compile=arm["compile"], grouped=arm["grouped"],
                    compile_mode=arm["compile_mode"])  # fmt: skip
    scorer.warmup(pair_counts=[CANDIDATES], repeats=2)
    for request in requests[:WARMUP_REQUESTS]:
        scorer.score(*request)
    setup_s = time.perf_counter() - start
    times = time_requests(scorer, requests)
    probs = scorer.score(*requests[0])
    reference.setdefault(arm["device"], probs)  # the first arm of each device is its fp32 eager ungrouped arm
    pairs = sum(len(r[4]) for r in requests)
    result = {
        **arm,
        "requests": len(requests),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "mean_ms": round(float(times.mean()), 3),
        "pairs_per_s": round(pairs / (times.sum() / 1e3), 1),
        "setup_s": round(setup_s, 1),
        "max_abs_prob_diff_vs_fp32_eager_ungrouped": float(np.abs(probs - reference[arm["device"]]).max()),
    }
    print(f"{arm['name']}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, {result['pairs_per_s']} pairs/s")
    return result


def speedups(results: list[dict]) -> dict[str, float]:
    """Throughput ratios: grouped on vs off per configuration, bf16+compile vs fp32 eager per grouping."""
    by_name = {r["name"]: r for r in results}

    def ratio(fast: str, slow: str) -> float | None:
        if fast in by_name and slow in by_name:
            return round(by_name[fast]["pairs_per_s"] / by_name[slow]["pairs_per_s"], 2)
        return None

    out = {}
    for config in ("cpu fp32 eager", "cuda fp32 eager", "cuda bf16+compile", "cuda bf16+compile+cudagraphs"):
        out[f"{config}: grouped on vs off"] = ratio(f"{config} grouped on", f"{config} grouped off")
    for compiled in ("bf16+compile", "bf16+compile+cudagraphs"):
        for g in ("off", "on"):
            out[f"cuda {compiled} vs fp32 eager, grouped {g}"] = ratio(
                f"cuda {compiled} grouped {g}", f"cuda fp32 eager grouped {g}"
            )
    out["cuda bf16+compile+cudagraphs grouped on vs fp32 eager grouped off"] = ratio(
        "cuda bf16+compile+cudagraphs grouped on", "cuda fp32 eager grouped off"
    )
    return {k: v for k, v in out.items() if v is not None}


def targets(results: list[dict], ratios: dict[str, float]) -> list[dict]:
    """The two serving targets, met / not met / not measured (no CUDA arm)."""
    by_name = {r["name"]: r for r in results}
    out = []
    for compiled in ("bf16+compile", "bf16+compile+cudagraphs"):
        served = by_name.get(f"cuda {compiled} grouped on")
        out.append(
            {
                "target": f"GPU model time p99 ≤ {TARGET_P99_MS:g} ms ({compiled} grouped on)",
                "measured": None if served is None else f"{served['p99_ms']} ms",
                "met": None if served is None else bool(served["p99_ms"] <= TARGET_P99_MS),
            }
        )
        for g in ("off", "on"):
            ratio = ratios.get(f"cuda {compiled} vs fp32 eager, grouped {g}")
            out.append(
                {
                    "target": f"{compiled} ≥ {TARGET_SPEEDUP:g}× eager fp32 throughput (grouped {g} both)",
                    "measured": None if ratio is None else f"{ratio}×",
                    "met": None if ratio is None else bool(ratio >= TARGET_SPEEDUP),
                }
            )
    return out


def machine() -> dict:
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def shapes() -> dict:
    cfg = PinnabilityConfig(n_interests=N_INTERESTS)
    return {
        "model": "Pinnability, default PinnabilityConfig and SequenceConfig, random weights",
        "sequence_kind": cfg.sequence.kind,
        "seq_len": cfg.sequence.seq_len,
        "n_interests": N_INTERESTS,
        "content_table": [N_PINS, PIN_DIM],
        "user_dim": USER_DIM,
        "request": f"1 user, {CANDIDATES} candidates, a full {cfg.sequence.seq_len}-action sequence",
    }


def markdown(result: dict) -> str:
    lines = [
        "### Ranking serving: model time per request, CPU vs H200 (`python -m bench.ranking_serving --device cuda`)",
        "",
        f"{result['shapes']['request']}; Pinnability defaults ({result['shapes']['sequence_kind']}, seq_len "
        f"{result['shapes']['seq_len']}), n_interests {N_INTERESTS}, content table {N_PINS:,} x {PIN_DIM}, "
        f"user_dim {USER_DIM}. Model time = host arrays in to host probabilities out.",
        "",
        f"Machine: {result['machine']['cuda_device'] or 'no CUDA'}; CPU {result['machine']['cpu']} "
        f"({result['machine']['cpu_count']} cores, torch threads {result['machine']['torch_threads']}); "
        f"torch {result['machine']['torch']}.",
        "",
        "Reproduce on a GPU machine: `python -m bench.ranking_serving --device cuda` (the figures below come from one "
        "H200 through the device tool; `make bench` does not run it).",
        "",
        "| arm | requests | p50 ms | p99 ms | pairs/s | setup s | max abs Δprob vs fp32 eager off |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["arms"]:
        lines.append(
            f"| {r['name']} | {r['requests']} | {r['p50_ms']} | {r['p99_ms']} | {r['pairs_per_s']:,.0f} | "
            f"{r['setup_s']} | {r['max_abs_prob_diff_vs_fp32_eager_ungrouped']:.2e} |"
        )
    lines += ["", "| speedup (throughput) | × |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in result["speedups"].items()]
    lines += ["", "| target | measured | status |", "|---|---|---|"]
    for t in result["targets"]:
        status = "not measured (no CUDA)" if t["met"] is None else ("met" if t["met"] else "not met")
        lines.append(f"| {t['target']} | {t['measured'] or '-'} | {status} |")
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per CUDA arm")
    parser.add_argument("--cpu-requests", type=int, default=30, help="timed requests per CPU arm (slow)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    model = build_model()
    rng = np.random.default_rng(1)
    seq_len = model.cfg.sequence.seq_len
    pool = [synthetic_request(model, CANDIDATES, 1, seq_len, rng) for _ in range(max(args.requests, args.cpu_requests))]
    results, reference = [], {}
    for arm in arms(args.device):
        n = args.cpu_requests if arm["device"] == "cpu" else args.requests
        results.append(run_arm(model, arm, pool[:n], reference))
    ratios = speedups(results)
    result = {
        "benchmark": "ranking_serving",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "shapes": shapes(),
        "arms": results,
        "speedups": ratios,
        "targets": targets(results, ratios),
    }
    write(args.out, result)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
