"""One experiment from a world to its report: train or reuse the arms' models, serve the schedule, write the report.

The one sequence `homefeed experiment`, the benchmark and the tests run (homefeed/experiment/arms.py,
engine.py, report.py do the parts).

Example:
    result = run_ab(Path("worlds/small"), Path("experiments/small"), days=3, users_per_arm=400)
    result["report"]["segments"]["non-core"]["effects"]["repins"]["treatment"]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def run_ab(
    world_dir: Path,
    out_dir: Path,
    arms: dict[str, str] | None = None,
    *,
    days: int = 3,
    users_per_arm: int = 200,
    design: str = "paired",
    feed_size: int = 10,
    candidates: int = 200,
    seed: int = 0,
    training: dict | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Models under `out_dir/models`, the run and its report under `out_dir/run`; returns {"summary", "report",
    "paths"} (paths: the report's json and markdown). `arms` maps arm name to sequence module, the first being the
    control (default control=none, treatment=transact_v11); `training` overrides arms.prepare's keyword defaults.
    `design`: "paired" or "split" (homefeed/experiment/design.py). A ValueError for a dataset that is not a
    simulated world, or for a design or arms that cannot run, comes before any training."""
    import pandas as pd

    from homefeed.experiment import arms as arms_
    from homefeed.experiment.design import DESIGNS, ExperimentConfig
    from homefeed.experiment.engine import run_experiment, world_of
    from homefeed.experiment.report import build_report, write

    world_of(world_dir)
    arms = arms or arms_.DEFAULT_ARMS
    if len(arms) < 2:
        raise ValueError(f"an experiment needs at least two arms, got {list(arms)}")
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}; got {design!r}")
    out_dir = Path(out_dir)
    stack = arms_.prepare(world_dir, out_dir / "models", arms, seed=seed, progress=log, **(training or {}))
    cfg = ExperimentConfig(days=days, users_per_arm=users_per_arm, design=design, feed_size=feed_size,
                           candidates=candidates, seed=seed, arms=tuple(stack["arms"]))  # fmt: skip
    run = out_dir / "run"
    summary = run_experiment(world_dir, stack["features"], stack["retrieval"], stack["index"], cfg, run, progress)
    report = build_report(pd.read_parquet(run / "pages.parquet"), pd.read_parquet(run / "assignment.parquet"),
                          control=cfg.arms[0].name, seed=seed)  # fmt: skip
    return {"summary": summary, "report": report, "paths": write(report, run)}
