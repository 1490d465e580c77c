"""The Evidently workspace and the project dashboard the monitoring job's snapshots feed.

`open_project(path)` opens (or creates) a local Evidently workspace with the project PROJECT, whose dashboard is
created once, with one tab per question: is engagement moving (overall, and core against non-core users), are the
inputs drifting, are the model's predictions and quality moving. Every panel plots one value per snapshot over time,
selected by metric and column (monitoring/job.py names the per-group columns `<column>_core`, `<column>_noncore`).

`homefeed monitor ui` serves this workspace with Evidently's own UI (`evidently ui --workspace <path>`).
"""

from __future__ import annotations

from pathlib import Path

from evidently.sdk.models import PanelMetric
from evidently.sdk.panels import line_plot_panel
from evidently.ui.workspace import Workspace

from monitoring.engagement import ENGAGEMENTS
from monitoring.job import CATEGORICAL_DRIFT, NUMERIC_DRIFT, grouped
from monitoring.window import HEADS

PROJECT = "homefeed engagement"
DESCRIPTION = "Daily engagement, feature and prediction drift, and HIT@3 of the Homefeed models (monitoring/job.py)"


def open_project(path: Path):
    """(workspace, project): the local workspace at `path` and its PROJECT, created with its dashboard if new."""
    ws = Workspace.create(str(path))
    found = ws.search_project(PROJECT)
    if found:
        return ws, found[0]
    project = ws.create_project(PROJECT, description=DESCRIPTION)
    for tab, panel in _panels():
        project.dashboard.add_panel(panel, tab=tab)
    project.save()
    return ws, project


def _series(metric: str, column: str, legend: str | None = None) -> PanelMetric:
    return PanelMetric(legend=legend or column, metric=metric, metric_labels={"column": column})


def _panels() -> list[tuple[str, object]]:
    panels = [
        ("Engagement", line_plot_panel(
            "Engagement per impression",
            [_series("MeanValue", a) for a in ENGAGEMENTS],
            description="repin, click and hide rates of the day's impressions, all users",
        )),
    ]  # fmt: skip
    for action in ENGAGEMENTS:
        panels.append((
            "Engagement",
            line_plot_panel(
                f"{action} rate: core vs non-core users",
                [_series("MeanValue", grouped(action, g), legend=g) for g in ("core", "non-core")],
                size="half",
            ),
        ))  # fmt: skip
    panels.append((
        "Engagement",
        line_plot_panel(
            "Engagement drift (z-test p-value; below 0.05 is drift)",
            [_series("ValueDrift", f"{a}_flag", legend=a) for a in ENGAGEMENTS],
        ),
    ))  # fmt: skip
    panels.append((
        "Feature drift",
        line_plot_panel(
            "Interest distribution and action mix (Jensen-Shannon distance; above 0.1 is drift)",
            [_series("ValueDrift", c) for c in CATEGORICAL_DRIFT],
        ),
    ))  # fmt: skip
    panels.append((
        "Feature drift",
        line_plot_panel(
            "Sequence length and pin embedding (normed Wasserstein distance; above 0.1 is drift)",
            [_series("ValueDrift", c) for c in NUMERIC_DRIFT],
        ),
    ))  # fmt: skip
    panels.append(
        ("Feature drift", line_plot_panel("Mean realtime sequence length", [_series("MeanValue", "seq_len")]))
    )
    panels.append((
        "Model",
        line_plot_panel("HIT@3 on logged impressions", [_series("MeanValue", f"top3_{h}", legend=h) for h in HEADS]),
    ))  # fmt: skip
    panels.append((
        "Model",
        line_plot_panel(
            "HIT@3 repin: core vs non-core users",
            [_series("MeanValue", grouped("top3_repin", g), legend=g) for g in ("core", "non-core")],
            size="half",
        ),
    ))  # fmt: skip
    panels.append((
        "Model",
        line_plot_panel(
            "Prediction drift (normed Wasserstein distance of each head's scores)",
            [_series("ValueDrift", f"score_{h}", legend=h) for h in HEADS],
            size="half",
        ),
    ))  # fmt: skip
    panels.append((
        "Model",
        line_plot_panel("Mean predicted probability", [_series("MeanValue", f"score_{h}", legend=h) for h in HEADS]),
    ))  # fmt: skip
    panels.append((
        "Model",
        line_plot_panel(
            "Simulated world: repin probability of the model's top 3 against the whole slate (ground truth)",
            [_series("MeanValue", "sim_repin", legend="model's top 3"),
             _series("MeanValue", "sim_repin_slate", legend="whole slate (random order)")],
            description="only on a simulated world: the engagement the model's feed gets there (monitoring/window.py)",
        ),
    ))  # fmt: skip
    return panels
