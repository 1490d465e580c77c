"""The stream processor: consume -> validate -> update per-user state -> push changed sequences -> checkpoint.

Records are validated in chunks against the EVENT contract (rejects go to the dead letter with their reasons), valid
events update `SequenceState`, and every `batch` events the sequences of the users that changed are pushed to the
Feast online store with `push_sequences`, in the columns `tables.sequence_table` builds (the same function the batch
store is built with, fed from the state instead of an `ActionLog`). Each successful push is followed by a checkpoint.

Crash recovery: a push carries each changed user's whole sequence, not a delta, so the online value of a user is the
state at that user's last push. After a crash the processor restarts from the last checkpoint (state S_c at offset
o_c) and replays the records from o_c; the state evolves deterministically from S_c, so every user changed after o_c
is pushed again, ending at the same final state as an uninterrupted run, and users not changed after o_c already hold
their final value. Pushes the crashed run made after the checkpoint are overwritten. The dead letter is truncated to
its size at the checkpoint, so replayed rejects are not written twice.

When to push: after at least `batch` events since the last push, or as soon as the oldest event read since then has
waited `max_delay_ms`, whichever comes first, so that at a low event rate a change still reaches the online store
within about max_delay_ms (plus the push itself), and every event, an impression that changes no sequence included,
reaches the offline log and is acknowledged to the bus as soon (a day's last impressions once waited for the next
action or the 1000th event, which on a quiet bus may not come). The time rule is checked
after every chunk and on every `TICK` a blocking source (the in-process queue) yields while it waits. Pushing
earlier never changes the final online state, only how many pushes it takes.

Freshness (components/stream/metrics.py): each chunk's read time is kept until the push that carries its changes
returns; the difference, for every event of the chunk that changed a sequence, is the processor's contribution to
the event's freshness (arrival at the processor -> Feast write returned).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd

from components.data.contracts import EVENT, DeadLetter, Reject, validate
from components.features.sequence import SEQ_LEN
from components.features.store import online_sequences, push_sequences, sequence_views
from components.features.tables import sequence_table
from components.stream.checkpoint import Checkpoint
from components.stream.metrics import StreamMetrics
from components.stream.offline_log import OfflineEventLog
from components.stream.sources import TICK, Record, open_source
from components.stream.state import Outcome, SequenceState
from models.schema import SEQUENCE_ACTIONS

SEED_BATCH = 500  # users per online read when seeding
DEAD_LETTER_SOURCE = "stream_events"  # the dead letter's file: <dir>/stream_events.jsonl
_OUTCOME_COUNTER = {Outcome.IGNORED: "ignored", Outcome.DUPLICATE: "duplicates", Outcome.TOO_OLD: "too_old"}
_APPLIED, _LATE = Outcome.APPLIED, Outcome.LATE


class StreamProcessor:
    """Keeps each user's last `max_len` actions and pushes changed ones to `store`.

    Args:
        store: a Feast FeatureStore with the `user_action_sequence_push` source (components/features/store.py).
        checkpoint: where progress is saved after each push; None runs without checkpoints.
        dead_letter: where rejected records go; None keeps them in `self.rejects` only (tests, embedded use).
        batch: push after at least this many events since the last push (and at the end).
        max_len: sequence length.
        max_delay_ms: push when the oldest event not yet pushed was read this long ago, even if fewer than `batch`
            events arrived; None pushes on `batch` (and at the end) only.
        offline_log: where every valid event is also appended, at each push (components/stream/offline_log.py).
        initial_state: a checkpoint whose state (not offset) a processor without a checkpoint of its own starts from:
            the features step's replay (`<features>/stream/checkpoint.json`) for a processor on the live bus.

    Example:
        >>> proc = StreamProcessor(store, Path("ckpt.json"), DeadLetter(Path("dead")), batch=1000)
        >>> summary = proc.run(open_source("events.parquet", proc.offset))
    """

    def __init__(self, store, checkpoint: Path | None = None, dead_letter: DeadLetter | None = None,
                 batch: int = 1000, max_len: int = SEQ_LEN, max_delay_ms: float | None = 500.0,
                 offline_log: OfflineEventLog | None = None, initial_state: Path | None = None):  # fmt: skip
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if max_delay_ms is not None and max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        self.store, self.checkpoint_path, self.dead_letter = store, checkpoint, dead_letter
        self.views = sequence_views(store)  # resolved once: see push_sequences
        self.batch, self.chunk = batch, min(batch, 512)
        self.max_delay_s = None if max_delay_ms is None else max_delay_ms / 1000
        self.state = SequenceState(max_len=max_len)
        self.metrics = StreamMetrics()
        self.offset = 0  # the next record to read
        self.changed: set[int] = set()
        self.rejects: list[Reject] = []
        # (read time, events that changed a sequence) of each chunk read since the last push; monotonic seconds
        self._pending: list[tuple[float, int]] = []
        self._unflushed_since: float | None = None  # when the oldest event read since the last flush was read
        self._commit: Callable[[int], None] | None = None
        self._position: Callable[[int], dict] | None = None
        self.source_position: dict = {}  # the checkpoint's record of the source's position (Checkpoint.source)
        self.offline_log = offline_log
        self._resume(initial_state)
        # Users whose state already starts from what the online store holds (the checkpoint's or the replay's); any
        # other user's online sequence is merged in before their first event is applied (`_seed`).
        self.known: set[int] = set(self.state.users)
        self._logged_to = self.offset  # the offline log holds the events before this offset

    def _dead_letter_file(self) -> Path | None:
        return None if self.dead_letter is None else self.dead_letter.directory / f"{DEAD_LETTER_SOURCE}.jsonl"

    def _resume(self, initial_state: Path | None) -> None:
        ckpt = Checkpoint.load(self.checkpoint_path) if self.checkpoint_path else None
        if ckpt is None:
            # A first start on a live source: every user's sequence as the features step's replay left it (the
            # online store holds exactly that), read from offset 0 of this source. Without it, a user's first push
            # would replace their history with their live actions alone.
            seed = Checkpoint.load(initial_state) if initial_state is not None else None
            if seed is not None:
                self.state = SequenceState.from_json(seed.state)
            return
        self.offset, self.source_position = ckpt.offset, ckpt.source
        if self.offline_log is not None:  # parts written after the checkpoint: the replay writes them again
            self.offline_log.discard_from(ckpt.offset)
        self.state = SequenceState.from_json(ckpt.state)
        self.metrics.restore(ckpt.metrics)
        path = self._dead_letter_file()
        if path is not None and path.exists():  # drop rejects written after the checkpoint: the replay rewrites them
            with open(path, "r+b") as fh:
                fh.truncate(ckpt.dead_letter_bytes)

    def run(self, records: Iterable[tuple[int, Record]], commit: Callable[[int], None] | None = None,
            position: Callable[[int], dict] | None = None) -> dict:  # fmt: skip
        """Consume `records` (offset, record) to their end; returns the JSON summary. `commit(offset)` is called
        after every checkpoint with the offset of the next record to read: a source that acknowledges what it
        delivered (the Redis bus) acknowledges everything before it. `position(offset)`: the source's own position
        at that offset, saved in each checkpoint (`source_position` after a restart)."""
        self._commit, self._position = commit, position
        for read_at, chunk in _chunks(records, self.chunk):
            if chunk:
                self._consume(chunk, read_at)
            if self.metrics.unpushed >= self.batch or self._overdue():
                self.flush()
        self.flush()
        return self.metrics.summary()

    def run_source(self, spec: str | Path) -> dict:
        """`run` on a file path or `-` (stdin), starting where the checkpoint left off."""
        return self.run(open_source(spec, self.offset))

    def _overdue(self) -> bool:
        """The oldest event not yet flushed was read at least max_delay ago."""
        return (
            self.max_delay_s is not None
            and self._unflushed_since is not None
            and time.monotonic() - self._unflushed_since >= self.max_delay_s
        )

    def _consume(self, chunk: list[tuple[int, Record]], read_at: float) -> None:
        first = chunk[0][0]
        if [o for o, _ in chunk] != list(range(first, first + len(chunk))):
            raise ValueError(f"source offsets are not contiguous from {first}")
        if self._unflushed_since is None:
            self._unflushed_since = read_at
        frame = pd.DataFrame([r for _, r in chunk], columns=_columns(chunk))
        result = validate(frame, EVENT, row_offset=first)
        self._reject(result.rejects)
        if self.offline_log is not None:
            self.offline_log.hold(result.valid)
        valid = result.valid.to_pydict()
        newest = max(valid["ts"], default=0)
        self.metrics.read(len(chunk), newest)
        acting = {u for u, a in zip(valid["user_id"], valid["action"], strict=True) if a in SEQUENCE_ACTIONS}
        seeded = self._seed(sorted(acting - self.known))  # before their events: duplicates are told apart as usual
        add, changed = self.state.add, self.changed
        applied = late = 0
        other = dict.fromkeys(_OUTCOME_COUNTER, 0)
        for user, pin, action, ts, request in zip(
            valid["user_id"], valid["pin_id"], valid["action"], valid["ts"], valid["request_id"], strict=True
        ):
            outcome = add(user, pin, action, ts, request)
            if outcome in (_APPLIED, _LATE):
                changed.add(user)
                applied += 1
                if outcome == _LATE:
                    late += 1
            else:
                other[outcome] += 1
        # once per chunk, not per event: see metrics.py
        self.metrics.add(
            {"invalid": result.n_rejected, "applied": applied, "late": late, "seeded": seeded}
            | {_OUTCOME_COUNTER[o]: n for o, n in other.items()}
        )
        if applied:
            self._pending.append((read_at, applied))
        self.offset = chunk[-1][0] + 1

    def _reject(self, rejects: list[Reject]) -> None:
        for rej in rejects:  # a line that was not JSON: say so first, then the missing fields
            if "_error" in rej.record:
                rej.errors.insert(0, {"field": "_record", "reason": str(rej.record["_error"])})
        self.rejects.extend(rejects)
        if self.dead_letter is not None:
            self.dead_letter.write(DEAD_LETTER_SOURCE, rejects)

    def flush(self) -> None:
        """Push the changed users' sequences, then checkpoint (in that order: see the module docstring)."""
        if self.changed:
            users = sorted(self.changed)
            # stamped just after the newest event read, like a batch store built at that cut-off, or after the newest
            # action held (a replay from the start of a log seeds sequences newer than what it has read)
            held = self.state.users
            cut = max([self.metrics.newest_read_ts, *(held[u][-1][0] for u in users if held.get(u))]) + 1
            table = sequence_table(self.state, users, cut, self.state.max_len)
            start = time.monotonic()
            push_sequences(self.store, table, batch=max(len(users), 1), views=self.views)
            done = time.monotonic()  # the push returned: every pending change is visible online from here on
            self.metrics.pushed(len(users), done - start)
            self.metrics.fresh([done - t for t, _ in self._pending], [n for _, n in self._pending])
            self._pending.clear()
            self.changed.clear()
        else:
            self.metrics.unpushed = 0
            self.metrics.newest_pushed_ts = self.metrics.newest_read_ts
        self._unflushed_since = None
        if self.offline_log is not None:  # before the checkpoint: see components/stream/offline_log.py
            self.offline_log.write(self._logged_to, self.offset)
            self._logged_to = self.offset
        if self.checkpoint_path is not None:
            self._checkpoint()
        if self._commit is not None:  # after the checkpoint: what is acknowledged must survive a restart
            self._commit(self.offset)

    def _seed(self, users: list[int]) -> int:
        """Merge each user's online sequence into their state before their first event: without it, a processor with
        neither a checkpoint nor the replay (a cluster's first start, a user the replay did not have) would replace
        their history with the live actions alone. Returns how many entries were seeded."""
        added = 0
        for start in range(0, len(users), SEED_BATCH):
            part = users[start : start + SEED_BATCH]
            online = online_sequences(self.store, part)
            added += sum(self.state.seed(u, online.get(u, [])) for u in part)
            self.known.update(part)
        return added

    def _checkpoint(self) -> None:
        path = self._dead_letter_file()
        size = path.stat().st_size if path is not None and path.exists() else 0
        if self._position is not None:
            self.source_position = self._position(self.offset)
        Checkpoint(self.offset, self.state.to_json(), self.metrics.to_json(), size, self.source_position).save(
            self.checkpoint_path
        )


def _columns(chunk: list[tuple[int, Record]]) -> list[str]:
    """The contract's columns first (present even when every record lacks one, so it is rejected per row as
    missing rather than failing the whole chunk), then any others the records carry (kept in the dead letter)."""
    names = EVENT.names()
    extra = sorted({k for _, r in chunk for k in r} - set(names))
    return names + extra


def _chunks(records: Iterable[tuple[int, Record]], size: int) -> Iterator[tuple[float, list[tuple[int, Record]]]]:
    """(read time, up to `size` records): the read time is when the chunk's first record was read (monotonic
    seconds), so a record that waited in a partial chunk counts that wait. A `TICK` ends the partial chunk (and
    yields an empty one when there is none), so the caller can check the time-based push while the source waits."""
    chunk: list[tuple[int, Record]] = []
    read_at = 0.0
    for item in records:
        if item is TICK:
            yield (read_at if chunk else time.monotonic()), chunk
            chunk = []
            continue
        if not chunk:
            read_at = time.monotonic()
        chunk.append(item)
        if len(chunk) >= size:
            yield read_at, chunk
            chunk = []
    if chunk:
        yield read_at, chunk
