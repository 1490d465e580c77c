"""The time split: one definition shared by the training, evaluation, gate and serving steps.

Retrieval trains on everything before the holdout, ranking on the last `ranking_days` before it, and both are
evaluated on the holdout (the last `holdout_days` of the dataset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from components.data.dataset import Dataset
from components.data.window import window_start
from components.data.world.config import DAY_MS


@dataclass(frozen=True)
class TimeSplit:
    """UTC epoch ms bounds: ranking trains on [ranking_start, train_end), retrieval on [.., train_end), both are
    evaluated on [train_end, end)."""

    ranking_start_ms: int
    train_end_ms: int
    end_ms: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TimeSplit:
        return cls(int(data["ranking_start_ms"]), int(data["train_end_ms"]), int(data["end_ms"]))

    @classmethod
    def of(cls, split: TimeSplit | dict) -> TimeSplit:
        """`split` as a TimeSplit: a step called with JSON (a RayJob's call.json) gets the dict form."""
        return cls.from_json(split) if isinstance(split, dict) else split


def time_split(dataset_dir: Path, holdout_days: float = 1.0, ranking_days: float = 3.0) -> TimeSplit:
    """The split of `dataset_dir` by event time; refuses a holdout or ranking window that leaves nothing to train."""
    if holdout_days <= 0 or ranking_days <= 0:
        raise ValueError(f"holdout_days and ranking_days must be positive, got {holdout_days}, {ranking_days}")
    ds = Dataset(dataset_dir)
    ts = ds.read("events", columns=["ts"])["ts"]
    if ts.empty:
        raise ValueError(f"{dataset_dir} has no events to split")
    # a window's context (the actions before it that its sequences are cut from) is not a day to split
    start, end = max(int(ts.min()), window_start(ds)), int(ts.max()) + 1
    train_end = end - round(holdout_days * DAY_MS)
    ranking_start = max(start, train_end - round(ranking_days * DAY_MS))
    if train_end <= start:
        span = (end - start) / DAY_MS
        raise ValueError(f"holdout_days={holdout_days} covers the whole dataset ({span:.2f} days of events)")
    return TimeSplit(ranking_start, train_end, end)
