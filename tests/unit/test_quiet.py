"""components.features.repo.quiet from several threads at once (the stream processors of several shards push in
parallel): the process' stdout must come back as it was."""

from __future__ import annotations

import sys
import threading

import pytest

from components.features.repo import quiet

pytestmark = pytest.mark.unit


def test_overlapping_quiet_blocks_in_threads_restore_the_processs_stdout():
    before = sys.stdout, sys.stderr
    a_inside, a_left, b_inside, b_done = (threading.Event() for _ in range(4))

    def a() -> None:
        with quiet("a"):
            a_inside.set()
            b_inside.wait(0.5)  # without one redirect at a time, b is inside by now, and a leaves first
        a_left.set()

    def b() -> None:
        a_inside.wait(5)
        with quiet("b"):
            b_inside.set()
            a_left.wait(5)  # ... and b after it, restoring the stdout a had replaced
        b_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert b_done.is_set()
    assert (sys.stdout, sys.stderr) == before
