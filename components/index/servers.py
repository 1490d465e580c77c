"""Milvus servers on this machine, for tests, benchmarks and a laptop run of the cluster path. Both yield the uri
every index function takes (`http://127.0.0.1:PORT`) and are stopped, with everything they started, on exit.

- `local_milvus`: `milvus-lite server` (PyPI `milvus-lite`), Milvus Lite behind a gRPC port. Starts in about a
  second; one process, no etcd.
- `milvus_standalone`: the Milvus standalone server (PyPI `milvus==2.3.5`, its `milvus-server` command): the server a
  cluster runs, with its embedded etcd, query and index nodes in one process. Starts in about 10 s here. It is
  older than the Milvus the cluster manifests name (2.3 against 2.4+), which matters where a newer feature is used;
  this project uses none (collections, aliases, partition key, HNSW, scalar filters).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pymilvus import MilvusClient

from components.cluster.launcher import free_ports
from components.cluster.process import stop


def _wait(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float, log: Callable[[], str]):
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s:\n{log()[-2000:]}")
        time.sleep(0.2)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def local_milvus(data_dir: Path, timeout_s: float = 60.0, port: int | None = None) -> Iterator[str]:
    """A `milvus-lite server` on `port` (a free loopback port by default; a restart drill passes the first run's,
    with the same `data_dir`), its data in `data_dir`.

    Raises RuntimeError, with the server's stderr, when it exits or does not accept connections within `timeout_s`.
    """
    port = port or free_ports(1)[0]
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def log() -> str:
            proc.kill()
            return proc.communicate()[1].decode()

        _wait(proc, lambda: _accepts(port), "milvus-lite server", timeout_s, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, grace_s=30)


def standalone_available() -> bool:
    return _standalone_command() is not None


def _standalone_command() -> list[str] | None:
    beside = Path(sys.executable).with_name("milvus-server")  # the venv's console script
    found = shutil.which("milvus-server") or (str(beside) if beside.exists() else None)
    return [found] if found else None


def _answers(uri: str) -> bool:
    """A real call, not just an open port: the proxy listens before the coordinators are up."""
    try:
        MilvusClient(uri=uri, timeout=2).list_collections()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def milvus_standalone(data_dir: Path, timeout_s: float = 120.0, port: int | None = None) -> Iterator[str]:
    """The Milvus standalone server (`milvus-server`) with its data and logs in `data_dir`, its proxy on `port` (a
    free loopback port by default; a restart drill passes the first run's, with the same `data_dir`), its other
    ports, etcd's among them, the first free ones from Milvus' defaults.

    Runs in a session of its own: the wrapper command starts the server binary as a child and forwards only SIGINT,
    so on exit the whole group gets SIGTERM, then SIGKILL after 10 s (the binary does not exit on SIGTERM within 30 s
    here, and the wrapper's own stop waits 1 s before it kills). Raises FileNotFoundError when the `milvus`
    wheel is not installed and RuntimeError, with the server's log, when it does not answer within `timeout_s`.
    """
    cmd = _standalone_command()
    if cmd is None:
        raise FileNotFoundError("milvus-server is not installed (PyPI: milvus==2.3.5)")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    uri = f"http://127.0.0.1:{port}"
    log_path = data_dir / "milvus-server.log"
    with open(log_path, "ab") as log_file:  # a restart appends to the first run's log
        proc = subprocess.Popen(
            [*cmd, "--data", str(data_dir), "--proxy-port", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait(proc, lambda: _answers(uri), "milvus-server", timeout_s, log_path.read_text)
        yield uri
    finally:
        _stop_group(proc, grace_s=10)


def _stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        proc.poll()
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
