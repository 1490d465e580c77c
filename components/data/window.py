"""A dataset cut to a window of its event log: what a retraining run trains and evaluates on.

Seed 003 retrains on fresh data because engagement decays with a stale model; the `homefeed_retraining` pipeline
therefore trains on the last `window_days` of events only. `end_days_ago` moves the window back in time, which is how
a past retraining is replayed on a recorded log (and how the tests step through the days of a simulated world).

The window keeps, besides its own events, each user's last 100 actions (click, repin, hide) from before it: the
*context* a realtime sequence at any time inside the window is cut from (`ActionLog.sequences_at`). Without it every
user's sequence would begin at the window's start: the examples would see shortened sequences the model never meets
at serving, and the features step, which replays the dataset into the online store, would overwrite the longer
sequences a live stream processor keeps there. Nothing is trained or counted on the context: retrieval's positives,
the time split, the feature tables' counters and the corpus's engagement start at the window (`window_start`), and
the manifest's `time_span_ms` is the window's own.

Pins, users and interests are kept whole: a pin created after the window's end has no events in it and is left out
of the serving corpus by its as-of rule (components/index/corpus.py), and the ID tables keep their numbering, so a
model trained on one window can be evaluated on another (the gate compares champion and challenger on the same
holdout). Files other than the event log (manifest aside) are copied as they are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.dataset import Dataset, write_table
from components.data.world.config import DAY_MS
from models.schema import SEQ_LEN, SEQUENCE_ACTIONS


def window_start(dataset: Dataset) -> int:
    """Where the dataset's window begins (epoch ms), 0 for a dataset that is not a window: events before it are
    context for the sequences, never examples."""
    return int(dataset.manifest().get("window", {}).get("start_ms", 0))


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
    inside = events.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
    context = _context(events.filter(pc.less(ts, lo)))
    kept = pa.concat_tables([context, inside])  # context is older than the window: the order stays (ts, request_id)

    shutil.copytree(
        src.root, out.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("events.parquet", "dataset.json")
    )
    write_table(out.path("events"), kept)  # already sorted by (ts, request_id): a filter keeps the order
    kept_ts = inside.column("ts")
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
            "context_events": context.num_rows,
        },
    }
    out.manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _context(before: pa.Table) -> pa.Table:
    """Each user's last SEQ_LEN sequence actions among `before` (events older than the window), in their order."""
    actions = before.filter(pc.is_in(before.column("action"), pa.array(SEQUENCE_ACTIONS)))
    if actions.num_rows == 0:
        return actions
    users = actions.column("user_id").to_numpy()
    # rank from each user's newest, in ActionLog's order of a user's actions: (ts, pin_id)
    order = np.lexsort((actions.column("pin_id").to_numpy(), actions.column("ts").to_numpy(), users))
    sorted_users = users[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_users)) + 1, len(sorted_users)]
    starts = np.r_[0, ends[:-1]]
    from_newest = np.repeat(ends, ends - starts) - 1 - np.arange(len(sorted_users))
    keep = np.zeros(len(users), dtype=bool)
    keep[order[from_newest < SEQ_LEN]] = True
    return actions.filter(pa.array(keep))
