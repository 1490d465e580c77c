"""One pymilvus client per uri, shared by every call in the process.

Opening a client is not free: for a `.db` uri it starts Milvus Lite's in-process gRPC server, and for a remote uri
it dials and handshakes. The index functions are plain functions that take a uri, so the cache lives here.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pymilvus import MilvusClient

from components.process import stop

_clients: dict[str, MilvusClient] = {}
_lock = threading.Lock()


def is_local(uri: str) -> bool:
    """pymilvus treats a uri ending in `.db` as a Milvus Lite data directory."""
    return uri.endswith(".db")


def client_for(uri: str) -> MilvusClient:
    """The cached client for `uri`, created on first use (for a local uri, its parent folder too)."""
    with _lock:
        client = _clients.get(uri)
        if client is None:
            if is_local(uri):
                # pymilvus refuses a .db path whose folder does not exist; creating it keeps `uri` self-sufficient.
                Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            client = MilvusClient(uri=uri)
            _clients[uri] = client
        return client


@contextlib.contextmanager
def local_milvus(data_dir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """A `milvus-lite server` (Milvus Lite behind a gRPC port, as a cluster's Milvus is) on a free loopback port,
    its data in `data_dir`; yields `http://127.0.0.1:PORT`, the uri every index function takes. Stopped on exit.

    Raises RuntimeError, with the server's stderr, when it exits or does not accept connections within `timeout_s`.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(
                        f"milvus-lite server did not start: {proc.communicate()[1].decode()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, grace_s=30)
