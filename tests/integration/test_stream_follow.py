"""`homefeed stream LOG --follow`: the stream processor as a long-lived Deployment reading an append-only log.

The reader tests pull from `follow_json_lines` in the test's own thread: at EOF it yields TICK instead of blocking, so
each `next` is one step of the reader and no test depends on how fast a thread runs.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore
from test_stream import _online, _store

from components.data.contracts import DeadLetter
from components.data.dataset import Dataset
from components.stream.checkpoint import Checkpoint
from components.stream.processor import DEAD_LETTER_SOURCE, StreamProcessor
from components.stream.sources import TICK, LogRotatedError, follow_json_lines, open_source, read_json_lines

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
USER = 999_999  # not in the tiny world: nothing online for it until the stream pushes
TS0 = 1_767_226_387_455


def _event(i: int, **changes) -> dict:
    return {"user_id": USER, "pin_id": 100 + i, "action": "repin", "ts": TS0 + i, "request_id": i,
            "surface": "homefeed"} | changes  # fmt: skip


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _until_tick(reader) -> list:
    """The records the reader yields before its next TICK: every complete line on disk when the step began."""
    out = []
    for item in reader:
        if item is TICK:
            return out
        out.append(item)
    raise AssertionError("the follow reader ended before it was stopped")


def _wait_until(condition, what: str, timeout: float = 30.0, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert alive(), f"the stream stopped before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_follow_reader_yields_appended_lines_holds_a_partial_line_ticks_and_stops(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text(_lines(_event(0)) + "\n" + _lines(_event(1)))  # a blank line: no record, no offset
    stop = threading.Event()
    reader = follow_json_lines(log, stop=stop, poll_ms=1)
    assert _until_tick(reader) == [(0, _event(0)), (1, _event(1))]
    assert [next(reader) for _ in range(3)] == [TICK] * 3  # idle: ticks, so time-based pushes still happen

    _append(log, _lines(_event(2), _event(3)))
    assert _until_tick(reader) == [(2, _event(2)), (3, _event(3))]

    line = json.dumps(_event(4))
    _append(log, line[:20])  # the writer is mid-append: parsing now would reject half an event as bad JSON
    assert _until_tick(reader) == []
    assert _until_tick(reader) == []
    _append(log, line[20:] + "\n{not json\n")
    got = _until_tick(reader)
    assert got[0] == (4, _event(4))
    assert got[1][0] == 5 and got[1][1]["_raw"] == "{not json" and "not valid JSON" in got[1][1]["_error"]

    # the same offsets and records as the plain JSON-lines reader, so a checkpoint from either resumes in the other
    with open(log, encoding="utf-8") as fh:
        assert list(read_json_lines(fh)) == [(0, _event(0)), (1, _event(1)), (2, _event(2)), (3, _event(3)), *got]

    _append(log, _lines(_event(6), _event(7)))
    assert next(reader) == (6, _event(6))
    stop.set()  # between two records: the reader ends at once; record 7 is read after the restart
    assert list(itertools.islice(reader, 3)) == []  # bounded: a reader that ignores stop fails, not hangs


def test_follow_reader_waits_for_a_log_that_does_not_exist_yet(tmp_path):
    log = tmp_path / "later" / "events.jsonl"
    reader = follow_json_lines(log, poll_ms=1)
    assert [next(reader) for _ in range(3)] == [TICK] * 3
    log.parent.mkdir()
    log.write_text(_lines(_event(0)))
    assert _until_tick(reader) == [(0, _event(0))]


def test_follow_resume_skips_exactly_the_records_before_the_checkpoint(tiny_world, tmp_path):
    """A checkpoint written by the plain reader (offset 4, one reject among them) resumes in follow mode; the
    records read after it are held, not pushed, until the stop flag ends the source, which pushes and checkpoints."""
    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    log, ckpt, dead = tmp_path / "events.jsonl", tmp_path / "ckpt.json", tmp_path / "dead"
    invalid = _event(1, action="like")
    log.write_text(_lines(_event(0), invalid, _event(2), _event(3)))
    first = StreamProcessor(store, ckpt, DeadLetter(dead))
    first.run_source(log)
    assert Checkpoint.load(ckpt).offset == 4

    _append(log, _lines(_event(4), _event(5, ts="late"), _event(6)))
    stop = threading.Event()
    # the exact records after the checkpoint, from the reader itself
    assert _until_tick(follow_json_lines(log, 4, poll_ms=1)) == [(4, _event(4)), (5, _event(5, ts="late")),
                                                                 (6, _event(6))]  # fmt: skip

    proc = StreamProcessor(store, ckpt, DeadLetter(dead), max_delay_ms=None)  # pushes at the end of source only
    assert proc.offset == 4
    runner = threading.Thread(target=proc.run, args=(open_source(log, proc.offset, follow=True, stop=stop, poll_ms=5),))
    runner.start()
    try:
        _wait_until(lambda: proc.offset == 7, "all 7 records were read", alive=runner.is_alive)
        assert _online(store, [USER])["seq_pin_ids"].tolist()[0] == [103, 102, 100]  # held, not yet pushed
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert Checkpoint.load(ckpt).offset == 7
    assert _online(store, [USER])["seq_pin_ids"].tolist()[0] == [106, 104, 103, 102, 100]
    counters = proc.metrics.summary()["counters"]
    assert counters["events_in"] == 7 and counters["invalid"] == 2 and counters["applied"] == 5
    assert [d["row"] for d in DeadLetter(dead).read(DEAD_LETTER_SOURCE)] == [1, 5]  # each reject once


@pytest.mark.parametrize("change", ["truncate", "replace", "remove"])
def test_follow_reader_fails_clearly_when_the_log_is_rotated(tmp_path, change):
    log = tmp_path / "events.jsonl"
    log.write_text(_lines(_event(0), _event(1)))
    reader = follow_json_lines(log, poll_ms=1)
    assert len(_until_tick(reader)) == 2
    if change == "truncate":
        log.write_text(_lines(_event(9)))  # shorter than what was read
    elif change == "replace":
        other = tmp_path / "new.jsonl"
        other.write_text(_lines(_event(0), _event(1), _event(2)))  # longer: only the file identity tells
        os.replace(other, log)
    else:
        log.unlink()
    reason = {"truncate": "shrank to", "replace": "replaced by another file", "remove": "removed or renamed"}[change]
    with pytest.raises(LogRotatedError, match=f"{log}.*{reason}"):
        _until_tick(reader)


def test_follow_reader_fails_clearly_when_the_log_is_shorter_than_the_checkpoint(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text(_lines(_event(0), _event(1)))
    with pytest.raises(LogRotatedError, match="holds 2 records but the checkpoint resumes at record 5"):
        _until_tick(follow_json_lines(log, 5, poll_ms=1))
    with pytest.raises(LogRotatedError, match="does not exist but the checkpoint resumes at record 5"):
        _until_tick(follow_json_lines(tmp_path / "gone.jsonl", 5, poll_ms=1))


def test_follow_of_stdin_or_parquet_is_a_usage_error(tiny_world, tmp_path):
    from click.testing import CliRunner

    from homefeed.cli import main

    _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    for source, reason in [("-", "stdin (-) cannot be followed"), ("events.parquet", "is a parquet file")]:
        result = CliRunner().invoke(main, ["stream", source, "--follow", "--features", str(tmp_path / "fs")])
        assert result.exit_code == 2 and reason in result.output, result.output


def test_follow_command_runs_until_sigterm_then_pushes_and_checkpoints(tiny_world, tmp_path):
    _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    reader = FeatureStore(repo_path=str(tmp_path / "fs"))  # a separate client, as a model server would be
    log, ckpt, dead = tmp_path / "logs" / "events.jsonl", tmp_path / "ckpt.json", tmp_path / "dead"
    cmd = [sys.executable, "-m", "homefeed.cli", "stream", str(log), "--follow", "--features", str(tmp_path / "fs"),
           "--checkpoint", str(ckpt), "--dead-letter", str(dead), "--max-delay-ms", "50", "--poll-ms", "20",
           "--summary", str(tmp_path / "summary.json")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    running = lambda: job.poll() is None  # noqa: E731
    # the invalid line before the last valid one: once the last is online, every line has been read
    lines = [_event(0), _event(1, action="like"), _event(2), _event(3)]

    def online() -> list | None:
        row = _online(reader, [USER]).iloc[0]
        return None if pd.isna(row["seq_len"]) else list(row["seq_pin_ids"])

    try:
        # the log appears only after the job waits for it, as when the loggers start after the processor
        _wait_until(lambda: "waiting for it to appear" in err.read_text(), "the job waits for the log", alive=running)
        log.parent.mkdir()
        for record in lines:
            _append(log, _lines(record))
        _wait_until(lambda: online() == [103, 102, 100], "the user's sequence is online", alive=running)
        job.send_signal(signal.SIGTERM)
        job.wait(30)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, err.read_text()
    assert Checkpoint.load(ckpt).offset == len(lines)
    dead_rows = DeadLetter(dead).read(DEAD_LETTER_SOURCE)
    assert [d["row"] for d in dead_rows] == [1]
    assert any(e["field"] == "action" and "invalid value" in e["reason"] for e in dead_rows[0]["errors"]), dead_rows
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counters"]["events_in"] == len(lines) and summary["counters"]["invalid"] == 1
    assert "stopped by SIGTERM" in out.read_text()
