"""A versioned model registry with a champion pointer, on a local directory or an S3-compatible bucket.

(One module over 400 lines: the two storage backends and the registry above them share one consistency argument
(exclusive version claims, version.json last, one-step champion swap), which is easier to check read together.)

Layout under the registry's root (the same keys on both backends):

    <name>/versions/v<N>/<artifact files>   copied in at registration; never written again
    <name>/versions/v<N>/version.json       metrics, created_at, run_id, parent (the champion then), files + sha256
    <name>/champion.json                    {"version": N, "promoted_at": ..., "reason": ...}
    <name>/history.jsonl                    one line per gate decision and per promotion

`version.json` is written last, so a version without it is an interrupted registration: it is not listed, and its
number is simply skipped. Version numbers are claimed by an exclusive create (a directory locally, a conditional
put on S3), so concurrent registrations never share a number. The champion pointer is replaced in one step
(os.replace locally; S3 replaces a whole object per PUT, and the versions it may point to are immutable), so a
reader sees either the old champion or the new one.

Example:
    reg = Registry("data/registry")                       # or "s3://bucket/models" (endpoint: AWS_ENDPOINT_URL)
    v = reg.register("ranking", Path("out/ranking"), {"hit@3_repin": 0.41}, run_id="run-123")
    champ = reg.champion("ranking")                       # VersionInfo | None
    reg.record("ranking", decision.to_dict())             # components/gate.py
    reg.promote("ranking", v, "gate passed")
    reg.fetch("ranking", v, Path("/srv/models/ranking"))
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from components.artifacts import sha256_file

VERSION_FILE = "version.json"
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"

# A model name is one path segment on disk and in an S3 key: no separators, no "..", nothing a shell would mangle.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_TMP_PREFIX = ".tmp-"
# How many taken numbers a registration steps over before giving up: far more than concurrent trainers we run.
_MAX_CLAIM_ATTEMPTS = 1000
_CHUNK = 1 << 20


class Storage(Protocol):
    """What the registry needs from a store. Keys are '/'-separated paths relative to the registry root."""

    def put(self, key: str, data: bytes) -> None:
        """Write a whole object, replacing any; a reader sees the old bytes or the new ones, never a mix."""

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError naming the key when absent."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """The names directly under `prefix` (objects and sub-prefixes), sorted; [] when there are none."""

    def claim(self, key: str) -> bool:
        """Create the empty slot `key` only if nothing is there yet: True if this call created it."""

    def append(self, key: str, data: bytes) -> None:
        """Add bytes at the end of an object, creating it when absent, without losing a concurrent append."""

    def put_file(self, src: Path, key: str) -> None: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def describe(self, key: str) -> str:
        """Where `key` lives, for messages and VersionInfo.uri."""


class LocalStorage:
    """A directory on a local (or mounted) filesystem.

    Example:
        s = LocalStorage(Path("data/registry")); s.put("m/champion.json", b"{}"); s.list("m")  # ['champion.json']
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a unique temp file in the same directory, then os.replace: atomic on POSIX within one filesystem
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(f"{path}: not found") from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix) if prefix else self.root
        try:
            return sorted(n for n in os.listdir(path) if not n.startswith(_TMP_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def claim(self, key: str) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # mkdir is exclusive: of two racing callers exactly one succeeds
        except FileExistsError:
            return False
        return True

    def append(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND with a single write: concurrent small appends land whole, one after the other
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def put_file(self, src: Path, key: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)

    def get_file(self, key: str, dest: Path) -> None:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)

    def describe(self, key: str) -> str:
        return str(self._path(key))


class S3Storage:
    """A bucket and key prefix on S3 or an S3-compatible store (MinIO, Ceph RGW, ...), through boto3.

    S3 has no rename and no append, so: objects are replaced whole by a PUT (readers see old or new); a slot is
    claimed with a conditional PUT (`If-None-Match: *`); an append is read, then a PUT conditional on the ETag read,
    retried when someone else wrote in between. Stores without conditional writes ignore those headers: there, run
    one registrant per model name at a time. The endpoint comes from boto3's usual configuration
    (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, credentials from the environment or a profile).

    Example:
        s = S3Storage("models", "homefeed/registry"); s.list("ranking/versions")   # ['v1', 'v2']
    """

    _CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
    _MISSING = {"NoSuchKey", "404", "NotFound"}
    _APPEND_ATTEMPTS = 20

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            import boto3  # only S3 users pay for importing it

            client = boto3.client("s3")
        self.client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _code(e: Exception) -> str:
        return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))

    def put(self, key: str, data: bytes, **conditions: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)

    def _object(self, key: str) -> dict:
        """get_object's answer for `key`; FileNotFoundError when the store has no such object."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if self._code(e) in self._MISSING:
                raise FileNotFoundError(f"{self.describe(key)}: not found") from None
            raise

    def _get(self, key: str) -> tuple[bytes, str]:
        r = self._object(key)
        return r["Body"].read(), r.get("ETag", "")

    def get(self, key: str) -> bytes:
        return self._get(key)[0]

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if self._code(e) in self._MISSING:
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        base = f"{self._key(prefix)}/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        names: set[str] = set()
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base, Delimiter="/")
        for page in pages:
            names |= {p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])}
            names |= {o["Key"][len(base) :] for o in page.get("Contents", [])}
        names.discard("")
        return sorted(names)

    def claim(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        # an S3 "directory" exists once something is under it: the claim is a marker object inside the slot
        try:
            self.put(f"{key}/.claim", b"", IfNoneMatch="*")
        except ClientError as e:
            if self._code(e) in self._CONFLICT:
                return False
            raise
        return True

    def append(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        for _ in range(self._APPEND_ATTEMPTS):
            try:
                old, etag = self._get(key)
                condition = {"IfMatch": etag}
            except FileNotFoundError:
                old, condition = b"", {"IfNoneMatch": "*"}
            try:
                self.put(key, old + data, **condition)
                return
            except ClientError as e:
                if self._code(e) not in self._CONFLICT:
                    raise
        raise RuntimeError(f"{self.describe(key)}: gave up appending after {self._APPEND_ATTEMPTS} conflicting writes")

    def put_file(self, src: Path, key: str) -> None:
        # one PUT (objects up to 5 GB): our model artifacts are far smaller, and it keeps the calls predictable
        with open(src, "rb") as f:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=f)

    def get_file(self, key: str, dest: Path) -> None:
        r = self._object(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            for chunk in iter(lambda: r["Body"].read(_CHUNK), b""):
                f.write(chunk)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


class LocalRegistry(BaseModel):
    """A registry on a filesystem path (a mounted volume on a cluster)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["local"] = "local"
    path: str = Field(min_length=1)

    def __str__(self) -> str:
        return self.path


