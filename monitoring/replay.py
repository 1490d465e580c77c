"""The monitoring job over a run of days: what `homefeed monitor run --days N` does each day, and what the drift
scenarios replay (tests/integration/test_monitoring_scenarios.py).

For each window end, oldest first: the window against the days before it, one snapshot, and with a trigger policy
its decision. After a trigger the reference starts no earlier than the policy's reference floor (the start of the
window that triggered, monitoring/trigger.py), so the days before a change stop counting as normal once it has been
acted on. The dataset is read once (`Source`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from monitoring.job import Windows, run_window
from monitoring.trigger import TriggerPolicy, TriggerState, evaluate
from monitoring.window import Source

ModelChoice = Path | None | Callable[[], Path | None]


def monitor_days(
    source: Source,
    ends: list[int],
    root: Path,
    model: ModelChoice = None,
    policy: TriggerPolicy | None = None,
    submit: Callable[[dict], str] | None = None,
    workspace=None,
    reference_days: float = 7.0,
    max_requests: int | None = 2_000,
    not_before: int | None = None,
) -> list[dict]:
    """One entry per window end: {"label", "summary", "decision"} (decision None without a policy).

    Snapshots go to `root/reports/<window end>/`, the policy's state and log to `root`. `model` is the ranking model
    to score each window with, or a function asked before each window (a retraining in `submit` may replace the
    model that serves). `not_before`: no window starts earlier (the first event of a monitored log)."""
    days = []
    for end in ends:
        floor = TriggerState.load(root).reference_floor_ms if policy is not None else None
        floor = max((f for f in (floor, not_before) if f is not None), default=None)
        windows = Windows.ending(end, reference_days=reference_days, not_before=floor)
        current = model() if callable(model) else model
        summary = run_window(
            source.dataset_dir, windows, Path(root) / "reports", current, workspace, max_requests, source=source
        )
        decision = evaluate(summary, policy, root, submit) if policy is not None else None
        days.append({"label": windows.label, "summary": summary, "decision": decision})
    return days
