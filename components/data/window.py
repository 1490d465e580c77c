"""A dataset cut to a window of its event log: what a retraining run trains and evaluates on.

Seed 003 retrains on fresh data because engagement decays with a stale model; the `homefeed_retraining` pipeline
therefore trains on the last `window_days` of events only. `end_days_ago` moves the window back in time, which is how
a past retraining is replayed on a recorded log (and how the tests step through the days of a simulated world).

Pins, users and interests are kept whole: a pin created after the window's end has no events in it and is left out
of the serving corpus by its as-of rule (components/index/corpus.py), and the ID tables keep their numbering, so a
model trained on one window can be evaluated on another (the gate compares champion and challenger on the same
holdout). Files other than the event log (manifest aside) are copied as they are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc

from components.data.dataset import Dataset, write_table
from components.data.world.config import DAY_MS


def window_dataset(src_dir: Path, out_dir: Path, window_days: float, end_days_ago: float = 0.0) -> dict:
    """Copy `src_dir` to `out_dir` keeping the events in [end - end_days_ago - window_days, end - end_days_ago),
    where `end` is just after the last event. Returns the new manifest (its `window` says what was kept)."""
    if window_days <= 0 or end_days_ago < 0:
        raise ValueError(f"window_days must be > 0 and end_days_ago >= 0, got {window_days}, {end_days_ago}")
    src, out = Dataset(src_dir), Dataset(out_dir)
    manifest = src.manifest()
    events = src.read_arrow("events")
    if events.num_rows == 0:
        raise ValueError(f"{src_dir} has no events to window")
    end = int(pc.max(events.column("ts")).as_py()) + 1
    hi = end - round(end_days_ago * DAY_MS)
    lo = hi - round(window_days * DAY_MS)
    first = int(pc.min(events.column("ts")).as_py())
    if hi <= first:
        span = (end - first) / DAY_MS
        raise ValueError(f"end_days_ago={end_days_ago} is before the first event ({span:.2f} days of events)")
    ts = events.column("ts")
    kept = events.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))

    shutil.copytree(
        src.root, out.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("events.parquet", "dataset.json")
    )
    write_table(out.path("events"), kept)  # already sorted by (ts, request_id): a filter keeps the order
    kept_ts = kept.column("ts")
    manifest |= {
        "rows": {**manifest["rows"], "events": kept.num_rows},
        "time_span_ms": [int(pc.min(kept_ts).as_py() or 0), int(pc.max(kept_ts).as_py() or 0)],
        "window": {
            "source": str(src.root),
            "window_days": window_days,
            "end_days_ago": end_days_ago,
            "start_ms": lo,
            "end_ms": hi,
            "events_before": events.num_rows,
        },
    }
    out.manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
