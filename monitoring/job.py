"""The monitoring job: one window of logged impressions against a reference window, as Evidently 0.7 snapshots.

Per window (a day by default) it writes one snapshot:

- engagement: repin, click and hide per impression (`MeanValue`), overall and for core and non-core users, each
  tested against the reference with a two-proportion z-test (`ValueDrift`; monitoring/drift_report.py says why);
- feature drift: the impressed and the engaged pins' interest distribution and the action mix
  (Jensen-Shannon distance), the realtime sequence length and the engaged pins' embedding on four principal axes
  (normed Wasserstein distance);
- prediction drift and model quality, with a ranking model: each head's score distribution (Wasserstein) and mean,
  and HIT@3 per head on the logged impressions (the mean of the `top3_*` columns, monitoring/window.py), overall
  and per group.

The snapshot is saved as HTML and JSON under `out_dir/<window end>/`, and added to the Evidently workspace's project
when a workspace is given (monitoring/dashboard.py); the returned summary is read back from the saved JSON, so the
summary, the JSON and the HTML cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Report
from evidently import Dataset as EvidentlyDataset
from evidently.metrics import MeanValue, ValueDrift

from components.data.dataset import Dataset
from monitoring.engagement import ENGAGEMENTS
from monitoring.window import EMBEDDING_AXES, HEADS, window_frame

DAY_MS = 86_400_000
GROUPS = ("all", "core", "non-core")
EMBEDDING = tuple(f"emb_pc{i + 1}" for i in range(EMBEDDING_AXES))
# Feature drift: distributions, each with the test that suits it and its threshold (a distance above it is drift).
CATEGORICAL_DRIFT = {"interest": 0.1, "engaged_interest": 0.1, "engaged_action": 0.1}  # Jensen-Shannon distance
NUMERIC_DRIFT = {"seq_len": 0.1, **dict.fromkeys(EMBEDDING, 0.1)}  # Wasserstein distance, normed by the reference std
SCORE_DRIFT = 0.1


@dataclass(frozen=True)
class Windows:
    """UTC epoch-ms bounds: reference [reference_start, current_start), current [current_start, end)."""

    reference_start: int
    current_start: int
    end: int

    @classmethod
    def ending(cls, end_ms: int, current_days: float = 1.0, reference_days: float = 7.0) -> Windows:
        if current_days <= 0 or reference_days <= 0:
            raise ValueError(f"current_days and reference_days must be positive, got {current_days}, {reference_days}")
        current_start = end_ms - round(current_days * DAY_MS)
        return cls(current_start - round(reference_days * DAY_MS), current_start, end_ms)

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
) -> dict:
    """Monitor one window: one Evidently snapshot (`<window end>/report.html` and `.json` under `out_dir`), added
    to the workspace's project when given (monitoring.dashboard.open_project), and the summary read back from it
    (also written as `summary.json` beside the report)."""
    reference = window_frame(dataset_dir, windows.reference_start, windows.current_start, model_dir, max_requests, seed)
    current = window_frame(dataset_dir, windows.current_start, windows.end, model_dir, max_requests, seed + 1)
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
                "impressions": len(reference),
            },
            "current": {"start_ms": windows.current_start, "end_ms": windows.end, "impressions": len(current)},
        },  # fmt: skip
        "dataset": str(dataset_dir),
        "model": None if model_dir is None else str(model_dir),
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


def dataset_end(dataset_dir: Path) -> int:
    """Just after the dataset's last event: where the latest window ends."""
    ts = Dataset(dataset_dir).read("events", columns=["ts"])["ts"]
    if ts.empty:
        raise ValueError(f"{dataset_dir} has no events")
    return int(ts.max()) + 1


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
                data[grouped(f"{column}_flag", group)] = values.map(lambda v: None if v != v else str(int(v)))
    data["interest"] = frame["interest"]
    data["engaged_interest"] = frame["interest"].where(frame["engaged_action"].notna())
    data["engaged_action"] = frame["engaged_action"]
    for column in NUMERIC_DRIFT:
        data[column] = frame[column].astype(float)
    if has_model:
        for head in HEADS:
            data[f"score_{head}"] = frame[f"score_{head}"]
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
