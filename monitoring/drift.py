"""The pipelines' drift step: the monitoring job on a dataset's latest window, without a model.

<out_dir>/<window end>/report.html, report.json, summary.json   the monitoring job's (monitoring/job.py)
<out_dir>/summary.json                                          that summary with `actions` and `drift_detected`
"""

from __future__ import annotations

import json
from pathlib import Path

from monitoring.engagement import ENGAGEMENTS
from monitoring.job import Windows, grouped, run_window
from monitoring.window import Source

DRIFT_SUMMARY = "summary.json"  # written by `engagement_drift` beside the window folder of the monitoring job


def engagement_drift(dataset_dir: Path, out_dir: Path, reference_days: float = 7, current_days: float = 1) -> dict:
    """The `monitor` step. The latest `current_days` are compared with the `reference_days` before them:
    engagement rates overall and per group with the z-test, and the feature distributions. The job writes `out_dir/<window end>/report.html`,
    `report.json` and `summary.json`; the summary returned, also written as `out_dir/summary.json`, is the job's
    with two keys more, which the pipeline's artifact metadata reads: `actions` (`engagement_changes` overall) and
    `drift_detected` (whether the z-test found any of the three overall rates moved).
    """
    source = Source.load(dataset_dir)  # read once: for where the data ends and for both windows
    windows = Windows.ending(source.end_ms(), current_days, reference_days)
    summary = run_window(Path(dataset_dir), windows, Path(out_dir), source=source)
    actions = engagement_changes(summary)
    summary["actions"] = actions
    summary["drift_detected"] = any(v["drift_detected"] for v in actions.values())
    (Path(out_dir) / DRIFT_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def engagement_changes(summary: dict, group: str = "all") -> dict[str, dict]:
    """Per engagement action, from a monitoring-job summary (monitoring.job.run_window): the reference and current
    rate of `group`'s impressions ("all", "core" or "non-core"), the relative change (None from a zero or missing
    rate: JSON has no infinity), and the two-proportion z-test's p-value (`drift_score`) and verdict. A rate is None
    where the group had no impressions in that window."""

    changes = {}
    for action in ENGAGEMENTS:
        ref, cur = summary["reference_mean"].get(grouped(action, group)), summary["mean"].get(grouped(action, group))
        test = summary["drift"].get(grouped(f"{action}_flag", group), {})
        changes[action] = {
            "reference_rate": ref,
            "current_rate": cur,
            "relative_change": (cur - ref) / ref if ref and cur is not None else None,
            "drift_score": test.get("score"),
            "drift_detected": bool(test.get("detected", False)),
            "method": test.get("method"),
            "threshold": test.get("threshold"),
        }
    return changes