class S3Registry(BaseModel):
    """A registry under `prefix` in an S3-compatible bucket (endpoint and credentials: boto3's usual environment)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["s3"] = "s3"
    bucket: str = Field(min_length=1)
    prefix: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


# Where a registry lives: one typed config per backend, told apart by `type`.
RegistryConfig = Annotated[LocalRegistry | S3Registry, Field(discriminator="type")]


def parse_registry(uri: str | Path) -> LocalRegistry | S3Registry:
    """A registry URI as a config: a path or `file://` URI, or `s3://bucket[/prefix]`; anything else is a ValueError.

    Example:
        parse_registry("s3://models/homefeed")   # S3Registry(bucket="models", prefix="homefeed")
    """
    if isinstance(uri, Path):
        return LocalRegistry(path=str(uri))
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"registry URI must be a non-empty path or URI, got {uri!r}")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"registry URI {uri!r}: no bucket (expected s3://bucket/prefix)")
        return S3Registry(bucket=parsed.netloc, prefix=parsed.path.strip("/"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"registry URI {uri!r}: file URIs must be local (file:///path)")
        return LocalRegistry(path=parsed.path)
    # a single letter is a Windows drive, not a scheme; no scheme at all is a plain path
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"registry URI {uri!r}: unsupported scheme {parsed.scheme!r} (use a path, file:// or s3://)")
    return LocalRegistry(path=uri)


def storage_for(uri: str | Path, client: Any = None) -> Storage:
    """The store a registry URI names (`parse_registry`): LocalStorage or S3Storage."""
    config = parse_registry(uri)
    if isinstance(config, S3Registry):
        return S3Storage(config.bucket, config.prefix, client=client)
    return LocalStorage(Path(config.path))


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as recorded in its version.json."""

    name: str
    version: int
    metrics: dict[str, float]
    created_at: str
    run_id: str
    parent: int | None  # the champion when this version was registered (None: there was none)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    uri: str = ""  # where its artifacts live

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], uri: str) -> VersionInfo:
        metrics = {k: math.nan if v is None else float(v) for k, v in raw["metrics"].items()}
        return cls(
            raw["name"],
            int(raw["version"]),
            metrics,
            raw["created_at"],
            raw["run_id"],
            raw["parent"],
            raw["files"],
            uri,
        )


