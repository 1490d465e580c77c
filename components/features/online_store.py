"""Which online store a feature repository writes to: SQLite in the repository (laptop) or a Redis server (cluster).

A store is a typed config (SqliteStore or RedisStore), parsed once from the one string that names it, so it can
travel as a pipeline parameter and a CLI flag:
  - `sqlite`: `data/online_store.db` inside the repository directory (the default);
  - `redis://HOST:PORT[/DB]`: a Redis server; DB is the logical database number (default 0).

Credentials come from the environment, as Milvus's do (components/index/client.py): a Redis server that requires
a password is reached with the one in `REDIS_PASSWORD`; the pods get it from the Secret `homefeed-redis` (key
`password`, manifests/base/features/redis.yaml). A URL never carries it (it is a pipeline parameter, shown in the KFP
UI), and the feature_store.yaml written names the variable, `password=${REDIS_PASSWORD}`, which Feast expands when it
loads the file. `redis_client` is the one place other Redis clients (the event bus, the stream processor) open a
connection, so they read the same variable.

Feast keys Redis rows by project and entity, not by repository directory, so two repositories of the same project
pointed at one Redis database share rows: give each its own DB number (tests do) or its own server.

`local_redis` starts a real `redis-server` (Debian package `redis-server`) on a free loopback port for tests,
benchmarks and a laptop demo of the cluster path; it keeps nothing on disk and is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from components.cluster.process import stop

SQLITE = "sqlite"
SQLITE_PATH = "data/online_store.db"  # relative to the repository, like the sources' paths
PASSWORD_ENV = "REDIS_PASSWORD"
# Feast splits its connection string on "," and "=" and reads it from YAML after expanding ${REDIS_PASSWORD}, so a
# password is kept to characters neither can misread (`openssl rand -hex 24` makes one).
_PASSWORD = re.compile(r"[A-Za-z0-9._~-]{1,256}")


def redis_password() -> str | None:
    """The password in REDIS_PASSWORD, or None when unset or empty; a ValueError (that never echoes it) when it has
    characters the Feast configuration cannot carry."""
    value = os.environ.get(PASSWORD_ENV) or None
    if value is not None and not _PASSWORD.fullmatch(value):
        raise ValueError(f"${PASSWORD_ENV} may hold only letters, digits and . _ ~ - (1-256 of them)")
    return value


def no_credentials(url: str, name: str) -> None:
    """A ValueError, without echoing `url`, when it carries userinfo: the password belongs in REDIS_PASSWORD."""
    if "@" in url.split("?", 1)[0]:
        raise ValueError(f"{name} must not carry credentials: set the password in ${PASSWORD_ENV} instead")


def redis_client(url: str, **kwargs):
    """A redis-py client for `url` (redis:// or rediss://, no credentials), authenticating with REDIS_PASSWORD when
    it is set."""
    import redis

    no_credentials(url, "a Redis URL")
    return redis.Redis.from_url(url, password=redis_password(), **kwargs)


class SqliteStore(BaseModel):
    """SQLite inside the feature repository: one file per repository, nothing shared."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["sqlite"] = "sqlite"

    def feast_config(self) -> dict:
        """The `online_store` section of feature_store.yaml."""
        return {"type": "sqlite", "path": SQLITE_PATH}

    def __str__(self) -> str:
        return SQLITE


class RedisStore(BaseModel):
    """A Redis server; `db` is the logical database number."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["redis"] = "redis"
    host: str = Field(min_length=1)
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)

    def feast_config(self) -> dict:
        # skip_dedup: write every row as given, as SQLite does. Feast's default Redis write skips a row whose event
        # time is not newer than the stored one's, which would drop a push that carries only late events (its stamp
        # equals the push before it) and, after a crash, a replayed push whose stamp falls behind the crashed run's.
        # The stream processor is the one writer of a user's sequence and pushes whole sequences, so the last
        # write is the right one.
        # The password is named, not written: Feast expands ${REDIS_PASSWORD} in the file when a reader loads it.
        auth = f",password=${{{PASSWORD_ENV}}}" if redis_password() else ""
        return {"type": "redis", "connection_string": f"{self.host}:{self.port},db={self.db}{auth}", "skip_dedup": True}

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


# One typed config per backend, told apart by `type` (as Feast's own repo config does).
OnlineStore = Annotated[SqliteStore | RedisStore, Field(discriminator="type")]


def parse_online_store(spec: str | SqliteStore | RedisStore) -> SqliteStore | RedisStore:
    """`sqlite` or `redis://HOST:PORT[/DB]` (a config passes through); anything else is a ValueError that says what
    is accepted. The string form is what travels as a pipeline parameter and a CLI flag; `str()` gives it back."""
    if isinstance(spec, SqliteStore | RedisStore):
        return spec
    spec = spec.strip()
    if spec == SQLITE:
        return SqliteStore()
    no_credentials(spec, "the online store")
    url = urlparse(spec)
    if url.scheme != "redis" or not url.hostname:
        raise ValueError(f"online store {spec!r}: expected 'sqlite' or 'redis://HOST:PORT[/DB]'")
    path = url.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"online store {spec!r}: the Redis database must be a number, got {path!r}")
    try:
        port = url.port or 6379
    except ValueError as exc:  # urlparse raises on a port that is not a number or out of range
        raise ValueError(f"online store {spec!r}: {exc}") from exc
    return RedisStore(host=url.hostname, port=port, db=int(path or 0))


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # a server with a password answers NOAUTH
    except OSError:
        return False


@contextlib.contextmanager
def local_redis(log_dir: Path, timeout_s: float = 10.0, password: str | None = None) -> Iterator[str]:
    """A `redis-server` on a free loopback port, no persistence, requiring `password` when given (clients then need
    it in REDIS_PASSWORD); yields `redis://127.0.0.1:PORT/0`.

    Raises FileNotFoundError when the binary is absent (install the Debian package `redis-server`) and RuntimeError,
    with the server's log, when it does not answer PING within `timeout_s`.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (Debian package: redis-server)")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = log_dir / f"redis-{port}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(log_dir), "--logfile", str(log_path), *(["--requirepass", password] if password else [])]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log_path.read_text() if log_path.exists() else "(no log)"
                raise RuntimeError(f"redis-server on port {port} did not start:\n{text[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc, grace_s=5)
