"""The monitoring job: one window of logged impressions against a reference window, as Evidently 0.7 snapshots.

Per window (a day by default) it writes one snapshot:

- engagement: repin, click and hide per impression (`MeanValue`), overall and for core and non-core users, each
  tested against the reference with a two-proportion z-test (`ValueDrift`; see below);
- feature drift: the impressed and the engaged pins' interest distribution and the action mix
  (Jensen-Shannon distance), the realtime sequence length and the engaged pins' embedding on four principal axes
  (normed Wasserstein distance);
- prediction drift and model quality, with a ranking model: each head's score distribution (Wasserstein) and mean,
  and HIT@3 per head on the logged impressions (the mean of the `top3_*` columns, monitoring/window.py), overall
  and per group.

The snapshot is saved as HTML and JSON under `out_dir/<window end>/`, and added to the Evidently workspace's project
when a workspace is given (monitoring/dashboard.py); the returned summary is read back from the saved JSON, so the
summary, the JSON and the HTML cannot disagree.

Why the two-proportion z-test (`method="z"`, p < 0.05 means drift) for the engagement flags and not Evidently's
automatic choice: with more than 1000 reference rows Evidently picks Jensen-Shannon distance (threshold 0.1) for a
0/1 column, and for a rare event that distance barely moves: a 2.7% repin rate falling to zero is a JS distance of
0.097, "no drift". The z-test asks the question we mean: is the current rate different from the reference rate,
given the sample sizes? It treats impressions as independent, which those of one request or user are not, so it
reports p < 0.05 on quiet days too: the trigger policy reads relative changes instead (monitoring/trigger.py).
Evidently registers the z-test for categorical columns only (a test of proportions), hence the `<column>_flag` twins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from evidently import DataDefinition, Report
from evidently import Dataset as EvidentlyDataset
from evidently.metrics import MeanValue, ValueDrift

from monitoring.engagement import ENGAGEMENTS
from monitoring.window import EMBEDDING_AXES, HEADS, Source, window_frame

DAY_MS = 86_400_000
GROUPS = ("all", "core", "non-core")
EMBEDDING = tuple(f"emb_pc{i + 1}" for i in range(EMBEDDING_AXES))
# Feature drift: distributions, each with the test that suits it and its threshold (a distance above it is drift).
CATEGORICAL_DRIFT = {"interest": 0.1, "engaged_interest": 0.1, "engaged_action": 0.1}  # Jensen-Shannon distance
NUMERIC_DRIFT = {"seq_len": 0.1, **dict.fromkeys(EMBEDDING, 0.1)}  # Wasserstein distance, normed by the reference std
SCORE_DRIFT = 0.1
# On a simulated world with a model: the engagement of the model's top 3 and of the whole slate in the world's truth
SIMULATED = (*(f"sim_{h}" for h in HEADS), "sim_repin_slate", "sim_hide_slate")
# Rows per window the report reads: a sample of whole requests beyond it (monitoring/window.py). 200k impressions
# put a 3% rate's standard error near 1.5% of itself (more where requests cluster), far inside the 14% day-to-day
# movement the default trigger rules allow for (monitoring/trigger.py).
MAX_IMPRESSIONS = 200_000


@dataclass(frozen=True)
class Windows:
    """UTC epoch-ms bounds: reference [reference_start, current_start), current [current_start, end)."""

    reference_start: int
    current_start: int
    end: int

    @classmethod
    def ending(
        cls, end_ms: int, current_days: float = 1.0, reference_days: float = 7.0, not_before: int | None = None
    ) -> Windows:
        """The current window of `current_days` ending at `end_ms` and the `reference_days` before it; the reference
        starts no earlier than `not_before` (the trigger policy's reference floor, monitoring/trigger.py) unless
        that would leave it empty."""
        if current_days <= 0 or reference_days <= 0:
            raise ValueError(f"current_days and reference_days must be positive, got {current_days}, {reference_days}")
        current_start = end_ms - round(current_days * DAY_MS)
        reference_start = current_start - round(reference_days * DAY_MS)
        if not_before is not None and not_before < current_start:
            reference_start = max(reference_start, not_before)
        return cls(reference_start, current_start, end_ms)

    @property
    def label(self) -> str:
        return datetime.fromtimestamp(self.end / 1000, tz=UTC).strftime("%Y-%m-%dT%H%M")


def run_window(
    dataset_dir: Path,
    windows: Windows,
    out_dir: Path,
    model_dir: Path | None = None,
    workspace=None,
    max_requests: int | None = 2_000,
    seed: int = 0,
    max_impressions: int | None = MAX_IMPRESSIONS,
    source: Source | None = None,
) -> dict:
    """Monitor one window: one Evidently snapshot (`<window end>/report.html` and `.json` under `out_dir`), added
    to the workspace's project when given (monitoring.dashboard.open_project), and the summary read back from it
    (also written as `summary.json` beside the report)."""
    source = source or Source.load(dataset_dir)
    reference = window_frame(
        source, windows.reference_start, windows.current_start, model_dir, max_requests, seed, max_impressions
    )
    current = window_frame(
        source, windows.current_start, windows.end, model_dir, max_requests, seed + 1, max_impressions
    )
    has_model = model_dir is not None
    cur, ref = _columns(current, has_model), _columns(reference, has_model)
    snapshot = Report(_metrics(cur, has_model), include_tests=True).run(
        _dataset(cur),
        _dataset(ref),
        timestamp=datetime.fromtimestamp(windows.end / 1000, tz=UTC),
        tags=["homefeed-monitoring"],
        metadata={"window_end": windows.label},
        name=f"window {windows.label}",
    )
    folder = Path(out_dir) / windows.label
    folder.mkdir(parents=True, exist_ok=True)
    html, js = folder / "report.html", folder / "report.json"
    snapshot.save_html(str(html))
    snapshot.save_json(str(js))
    values = read_values(json.loads(js.read_text()))
    summary = {
        "windows": {
            "reference": {
                "start_ms": windows.reference_start,
                "end_ms": windows.current_start,
                **_counts(reference),
            },
            "current": {"start_ms": windows.current_start, "end_ms": windows.end, **_counts(current)},
        },  # fmt: skip
        "dataset": str(dataset_dir),
        "model": None if model_dir is None else str(model_dir),
        "model_trained_until_ms": _trained_until(model_dir),
        "html": str(html),
        "json": str(js),
        "snapshot_id": None,
        **values,
        # the same columns' means over the reference window: what a relative change is measured from
        "reference_mean": {c: _number(ref[c].mean()) for c in values["mean"]},
        "impressions_by_group": {g: int((current["group"] == g).sum()) for g in GROUPS[1:]},
    }
    if workspace is not None:
        ws, project = workspace
        summary["snapshot_id"] = str(ws.add_run(project.id, snapshot).id)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def read_values(report_json: dict) -> dict:
    """From an Evidently JSON export: each MeanValue as `mean[column]`, each ValueDrift as `drift[column]` with
    its score, method, threshold and whether the drift test failed (= drift detected)."""
    status = {t["metric_config"]["metric_id"]: t["status"] for t in report_json["tests"] if t["id"] == "drift"}
    means, drift = {}, {}
    for metric in report_json["metrics"]:
        config = metric["config"]
        kind, column = config["type"].rsplit(":", 1)[-1], config.get("column")
        if kind == "MeanValue":
            means[column] = _number(metric["value"])
        elif kind == "ValueDrift":
            drift[column] = {
                "score": _number(metric["value"]),
                "detected": status.get(metric["id"]) == "FAIL",
                "method": config["method"],
                "threshold": float(config["threshold"]),
            }
    return {"mean": means, "drift": drift}


def _trained_until(model_dir: Path | None) -> int | None:
    """The end of the ranking model's training window (its train_metrics.json), None when it does not say."""
    path = None if model_dir is None else Path(model_dir) / "train_metrics.json"
    if path is None or not path.exists():
        return None
    window = json.loads(path.read_text()).get("window_ms")
    return int(window[1]) if window else None


def _counts(frame: pd.DataFrame) -> dict:
    """The window's impressions, and how many of them (whole requests) the report read."""
    return {"impressions": frame.attrs["impressions"], "rows": len(frame)}


def grouped(column: str, group: str) -> str:
    """The name of `column` restricted to `group`'s impressions (NaN on the others): "repin" -> "repin_core"."""
    return column if group == "all" else f"{column}_{group.replace('-', '')}"


def _columns(frame: pd.DataFrame, has_model: bool) -> pd.DataFrame:
    """The window's columns as the report reads them. Per-group figures are columns of their own, NaN outside
    the group (MeanValue and the drift tests skip NaN): one snapshot then holds every group, and the dashboard can
    plot core against non-core (Evidently 0.7's local workspace tells series apart by metric and column only).
    Each engagement column also has a categorical twin `<column>_flag` for the z-test, which Evidently registers
    for categorical columns only."""
    data = pd.DataFrame(index=frame.index)
    watched = list(ENGAGEMENTS) + ([f"top3_{h}" for h in HEADS] if has_model else [])
    for group in GROUPS:
        inside = frame["group"] == group if group != "all" else pd.Series(True, index=frame.index)
        for column in watched:
            values = frame[column].astype(float).where(inside)
            data[grouped(column, group)] = values
            if column in ENGAGEMENTS:
                flag = np.where(values.isna(), None, np.where(values.to_numpy() == 1, "1", "0"))
                data[grouped(f"{column}_flag", group)] = flag
    data["interest"] = frame["interest"]
    data["engaged_interest"] = frame["interest"].where(frame["engaged_action"].notna())
    data["engaged_action"] = frame["engaged_action"]
    for column in NUMERIC_DRIFT:
        data[column] = frame[column].astype(float)
    if has_model:
        for head in HEADS:
            data[f"score_{head}"] = frame[f"score_{head}"]
    for column in SIMULATED:
        if column in frame:  # a simulated world's ground truth (monitoring/window.py)
            data[column] = frame[column].astype(float)
    return data


def _metrics(data: pd.DataFrame, has_model: bool) -> list:
    metrics: list = []
    for group in GROUPS:
        for action in ENGAGEMENTS:
            metrics.append(MeanValue(column=grouped(action, group), tests=[]))  # tests=[]: no default test
            metrics.append(ValueDrift(column=grouped(f"{action}_flag", group), method="z"))
        if has_model:
            metrics += [MeanValue(column=grouped(f"top3_{h}", group), tests=[]) for h in HEADS]
    metrics += [ValueDrift(column=c, method="jensenshannon", threshold=t) for c, t in CATEGORICAL_DRIFT.items()]
    metrics += [ValueDrift(column=c, method="wasserstein", threshold=t) for c, t in NUMERIC_DRIFT.items()]
    metrics.append(MeanValue(column="seq_len", tests=[]))
    if has_model:
        for head in HEADS:
            metrics.append(MeanValue(column=f"score_{head}", tests=[]))
            metrics.append(ValueDrift(column=f"score_{head}", method="wasserstein", threshold=SCORE_DRIFT))
    metrics += [MeanValue(column=c, tests=[]) for c in SIMULATED if c in data]
    return metrics


def _dataset(data: pd.DataFrame) -> EvidentlyDataset:
    categorical = [c for c in data.columns if c.endswith("_flag") or "_flag_" in c or c in CATEGORICAL_DRIFT]
    numerical = [c for c in data.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    return EvidentlyDataset.from_pandas(data.reset_index(drop=True), data_definition=definition)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN (an empty column's mean) as None: JSON has no NaN
