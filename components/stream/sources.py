"""Where events come from: a parquet or JSON-lines file, stdin (JSON lines), or an in-process queue.

Every source yields (offset, record) in order, offset counting records from 0, and can start at an offset, so the
processor's checkpoint (the offset of the next record to read) is enough to resume. Records are plain dicts, not yet
validated: validation happens in the processor so that every source's rejects reach the same dead letter. A JSON
line that does not parse is still yielded (as {"_raw": line}) so that it, too, is rejected with a reason rather
than lost.

A source that can block waiting for records (the in-process queue) also yields `TICK` at regular wall-time
intervals: it carries no record and no offset, and lets the processor push what it holds when events arrive too
slowly to fill a batch (`StreamProcessor(max_delay_ms=...)`). File sources never block and yield no ticks.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pyarrow.parquet as pq

Record = dict
END = None  # put on an EventQueue to end the stream
TICK: tuple[int, Record] = (-1, {})  # "time passed, nothing new": compared by identity, never advances an offset


def _json_record(line: str) -> Record:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"_raw": line.rstrip("\n"), "_error": f"not valid JSON: {exc.msg}"}
    return value if isinstance(value, dict) else {"_raw": line.rstrip("\n"), "_error": "not a JSON object"}


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


def open_source(spec: str | Path, start: int = 0) -> Iterator[tuple[int, Record]]:
    """`-` for stdin, a `.parquet` file, or any other file read as JSON lines."""
    if str(spec) == "-":
        return read_json_lines(sys.stdin, start)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"event source {path} is not a file")
    if path.suffix == ".parquet":
        return read_parquet(path, start)
    return _read_text(path, start)


def _read_text(path: Path, start: int) -> Iterator[tuple[int, Record]]:
    with open(path, encoding="utf-8") as fh:
        yield from read_json_lines(fh, start)


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
