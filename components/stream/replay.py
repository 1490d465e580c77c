"""The features step's online sequences, filled through the stream path: the event log replayed by the stream
processor, then checked against the offline definition.

Replaying the log (rather than pushing `ActionLog` snapshots straight into the store) means every pipeline run
exercises the code that keeps sequences fresh in production: validation, per-user state, late events, batched
pushes, checkpoints. The parity check then compares what the online store holds for every user with the offline
snapshot the build wrote, cut by `ActionLog.sequences_at(user, cutoff)`, the function training data is cut with; a
mismatch fails the step, since a model would otherwise be served inputs it was never trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.contracts import DeadLetter
from components.features.store import USER_ACTION_SEQUENCE, online_user_features
from components.stream.processor import StreamProcessor
from components.stream.sources import Record, open_source

SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.json"
DEAD_LETTER = "dead_letter"
PARITY_BATCH = 1000  # users per online read
_COLUMNS = ("seq_pin_ids", "seq_actions", "seq_ts")


class ParityError(AssertionError):
    """The online store disagrees with the offline sequence definition."""


def _before(records: Iterator[tuple[int, Record]], cutoff: int) -> Iterator[tuple[int, Record]]:
    """Records of events strictly before the cut-off, offsets renumbered from 0 (the processor wants them
    contiguous). A record without a usable ts is passed through for the processor to reject with its reason."""
    offset = 0
    for _, record in records:
        ts = record.get("ts")
        if isinstance(ts, int) and ts >= cutoff:
            continue
        yield offset, record
        offset += 1


def replay_log(store, events_path: Path, cutoff: int, out_dir: Path, batch: int = 10_000) -> dict:
    """Stream the events before `cutoff` from `events_path` into `store`'s online sequences, from an empty state.

    `out_dir` receives the checkpoint, the dead letter and the job's JSON summary (also returned). A rerun in the
    same directory resumes from the checkpoint.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # no time-based pushes: a replay reads as fast as it can, so only the batch size should decide when to push
    proc = StreamProcessor(
        store, out_dir / CHECKPOINT, DeadLetter(out_dir / DEAD_LETTER), batch=batch, max_delay_ms=None
    )
    records = _before(open_source(events_path), cutoff)
    summary = proc.run(record for record in records if record[0] >= proc.offset)
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def check_parity(store, users: np.ndarray, snapshot: pa.Table | None = None) -> dict:
    """Compare every user's online sequence with the offline snapshot the build wrote at the cut-off (the
    `user_action_sequence` batch source, cut by `ActionLog.sequences_at`; a user it lacks has no actions), or with
    `snapshot` (`offline_sequences`); raise ParityError naming the first users that differ. Returns
    {"users": n, "mismatches": 0}."""
    users = np.asarray(users, dtype=np.int64)
    if snapshot is None:
        source = store.get_feature_view(USER_ACTION_SEQUENCE).batch_source.path
        snapshot = pq.read_table(Path(store.repo_path) / source, columns=["user_id", *_COLUMNS])
    snapshot = snapshot.select(["user_id", *_COLUMNS]).to_pydict()
    want = {u: tuple(snapshot[c][i] for c in _COLUMNS) for i, u in enumerate(snapshot["user_id"])}
    bad: list[int] = []
    for start in range(0, len(users), PARITY_BATCH):
        got = online_user_features(store, users[start : start + PARITY_BATCH].tolist())
        for row in got.itertuples(index=False):
            online = tuple(list(getattr(row, c) or []) for c in _COLUMNS)
            if online != want.get(int(row.user_id), ([], [], [])):
                bad.append(int(row.user_id))
    if bad:
        raise ParityError(f"{len(bad)} users' online sequences differ from the offline definition, e.g. {bad[:5]}")
    return {"users": len(users), "mismatches": 0}


def offline_sequences(dataset_dir: Path, users: np.ndarray, cutoff_ms: int) -> pa.Table:
    """The users' last-100 sequences before `cutoff_ms` by the offline definition, over a dataset's events (the
    offline event log as a dataset, components/stream/offline_log.py `to_dataset`): what `check_parity` compares a
    live online store with."""
    from components.data.dataset import Dataset
    from components.features.tables import sequence_table
    from components.train.examples import read_events

    _, log = read_events(Dataset(dataset_dir))
    return sequence_table(log, np.asarray(users, dtype=np.int64), cutoff_ms)
