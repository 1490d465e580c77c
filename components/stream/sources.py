"""Where events come from: a parquet or JSON-lines file, stdin (JSON lines), or an in-process queue.

Every source yields (offset, record) in order, offset counting records from 0, and can start at an offset, so the
processor's checkpoint (the offset of the next record to read) is enough to resume. Records are plain dicts, not yet
validated: validation happens in the processor so that every source's rejects reach the same dead letter. A JSON
line that does not parse is still yielded (as {"_raw": line}) so that it, too, is rejected with a reason rather
than lost.

A source that can block waiting for records (the in-process queue, a followed log) also yields `TICK` at regular
wall-time intervals: it carries no record and no offset, and lets the processor push what it holds when events arrive
too slowly to fill a batch (`StreamProcessor(max_delay_ms=...)`). Plain file sources never block and yield no ticks.

A followed log (`follow_json_lines`, `homefeed stream LOG --follow`) never ends by itself: it is read like `tail -f`
until its `stop` flag is set (by the CLI's SIGTERM handler), and then it ends like a file at EOF, so the processor's
normal end of source (push what it holds, checkpoint) is also its shutdown. Its offsets count non-blank lines exactly
as `read_json_lines` does, so a checkpoint written by either reader resumes in the other.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

import pyarrow.parquet as pq

Record = dict
END = None  # put on an EventQueue to end the stream
TICK: tuple[int, Record] = (-1, {})  # "time passed, nothing new": compared by identity, never advances an offset
_READ_BYTES = 1 << 20  # a followed log is read in pieces of this size, so a large backlog is not held in memory

log = logging.getLogger(__name__)


class LogRotatedError(RuntimeError):
    """A followed log was truncated, replaced or removed: its offsets no longer mean what the checkpoint says."""


def _json_record(line: str) -> Record:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"_raw": line.rstrip("\r\n"), "_error": f"not valid JSON: {exc.msg}"}
    return value if isinstance(value, dict) else {"_raw": line.rstrip("\r\n"), "_error": "not a JSON object"}


def read_json_lines(fh: TextIO, start: int = 0) -> Iterator[tuple[int, Record]]:
    """Non-blank lines of `fh`; the first `start` are skipped (on stdin they must be sent again after a restart)."""
    lines = (line for line in fh if line.strip())
    for offset, line in enumerate(lines):
        if offset >= start:
            yield offset, _json_record(line)


def read_parquet(path: Path, start: int = 0, batch_size: int = 4096) -> Iterator[tuple[int, Record]]:
    """Rows of a parquet file in file order, read batch by batch; batches wholly before `start` are not decoded."""
    offset = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        if offset + batch.num_rows <= start:
            offset += batch.num_rows
            continue
        for record in batch.to_pylist():
            if offset >= start:
                yield offset, record
            offset += 1


def open_source(
    spec: str | Path, start: int = 0, *, follow: bool = False, stop: threading.Event | None = None,
    poll_ms: float = 200.0,
) -> Iterator[tuple[int, Record]]:  # fmt: skip
    """`-` for stdin, a `.parquet` file, or any other file read as JSON lines; with `follow`, a JSON-lines log read
    like `tail -f` until `stop` is set (see `follow_json_lines`). Raises ValueError for a source that cannot be
    followed and FileNotFoundError for a missing file that is not followed."""
    if follow:
        if str(spec) == "-":
            raise ValueError("follow mode reads a growing JSON-lines file; stdin (-) cannot be followed")
        path = Path(spec)
        if path.suffix == ".parquet":
            raise ValueError(f"follow mode reads a growing JSON-lines file; {path} is a parquet file")
        if path.exists() and not path.is_file():
            raise ValueError(f"event log {path} is not a file")
        return follow_json_lines(path, start, stop=stop, poll_ms=poll_ms)
    if str(spec) == "-":
        return read_json_lines(sys.stdin, start)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"event source {path} is not a file")
    if path.suffix == ".parquet":
        return read_parquet(path, start)
    return _read_text(path, start)


def _read_text(path: Path, start: int) -> Iterator[tuple[int, Record]]:
    # newline="\n": only "\n" ends a line (JSON Lines' separator), as in `follow_json_lines`; universal newlines
    # would also split at a bare "\r" and count lines differently from the follow reader
    with open(path, encoding="utf-8", newline="\n") as fh:
        yield from read_json_lines(fh, start)


def follow_json_lines(
    path: Path, start: int = 0, *, stop: threading.Event | None = None, poll_ms: float = 200.0
) -> Iterator[tuple[int, Record]]:
    """(offset, record) of each complete line of the append-only log `path` as it appears, forever, until `stop`.

    A trailing line without its newline is held until the newline arrives (the writer may be mid-append). At EOF
    the reader sleeps `poll_ms` and yields `TICK`, and also yields one at least every `poll_ms` while lines flow.
    `stop` is checked after every yielded record and every poll; once set the reader returns, so every record it
    yielded has been handed to the consumer and the rest is read after a restart. It is only read with `is_set()`,
    never waited on, so a signal handler may set it without risking a deadlock on the Event's internal lock.

    Raises LogRotatedError when the log shrinks below the read position, is replaced by another file or removed
    (rotation is not supported: offsets count lines of one file), or is shorter than `start` when first read.
    """
    path, poll_s = Path(path), poll_ms / 1000
    stopped = stop.is_set if stop is not None else lambda: False
    fh = yield from _wait_for_log(path, start, stopped, poll_s)
    if fh is None:
        return
    with fh:
        identity = _identity(os.fstat(fh.fileno()))
        pos, pending, offset = 0, b"", 0
        length_checked = start == 0
        next_tick = time.monotonic() + poll_s
        while not stopped():
            data = fh.read(_READ_BYTES)
            if data:
                pos += len(data)
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    line, record = _line_record(raw)
                    if not line.strip():  # blank lines carry no record and no offset, as in read_json_lines
                        continue
                    if offset >= start:
                        yield offset, record
                        if stopped():
                            return
                    offset += 1
                if time.monotonic() >= next_tick:  # a steady trickle must not postpone time-based pushes
                    next_tick = time.monotonic() + poll_s
                    yield TICK
                continue
            if not length_checked:  # the checkpoint's records were read from this file: they must all be there
                held = offset + bool(_line_record(pending)[0].strip())  # the plain reader counts a partial last line
                if held < start:
                    raise LogRotatedError(
                        f"event log {path} holds {held} records but the checkpoint resumes at record {start}: the "
                        "log was truncated or replaced, which is not supported (the checkpoint's offsets count "
                        "lines of the old file)"
                    )
                length_checked = True
            next_tick = time.monotonic() + poll_s
            yield TICK
            if stopped():
                return
            time.sleep(poll_s)  # not stop.wait(): see the docstring
            _check_same_log(path, identity, pos)


def _wait_for_log(
    path: Path, start: int, stopped: Callable[[], bool], poll_s: float
) -> Generator[tuple[int, Record], None, BinaryIO | None]:
    """The open log, or None when stopped first; yields TICK while waiting.

    A missing log is waited for rather than an error: in a Deployment the loggers that create it may start after
    the processor, and exiting would only crash-loop the pod with growing back-off delays until they do. The wait is
    logged once, so a wrong path shows in the pod's log. With a checkpoint past record 0, though, the log existed
    and has since gone: that is rotation and an error."""
    announced = False
    while True:
        try:
            return open(path, "rb")
        except FileNotFoundError:
            if start > 0:
                raise LogRotatedError(
                    f"event log {path} does not exist but the checkpoint resumes at record {start}: the log was "
                    "removed or rotated, which is not supported"
                ) from None
        if not announced:
            log.warning("event log %s does not exist yet: waiting for it to appear", path)
            announced = True
        yield TICK
        if stopped():
            return None
        time.sleep(poll_s)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _check_same_log(path: Path, identity: tuple[int, int], pos: int) -> None:
    """Raise LogRotatedError unless `path` is still the file we opened and at least `pos` bytes long."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LogRotatedError(
            f"event log {path} was removed or renamed while being followed: log rotation is not supported"
        ) from None
    if _identity(st) != identity:
        raise LogRotatedError(
            f"event log {path} was replaced by another file while being followed: log rotation is not supported"
        )
    if st.st_size < pos:
        raise LogRotatedError(
            f"event log {path} shrank to {st.st_size} bytes, below the {pos} bytes already read: it was truncated, "
            "and log rotation is not supported"
        )