class Registry:
    """Versions of named models, a champion per name, and the history of gate decisions.

    Example:
        reg = Registry(tmp_path)
        v1 = reg.register("ranking", artifacts, {"hit@3_repin": 0.40}, run_id="a")   # 1
        reg.promote("ranking", v1, "first model")
        reg.champion("ranking").version                                              # 1
    """

    def __init__(self, uri: str | Path, *, client: Any = None) -> None:
        self.uri = str(uri)
        self.storage = storage_for(uri, client=client)

    # -- reading ------------------------------------------------------------------------------------------------

    def versions(self, name: str) -> list[VersionInfo]:
        """Every complete version of `name`, oldest first; [] for a name never registered."""
        return [self._read_version(name, n) for n in self._version_numbers(name, complete=True)]

    def version(self, name: str, version: int) -> VersionInfo:
        """One version; FileNotFoundError naming the model and version when there is no such (complete) version."""
        _check_name(name)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{name}: version must be an integer >= 1, got {version!r}")
        try:
            return self._read_version(name, version)
        except FileNotFoundError:
            known = self._version_numbers(name, complete=True)
            raise FileNotFoundError(
                f"model {name!r} has no version {version} in {self.uri}"
                + (f" (versions: {known})" if known else " (no versions registered)")
            ) from None

    def champion(self, name: str) -> VersionInfo | None:
        """The version the champion pointer names, or None when there is none yet (a new name included: the
        gate's first run needs exactly that, not an error)."""
        _check_name(name)
        try:
            pointer = json.loads(self.storage.get(f"{name}/{CHAMPION_FILE}"))
        except FileNotFoundError:
            return None
        return self.version(name, int(pointer["version"]))

    def history(self, name: str) -> list[dict[str, Any]]:
        """The recorded decisions and promotions of `name`, oldest first."""
        _check_name(name)
        try:
            raw = self.storage.get(f"{name}/{HISTORY_FILE}")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]

    # -- writing ------------------------------------------------------------------------------------------------

    def register(self, name: str, artifact_dir: Path, metrics: Mapping[str, float], run_id: str) -> int:
        """Copy `artifact_dir`'s files in as the next version of `name` and return its number.

        The number is claimed before copying (exclusive create; taken numbers are stepped over), and version.json
        is written last, so the version appears complete or not at all. Registering the same artifacts again makes
        a new version: nothing ever writes into an existing one.
        """
        _check_name(name)
        artifact_dir = Path(artifact_dir)
        if not artifact_dir.is_dir():
            raise FileNotFoundError(f"artifact directory {artifact_dir} does not exist")
        files = sorted(p for p in artifact_dir.rglob("*") if p.is_file())
        if not files:
            raise ValueError(f"artifact directory {artifact_dir} has no files")
        rels = [p.relative_to(artifact_dir).as_posix() for p in files]
        if VERSION_FILE in rels:
            raise ValueError(f"{artifact_dir}: an artifact may not be named {VERSION_FILE} (the registry's own file)")
        champ = self.champion(name)  # read first: the parent is the champion this version was trained to beat

        version = self._claim_next(name)
        base = f"{name}/versions/v{version}"
        digests = {}
        for path, rel in zip(files, rels, strict=True):
            self.storage.put_file(path, f"{base}/{rel}")
            digests[rel] = sha256_file(path)
        record = {
            "name": name,
            "version": version,
            "metrics": {k: _json_float(v) for k, v in metrics.items()},
            "created_at": _now(),
            "run_id": str(run_id),
            "parent": None if champ is None else champ.version,
            "files": digests,
        }
        self.storage.put(f"{base}/{VERSION_FILE}", _dumps(record))
        return version

    def promote(self, name: str, version: int, reason: str, expect_files: Mapping[str, str] | None = None) -> None:
        """Point the champion at `version` (which must exist) in one replacing write, and note it in the history.

        `expect_files` (relative path -> sha256, e.g. what the gate hashed): the version must hold exactly these
        bytes for those paths, or nothing is written (`check_files`)."""
        info = self.version(name, version)  # FileNotFoundError for an unknown name/version, before any write
        if expect_files is not None:
            self.check_files(name, version, expect_files)
        previous = self.champion(name)
        at = _now()
        self.storage.put(
            f"{name}/{CHAMPION_FILE}", _dumps({"version": info.version, "promoted_at": at, "reason": reason})
        )
        self._append(
            name,
            {
                "event": "promotion",
                "at": at,
                "version": info.version,
                "previous": None if previous is None else previous.version,
                "reason": reason,
            },
        )

    def check_files(self, name: str, version: int, expected: Mapping[str, str]) -> None:
        """A ValueError naming each file for which `version`'s recorded sha256 is not the `expected` one (or that it
        does not hold). Reads version.json only: a version's files never change after registration, and `fetch`
        checks the stored bytes against these digests."""
        recorded = self.version(name, version).files
        wrong = [rel for rel, digest in sorted(expected.items()) if recorded.get(rel) != digest]
        if wrong:
            raise ValueError(
                f"{name} v{version} does not hold the files expected of it: {', '.join(wrong)} "
                "(absent, or other bytes than were hashed before registration)"
            )

    def record(self, name: str, decision: Mapping[str, Any]) -> None:
        """Append a gate decision (e.g. `Decision.to_dict()` plus the challenger's version) to the history."""
        if not self._version_numbers(name, complete=False):
            raise FileNotFoundError(f"model {name!r} is not registered in {self.uri}")
        self._append(name, {"event": "decision", "at": _now(), **decision})

    def fetch(self, name: str, version: int, dest_dir: Path, only: tuple[str, ...] = ()) -> Path:
        """Copy a version's artifacts into `dest_dir` (absent or empty: mixing with older files would deploy a
        hybrid), checking each file's sha256 against version.json. Returns `dest_dir`.

        `only`: top-level folders or files to copy (e.g. ("retrieval", "ranking") of a bundle); all when empty."""
        info = self.version(name, version)
        dest_dir = Path(dest_dir)
        if dest_dir.exists() and any(dest_dir.iterdir()):
            raise FileExistsError(f"{dest_dir} is not empty: fetch {name} v{version} into a fresh directory")
        files = {rel: d for rel, d in info.files.items() if not only or rel.split("/", 1)[0] in only}
        if only and not files:
            raise FileNotFoundError(f"{name} v{version} has none of {list(only)}")
        for rel, digest in files.items():
            dest = dest_dir.joinpath(*rel.split("/"))
            self.storage.get_file(f"{name}/versions/v{version}/{rel}", dest)
            if sha256_file(dest) != digest:
                raise OSError(f"{name} v{version}: {rel} does not match its recorded sha256 (corrupted store?)")
        dest_dir.mkdir(parents=True, exist_ok=True)
        return dest_dir

    # -- internals ----------------------------------------------------------------------------------------------

    def _version_numbers(self, name: str, *, complete: bool) -> list[int]:
        _check_name(name)
        nums = sorted(int(m.group(1)) for n in self.storage.list(f"{name}/versions") if (m := _VERSION_DIR.match(n)))
        if complete:
            nums = [n for n in nums if self.storage.exists(f"{name}/versions/v{n}/{VERSION_FILE}")]
        return nums

    def _claim_next(self, name: str) -> int:
        taken = self._version_numbers(name, complete=False)
        candidate = (taken[-1] if taken else 0) + 1
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            if self.storage.claim(f"{name}/versions/v{candidate}"):
                return candidate
            candidate += 1  # someone else got it between our listing and our claim: try the next one
        raise RuntimeError(f"{name}: could not claim a version number after {_MAX_CLAIM_ATTEMPTS} attempts")

    def _read_version(self, name: str, version: int) -> VersionInfo:
        raw = json.loads(self.storage.get(f"{name}/versions/v{version}/{VERSION_FILE}"))
        return VersionInfo.from_json(raw, self.storage.describe(f"{name}/versions/v{version}"))

    def _append(self, name: str, entry: Mapping[str, Any]) -> None:
        self.storage.append(
            f"{name}/{HISTORY_FILE}", json.dumps(entry, sort_keys=True, allow_nan=False).encode() + b"\n"
        )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (one path segment)")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json_float(x: float | None) -> float | None:
    # JSON has no NaN: stored as null, read back as NaN (VersionInfo.from_json); a null given back stays null
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


__all__ = ["LocalStorage", "Registry", "S3Storage", "Storage", "VersionInfo", "storage_for"]
