"""World generation at the target size (100k users, 1M pins, 10M events): wall time and peak memory, and the
event-generation throughput against the per-request loop baseline (bench/baselines/world_loop.py).

Each measurement runs in its own process, so peak memory is that of the generation alone.
Run: `python -m bench.world_generation` (or `make bench`); `--preset tiny` for a quick check.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.harness import peak_rss_gib, run_child, write_result

TARGET_S = 120.0
TARGET_GIB = 4.0
BASELINE_REQUESTS = 3_000


def _measure_vectorized(preset_name: str) -> dict:
    from components.data.world.config import preset
    from components.data.world.simulate import simulate_world

    marks: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        marks[stage] = time.perf_counter() - t0  # last report of each stage = when it finished

    with tempfile.TemporaryDirectory() as tmp:
        report = simulate_world(preset(preset_name), Path(tmp), progress)
        wall = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    stage_s, prev = {}, 0.0
    for stage in ("population", "requests", "events", "write"):
        stage_s[stage] = round(marks[stage] - prev, 3)
        prev = marks[stage]
    events = report.rows["events"]
    return {
        "wall_s": round(wall, 2),
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "rows": report.rows,
        "stage_s": stage_s,
        "events_per_s_traffic": round(events / stage_s["events"], 1),
        "bytes_on_disk": size,
    }


def _measure_loop(preset_name: str, n_requests: int) -> dict:
    import numpy as np

    from bench.baselines.world_loop import loop_events
    from components.data.world.config import preset
    from components.data.world.population import make_interests, make_pins, make_users
    from components.data.world.simulate import _ground_truth
    from components.data.world.traffic import SlatePolicy, make_requests

    cfg = preset(preset_name)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)]
    _, centroids, pop = make_interests(cfg, rngs[0])
    pins = make_pins(cfg, rngs[1], centroids, pop)
    users = make_users(cfg, rngs[2], pop)
    truth = _ground_truth(cfg, rngs[3], centroids, pop, pins, users)
    requests = make_requests(cfg, rngs[3], users)
    policy = SlatePolicy(cfg, pins, users)
    t0 = time.perf_counter()
    events = loop_events(cfg, rngs[4], requests, policy, truth, pins, users, n_requests)
    elapsed = time.perf_counter() - t0
    return {
        "requests": n_requests,
        "events": len(events),
        "traffic_s": round(elapsed, 3),
        "events_per_s_traffic": round(len(events) / elapsed, 1),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="large")
    parser.add_argument("--child", choices=["vectorized", "loop"])
    args = parser.parse_args()
    if args.child == "vectorized":
        print(json.dumps(_measure_vectorized(args.preset)))
        return {}
    if args.child == "loop":
        print(json.dumps(_measure_loop(args.preset, BASELINE_REQUESTS)))
        return {}

    vec = run_child("bench.world_generation", "--child", "vectorized", "--preset", args.preset)
    loop = run_child("bench.world_generation", "--child", "loop", "--preset", args.preset)
    speedup = vec["events_per_s_traffic"] / loop["events_per_s_traffic"]
    result = {
        "preset": args.preset,
        "target": {"wall_s": TARGET_S, "peak_rss_gib": TARGET_GIB},
        "met": vec["wall_s"] <= TARGET_S and vec["peak_rss_gib"] <= TARGET_GIB,
        "vectorized": vec,
        "baseline_loop": loop,
        "traffic_speedup_vs_loop": round(speedup, 1),
    }
    rows = vec["rows"]
    md = f"""### World generation ({args.preset}: {rows["users"]:,} users, {rows["pins"]:,} pins, {rows["events"]:,} events)

| measure | value | target |
|---|---|---|
| wall time (generate + validate + write) | {vec["wall_s"]} s | ≤ {TARGET_S:.0f} s |
| peak memory (RSS) | {vec["peak_rss_gib"]} GiB | ≤ {TARGET_GIB:.0f} GiB |
| stages (population / requests / events / write) | {" / ".join(str(v) for v in vec["stage_s"].values())} s | |
| traffic throughput, vectorized | {vec["events_per_s_traffic"]:,.0f} events/s | |
| traffic throughput, per-request loop baseline ({loop["requests"]:,} requests) | {loop["events_per_s_traffic"]:,.0f} events/s | |
| speed-up over the loop | {speedup:.0f}× | |
| target met | {"yes" if result["met"] else "no"} | |
"""
    write_result(f"world_generation_{args.preset}", result, md)
    return result


if __name__ == "__main__":
    main()