def _line_record(raw: bytes) -> tuple[str, Record]:
    """A line's text and its record. Invalid UTF-8 is rejected with that reason rather than decoded with
    replacement characters, which could turn a garbled line into a valid-looking event."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.decode("utf-8", errors="replace")
        return line, {"_raw": line.rstrip("\r"), "_error": f"not valid UTF-8 at byte {exc.start}"}
    return line, _json_record(line)


class EventQueue:
    """The embedded mode's source: a producer in the same process `put`s records, then `close`s.

    Offsets count records put since the queue was made; after a restart the producer is expected to put the same
    records again (as a replayed log would), and those before the checkpoint are skipped.
    """

    def __init__(self, maxsize: int = 0):
        self._queue: queue.Queue = queue.Queue(maxsize)

    def put(self, record: Record) -> None:
        self._queue.put(record)

    def close(self) -> None:
        self._queue.put(END)

    def read(self, start: int = 0, tick_ms: float = 50.0) -> Iterator[tuple[int, Record]]:
        """(offset, record) as they are put, and `TICK` at least every `tick_ms` of wall time, whether records are
        flowing or the queue is empty (a steady trickle must not postpone a time-based push indefinitely)."""
        tick_s = tick_ms / 1000
        next_tick = time.monotonic() + tick_s
        offset = 0
        while True:
            try:
                record = self._queue.get(timeout=max(next_tick - time.monotonic(), 0.0))
            except queue.Empty:
                record = TICK
            if record is END:
                return
            if record is not TICK:
                if offset >= start:
                    yield offset, record
                offset += 1
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + tick_s
                yield TICK
