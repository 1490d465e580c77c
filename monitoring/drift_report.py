"""Engagement drift: did the repin, click and hide rates of the latest window move away from the weeks before it?

Two windows, both ending at the newest event (`end` = last event ts + 1 ms, exclusive):
    current   = [end - current_days, end)
    reference = [end - current_days - reference_days, end - current_days)
Each window holds the impressions shown in it (see `monitoring.engagement`).

An Evidently 0.7 Report tests each action column with `ValueDrift` and shows its rate with `CategoryCount`; with
users, a `ValueDrift` on `segment` tells whether the traffic mix moved too (a mix shift moves the rates without any
user changing behaviour). The drift scores and detected flags in the returned dict are read back from the saved
Evidently JSON, so the dict, the JSON and the HTML cannot disagree.

Why the two-proportion z-test (`method="z"`, p < 0.05 means drift) and not Evidently's automatic choice: with more
than 1000 reference rows Evidently picks Jensen-Shannon distance (threshold 0.1) for a 0/1 column, and for a rare
event that distance barely moves: a 2.7% repin rate falling to zero is a JS distance of 0.097, "no drift". The
z-test asks the question we mean: is the current rate different from the reference rate, given the sample sizes?
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import CategoryCount, ValueDrift

from monitoring.engagement import ENGAGEMENTS, actions_without_impression, engagement_frame

DAY_MS = 86_400_000
HTML_NAME = "engagement_drift.html"
JSON_NAME = "engagement_drift.json"


def engagement_drift_report(
    events: pd.DataFrame,
    users: pd.DataFrame | None,
    out_dir: Path,
    reference_days: float = 7,
    current_days: float = 1,
    method: str | None = "z",
    threshold: float | None = None,
) -> dict:
    """Compare engagement rates of the last `current_days` against the `reference_days` before; write the report.

    Args:
        events: canonical events (user_id, pin_id, action, ts, request_id).
        users: canonical users (user_id, segment), or None to leave segments out.
        out_dir: gets `engagement_drift.html` and `engagement_drift.json` (Evidently's JSON export).
        method, threshold: Evidently stattest name and threshold; None lets Evidently choose (see module doc).

    Returns:
        {"html", "json": paths as str, "windows": {"reference"/"current": {start_ms, end_ms, impressions}},
         "actions": {action: {reference_rate, current_rate, relative_change, drift_score, drift_detected,
                              method, threshold}},
         "drift_detected": any action drifted, "segment_mix": {...} (with users),
         "actions_without_impression": {action: count}}
    """
    if reference_days <= 0 or current_days <= 0:
        raise ValueError(f"reference_days and current_days must be positive, got {reference_days}, {current_days}")
    frame = engagement_frame(events, users)
    reference, current, windows = split_windows(frame, int(events["ts"].max()) + 1, reference_days, current_days)
    columns = list(ENGAGEMENTS) + (["segment"] if "segment" in frame else [])
    report = Report(_metrics(columns, method, threshold), include_tests=True)
    snapshot = report.run(
        _dataset(current[columns]),
        _dataset(reference[columns]),
        timestamp=datetime.fromtimestamp(windows["current"]["end_ms"] / 1000, tz=UTC),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, json_path = out_dir / HTML_NAME, out_dir / JSON_NAME
    snapshot.save_html(str(html))
    snapshot.save_json(str(json_path))
    drift = read_drift(json.loads(json_path.read_text()))
    actions = {a: {**_rates(reference[a], current[a]), **drift[a]} for a in ENGAGEMENTS}
    summary = {
        "html": str(html),
        "json": str(json_path),
        "windows": windows,
        "actions": actions,
        "drift_detected": any(v["drift_detected"] for v in actions.values()),
        "actions_without_impression": actions_without_impression(events),
    }
    if "segment" in drift:
        summary["segment_mix"] = drift["segment"]
    return summary


def split_windows(
    frame: pd.DataFrame, end_ms: int, reference_days: float, current_days: float
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The reference and current rows of `frame` (by `ts`) and the windows' bounds; refuses an empty window."""
    current_start = end_ms - round(current_days * DAY_MS)
    reference_start = current_start - round(reference_days * DAY_MS)
    ts = frame["ts"]
    reference = frame[(ts >= reference_start) & (ts < current_start)]
    current = frame[(ts >= current_start) & (ts < end_ms)]
    for name, rows in (("reference", reference), ("current", current)):
        if rows.empty:
            span = (end_ms - int(ts.min())) / DAY_MS if len(ts) else 0.0
            raise ValueError(
                f"the {name} window has no impressions (reference_days={reference_days}, "
                f"current_days={current_days}; the impressions span {span:.2f} days before the last event)"
            )
    windows = {
        "reference": {"start_ms": reference_start, "end_ms": current_start, "impressions": len(reference)},
        "current": {"start_ms": current_start, "end_ms": end_ms, "impressions": len(current)},
    }
    return reference, current, windows


def read_drift(report_json: dict) -> dict[str, dict]:
    """Per column of each ValueDrift in an Evidently 0.7 JSON export: score, detected flag, method, threshold.

    The score is the metric's value (a p-value for "z"); the flag is the status of the drift test Evidently attached
    to that metric (FAIL means drift was detected).
    """
    status = {t["metric_config"]["metric_id"]: t["status"] for t in report_json["tests"] if t["id"] == "drift"}
    drift = {}
    for metric in report_json["metrics"]:
        config = metric["config"]
        if config["type"] != "evidently:metric_v2:ValueDrift":
            continue
        outcome = status.get(metric["id"])
        if outcome not in ("FAIL", "SUCCESS"):
            raise RuntimeError(f"Evidently's drift test for {config['column']!r} ended as {outcome!r}")
        drift[config["column"]] = {
            "drift_score": float(metric["value"]),
            "drift_detected": outcome == "FAIL",
            "method": config["method"],
            "threshold": float(config["threshold"]),
        }
    return drift


def _metrics(columns: list[str], method: str | None, threshold: float | None) -> list:
    metrics = []
    for action in ENGAGEMENTS:
        metrics.append(ValueDrift(column=action, method=method, threshold=threshold))
        # tests=[]: CategoryCount's default test compares counts, and a 1-day count never equals a 7-day one
        metrics.append(CategoryCount(column=action, category=1, tests=[]))
    if "segment" in columns:
        metrics.append(ValueDrift(column="segment"))
    return metrics


def _dataset(frame: pd.DataFrame) -> Dataset:
    # Categorical, because the z-test is registered for categorical columns only (it is a test of proportions).
    definition = DataDefinition(categorical_columns=list(frame.columns))
    return Dataset.from_pandas(frame.reset_index(drop=True), data_definition=definition)


def _rates(reference: pd.Series, current: pd.Series) -> dict:
    ref, cur = float(reference.mean()), float(current.mean())
    return {
        "reference_rate": ref,
        "current_rate": cur,
        # None rather than infinity: the dict is written as JSON, and a rate that starts at zero has no ratio
        "relative_change": (cur - ref) / ref if ref > 0 else None,
    }
