"""A Ray head node on this machine with its Jobs API: the running Ray cluster that `ray_backend=jobs` submits to
(pipelines/ray_backend.py), for tests and a laptop.

`ray start --head --block` in a process group of its own, every port it opens chosen free (so it never meets another
Ray instance on the machine, such as a step's local `ray.init()`), its session files under `temp_dir`. Stopping it
signals only its process and that group: `ray stop` would stop every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from components.cluster.launcher import free_ports

# the head's own ports; its workers take theirs from Ray's worker range (10002-19999), below the free ports handed out
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
              "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port")  # fmt: skip


def _ray() -> str:
    beside = Path(sys.executable).with_name("ray")  # the venv's console script
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise FileNotFoundError("the `ray` command is not installed (PyPI: ray[default])")
    return found


@contextlib.contextmanager
def ray_head(temp_dir: Path, num_cpus: int = 2, timeout_s: float = 120.0) -> Iterator[str]:
    """A Ray head node; yields its Jobs API address (http://127.0.0.1:PORT). Its log is `temp_dir/head.log`.
    `temp_dir` should be short: Ray's socket paths under it must fit in 107 bytes."""
    temp_dir = Path(temp_dir).resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    cmd = [_ray(), "start", "--head", "--block", "--disable-usage-stats", f"--num-cpus={num_cpus}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1",
           f"--temp-dir={temp_dir}", *(f"{flag}={port}" for flag, port in ports.items())]  # fmt: skip
    # the jobs' `python` is the one Ray runs with: the project's environment
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    log_path = temp_dir / "head.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield address
    finally:
        _stop_group(proc)


def _answers(address: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{address}/api/version", timeout=2).status_code == 200
    return False


def _stop_group(proc: subprocess.Popen, grace_s: float = 8.0) -> None:
    """SIGTERM to `ray start --block` alone (it then stops what it started, in its own order: about 4 s when idle; a
    SIGTERM to the whole group leaves it waiting for the full grace), then SIGKILL to whatever of its group is left:
    the head is thrown away with its temp dir, so nothing is lost by not waiting longer."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # raylet, GCS and workers left in the group
    proc.wait()
