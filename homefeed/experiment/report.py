"""The experiment's report: per arm and per segment (all, core, non-core), per-user outcomes with bootstrap
confidence intervals, and each arm's effect relative to the control.

The unit is the user: an arm's figure for a metric is the mean over its assigned users of that user's total over the
experiment (a user who never came back counts, with zeros), so users who visit more weigh more in the rates below,
as they do in a feed's totals. Diversity is the mean, over a user's pages, of the distinct interests a page showed
(users without a page do not count for it). Intervals: 95% percentile bootstrap over users (`resamples` draws,
seeded). In a split test users are resampled within each arm, independently; in the paired design (the same users in
every arm) one resample of users serves every arm, so an effect's interval is that of the paired difference.
Metrics:

    sessions, pages, impressions       per user
    clicks, repins, hides              per user
    repin_rate, hide_rate, click_rate  per impression: the arm's total actions over its total impressions
    diversity                          distinct interests per page

Example:
    report = build_report(pages, assignment, control="control")
    report["segments"]["non-core"]["effects"]["repins"]["treatment"]   # {"relative": 0.12, "ci": [0.03, 0.21]}
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from homefeed.experiment.design import is_core

COUNTS = ("sessions", "pages", "impressions", "clicks", "repins", "hides")
RATES = {"click_rate": "clicks", "repin_rate": "repins", "hide_rate": "hides"}
METRICS = (*COUNTS, *RATES, "diversity")
SEGMENT_GROUPS = ("all", "core", "non-core")
LEVEL = 0.95


def per_user(pages: pd.DataFrame, assignment: pd.DataFrame) -> pd.DataFrame:
    """One row per assigned user and arm: arm, segment, and their totals (zeros for a user who never opened the
    feed)."""
    grouped = pages.groupby(["arm", "user_id"])
    totals = pd.DataFrame({
        "sessions": grouped["session"].nunique(),
        "pages": grouped.size(),
        "impressions": grouped["shown"].sum(),
        "clicks": grouped["clicks"].sum(),
        "repins": grouped["repins"].sum(),
        "hides": grouped["hides"].sum(),
        "diversity": grouped["distinct_interests"].mean(),
    })  # fmt: skip
    users = assignment.set_index(["arm", "user_id"])[["segment"]].join(totals)
    users[list(COUNTS)] = users[list(COUNTS)].fillna(0).astype(np.int64)
    return users.reset_index()


def _select(users: pd.DataFrame, group: str) -> pd.DataFrame:
    if group == "all":
        return users
    core = is_core(users["segment"].to_numpy())
    return users[core] if group == "core" else users[~core]


def _statistic(values: dict[str, np.ndarray], metric: str, idx: np.ndarray | None = None) -> np.ndarray | float:
    """The metric over users (rows `idx` of each resample, [B, n]); for a rate, a ratio of sums."""

    def take(name):  # noqa: E306
        v = values[name]
        return v if idx is None else v[idx]

    if metric in RATES:
        num, den = take(RATES[metric]).sum(axis=-1), take("impressions").sum(axis=-1)
        return np.divide(num, den, out=np.full(np.shape(num), np.nan, dtype=float), where=den > 0)
    column = take(metric).astype(float)
    return np.nanmean(column, axis=-1) if metric == "diversity" else column.mean(axis=-1)


def _draws(users: pd.DataFrame, idx: np.ndarray) -> tuple[dict, dict]:
    """(point estimates, bootstrap draws) of every metric for one arm's users; `idx` [resamples, n] picks rows."""
    values = {m: users[m].to_numpy() for m in (*COUNTS, "diversity")}
    n, resamples = len(users), len(idx)
    # A resample of users none of whom opened the feed has no diversity (NaN, left out of its interval): expected,
    # so numpy's "mean of empty slice" warning is silenced with the division warnings.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = {m: float(_statistic(values, m)) if n else float("nan") for m in METRICS}
        draws = {m: _statistic(values, m, idx) if n else np.full(resamples, np.nan) for m in METRICS}
    return point, draws


