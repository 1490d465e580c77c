"""One pymilvus client per uri, shared by every call in the process.

Opening a client is not free: for a `.db` uri it starts Milvus Lite's in-process gRPC server, and for a remote uri
it dials and handshakes. The index functions are plain functions that take a uri, so the cache lives here.

Credentials come from the environment, as boto3's AWS_* do: a remote uri is opened with the token in `MILVUS_TOKEN`
("user:password") when it is set; the pods get it from the Secret `homefeed-milvus` (key `token`,
manifests/base/index/milvus.yaml). This module is the one place that reads it, and it never logs it nor puts it in an
error. A `.db` file (Milvus Lite) has no users and is opened without a token.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import grpc
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymilvus import MilvusClient, MilvusException

TOKEN_ENV = "MILVUS_TOKEN"
SERVER_SCHEMES = ("http", "https")

_clients: dict[str, MilvusClient] = {}
_lock = threading.Lock()


class MilvusAuthError(PermissionError):
    """A Milvus server refused this process' credentials (MILVUS_TOKEN missing, or not a valid user:password)."""


def is_local(uri: str) -> bool:
    """pymilvus treats a uri ending in `.db` as a Milvus Lite data directory."""
    return uri.endswith(".db")


def check_server_uri(uri: str, name: str = "uri") -> str:
    """`uri` if it is `http(s)://host:port` of a Milvus server; a ValueError naming `name` otherwise.

    Credentials in the uri (`http://user:password@host:port`) are refused without echoing it: they belong in
    MILVUS_TOKEN, and the uri is written to index.json and shown in the KFP UI.
    """
    if "@" in uri:  # userinfo; checked before anything that would echo the uri
        raise ValueError(f"{name} must not carry credentials: set them in ${TOKEN_ENV} (user:password) instead")
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in SERVER_SCHEMES or not parts.hostname or port is None:
        raise ValueError(f"{name} must be http(s)://host:port of a Milvus server, got {uri!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{name} must be http(s)://host:port with nothing after the port, got {uri!r}")
    return uri


class LiteIndex(BaseModel):
    """A Milvus Lite file in the index artifact, which the bundle carries (`index_uri` empty)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["lite"] = "lite"

    def __str__(self) -> str:
        return ""


class MilvusServer(BaseModel):
    """A Milvus server at `uri`, http(s)://host:port; credentials come from MILVUS_TOKEN, never from the uri."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # a bad uri may hold a password
    type: Literal["milvus"] = "milvus"
    uri: str

    @field_validator("uri")
    @classmethod
    def _server(cls, value: str) -> str:
        return check_server_uri(value, "index_uri")

    def __str__(self) -> str:
        return self.uri


# Where the index step publishes: one typed config per backend, told apart by `type`.
IndexTarget = Annotated[LiteIndex | MilvusServer, Field(discriminator="type")]


def parse_index_target(index_uri: str) -> LiteIndex | MilvusServer:
    """`index_uri` as a config: empty is a Milvus Lite file, anything else must be a server's http(s)://host:port."""
    # checked before the model is built, so a bad uri gets check_server_uri's own message, not pydantic's wrapping
    return MilvusServer(uri=check_server_uri(index_uri, "index_uri")) if index_uri.strip() else LiteIndex()


def client_for(uri: str) -> MilvusClient:
    """The cached client for `uri`, created on first use (for a local uri, its parent folder too; for a remote one,
    with the token in MILVUS_TOKEN when it is set).

    Raises MilvusAuthError, naming `uri`, when the server refuses the token. The client is cached per uri for the
    life of the process, so a token changed in the environment later is not picked up.
    """
    with _lock:
        client = _clients.get(uri)
        if client is None:
            if is_local(uri):
                # pymilvus refuses a .db path whose folder does not exist; creating it keeps `uri` self-sufficient.
                Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
                client = MilvusClient(uri=uri)
            else:
                client = _server_client(uri)
            _clients[uri] = client
        return client


def forget_client(uri: str) -> None:
    """Drop the cached client for `uri` (closing it), so the next `client_for` connects afresh: after a server
    restart a client's channel may stay broken, and only a new one recovers."""
    with _lock:
        client = _clients.pop(uri, None)
    if client is not None:
        with contextlib.suppress(Exception):  # a broken channel may fail to close: it is dropped all the same
            client.close()


def searchable(uri: str) -> str:
    """`uri` itself, or for a Milvus Lite file this process may not write beside, a copy of it in a new folder under
    the temporary directory ($TMPDIR; /tmp, an emptyDir, in the pods).

    Milvus Lite writes next to its data (a lock file, its log) even to search, and a bundle read from a model store
    is not writable by a predictor's user: KServe's storage initializer fills /mnt/models as another user, and a
    non-root predictor with a read-only root filesystem cannot write there. The copy leaves out the LOCK file, which
    belongs to whoever holds the original.
    """
    path = Path(uri)
    if not is_local(uri) or os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)):
        return uri
    dest = Path(tempfile.mkdtemp(prefix="index-")) / path.name
    shutil.copytree(path, dest, ignore=shutil.ignore_patterns("LOCK"))
    return str(dest)


def _server_client(uri: str) -> MilvusClient:
    token = os.environ.get(TOKEN_ENV, "")
    try:
        return MilvusClient(uri=uri, token=token)
    except MilvusException as err:
        if not _refused_credentials(err):
            raise
        why = f"the token in ${TOKEN_ENV}" if token else f"a request without a token (${TOKEN_ENV} is not set)"
        raise MilvusAuthError(
            f"Milvus at {uri} refused {why}: check {TOKEN_ENV} (user:password of a Milvus user; on the cluster, the "
            "Secret homefeed-milvus, key token)"
        ) from err


def _refused_credentials(err: MilvusException) -> bool:
    """Whether pymilvus' connect error is the server refusing the credentials.

    pymilvus wraps the failed handshake (its `Connect` call) in a MilvusException "Fail connecting to server ...,
    illegal connection params or server unavailable" whatever the reason; the gRPC error it chains says which:
    UNAUTHENTICATED from Milvus 2.4+ ("auth check failure ...", "missing authorization in header"), UNKNOWN with
    that text from older servers. `milvus-lite server` has no users and never refuses, so this is not exercised by
    the tests.
    """
    cause = err.__cause__
    if not isinstance(cause, grpc.RpcError) or not hasattr(cause, "code"):
        return False
    if cause.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return True
    return "auth" in (cause.details() or "").lower()
