"""Stopping a child process we started: politely first, then for certain."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; returns once the process has exited (reaped, no zombie)."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