def _resamples(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), dtype=np.int64)


def _interval(draws: np.ndarray) -> list[float | None]:
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return [None, None]
    lo, hi = np.quantile(finite, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def build_report(pages: pd.DataFrame, assignment: pd.DataFrame, control: str, resamples: int = 2000,
                 seed: int = 0) -> dict:  # fmt: skip
    """The report as JSON-able data (see the module docstring); `control` names the reference arm."""
    arms = sorted(assignment["arm"].unique(), key=lambda a: (a != control, a))
    if control not in arms:
        raise ValueError(f"control arm {control!r} is not one of the arms {arms}")
    users = per_user(pages, assignment).sort_values(["arm", "user_id"], kind="stable")
    members = [set(users.loc[users["arm"] == arm, "user_id"]) for arm in arms]
    paired = all(m == members[0] for m in members)  # every arm's users the same: the paired design
    rng = np.random.default_rng(seed)
    segments = {}
    for group in SEGMENT_GROUPS:
        chosen = _select(users, group)
        by_arm = {arm: chosen[chosen["arm"] == arm] for arm in arms}
        shared = _resamples(rng, len(by_arm[control]), resamples) if paired else None
        estimates = {
            arm: _draws(rows, shared if paired else _resamples(rng, len(rows), resamples))
            for arm, rows in by_arm.items()
        }
        metrics = {m: {arm: {"mean": _clean(estimates[arm][0][m]), "ci": _interval(estimates[arm][1][m])}
                       for arm in arms} for m in METRICS}  # fmt: skip
        effects = {}
        for m in METRICS:
            base_point, base_draws = estimates[control][0][m], estimates[control][1][m]
            effects[m] = {}
            for arm in arms[1:]:
                with np.errstate(invalid="ignore", divide="ignore"):
                    relative = estimates[arm][0][m] / base_point - 1 if base_point else float("nan")
                    draws = estimates[arm][1][m] / base_draws - 1
                effects[m][arm] = {"relative": _clean(relative), "ci": _interval(draws)}
        counts = chosen.groupby("arm").size()
        segments[group] = {"users": {arm: int(counts.get(arm, 0)) for arm in arms}, "metrics": metrics,
                           "effects": effects}  # fmt: skip
    daily = pages.groupby(["arm", "day"])[["shown", "clicks", "repins", "hides"]].sum().reset_index()
    return {
        "arms": arms,
        "control": control,
        "level": LEVEL,
        "resamples": resamples,
        "unit": "user",
        "design": "paired" if paired else "split",
        "segments": segments,
        "daily": [{k: v if isinstance(v, str) else int(v) for k, v in r.items()} for r in daily.to_dict("records")],
    }


def _clean(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" if percent else (f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}")


def markdown(report: dict) -> str:
    """One table per segment group: each arm's mean [95% CI] and each arm's effect against the control."""
    arms, control = report["arms"], report["control"]
    lines = []
    for group, seg in report["segments"].items():
        users = ", ".join(f"{arm} {n}" for arm, n in seg["users"].items())
        lines += [f"#### {group} users ({users})", ""]
        head = ["metric", *[f"{arm} mean [95% CI]" for arm in arms], *[f"{arm} vs {control}" for arm in arms[1:]]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for metric in METRICS:
            cells = [metric]
            for arm in arms:
                cell = seg["metrics"][metric][arm]
                lo, hi = cell["ci"]
                cells.append(f"{_fmt(cell['mean'])} [{_fmt(lo)}, {_fmt(hi)}]")
            for arm in arms[1:]:
                eff = seg["effects"][metric][arm]
                lo, hi = eff["ci"]
                cells.append(f"{_fmt(eff['relative'], True)} [{_fmt(lo, True)}, {_fmt(hi, True)}]")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write(report: dict, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and the effects' forest plot (effects.svg) in `out_dir`; returns their paths."""
    from homefeed.experiment.plot import effects_svg

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": out_dir / "effects.svg"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report) + "\n")
    paths["plot"].write_text(effects_svg(report) + "\n")
    return paths
