"""Baseline for bench/demo_loop.py: the pipeline's steps as plain function calls in one process, in the order
kfp.local runs them, with the same parameters. The difference to the pipeline's step times is what orchestration
costs (a fresh Python process per step, artifact bookkeeping), not the work itself."""

from __future__ import annotations

import time
from pathlib import Path

from components import release
from monitoring.drift import engagement_drift
from pipelines import steps


def run_inline(params: dict, root: Path) -> dict[str, float]:
    """Seconds per step, keyed by the pipeline's task names."""
    p, root, times = params, Path(root), {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name] = round(time.perf_counter() - t0, 2)
        return out

    data = root / "data"
    timed("data", steps.prepare_data, p["source"], data, p["seed"])
    split = steps.time_split(data, p["holdout_days"], p["ranking_days"])
    timed("features", steps.build_features, data, root / "features", p["half_life_days"], p["online_store"])
    timed("monitor", engagement_drift, data, root / "drift", p["reference_days"], p["current_days"])
    timed(
        "train-retrieval", steps.train_retrieval_step, data, root / "retrieval", split, p["retrieval_epochs"], p["seed"]
    )
    timed(
        "train-ranking",
        steps.train_ranking_step,
        data,
        root / "retrieval",
        root / "ranking",
        split,
        p["ranking_epochs"],
        p["ranking_max_examples"],
        p["seed"],
    )
    timed("evaluate", steps.evaluate, data, root / "retrieval", root / "ranking", root / "evaluation", split)
    registry = str(root / "registry")  # a fresh one, as the demo's: the gate has no champion and deploys
    timed("gate", release.gate_step, data, root / "evaluation", root / "gate", split, registry, "inline")
    timed("index", steps.index_pins, data, root / "retrieval", root / "index")
    timed(
        "deploy",
        release.deploy_step,
        *(root / n for n in ("retrieval", "ranking", "index", "evaluation", "features", "gate", "deployment")),
        registry,
        "none",
        "inline",
    )
    return times
