"""One pymilvus client per uri, shared by every call in the process.

Opening a client is not free: for a `.db` uri it starts Milvus Lite's in-process gRPC server, and for a remote uri
it dials and handshakes. The index functions are plain functions that take a uri, so the cache lives here.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pymilvus import MilvusClient

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
