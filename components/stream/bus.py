"""The event bus between served traffic and the stream processor: the homefeed predictor publishes impressions and
the actions service publishes clicks, repins and hides; the stream processor consumes them.

Two transports behind one interface (`EventBus.publish`), chosen by URI (`open_bus`):

- `FileBus` (`file:PATH` or a plain path; the embedded default for `make demo` and a laptop): one append-only
  JSON-lines log, the file `homefeed stream LOG --follow` already reads. An append holds an exclusive flock, so
  writers in several processes never interleave their lines.
- `RedisBus` (`redis://HOST:PORT/DB`; the deployed default, on the Redis the online store uses): Redis Streams.
  Events are sharded by user into `shards` streams named `<prefix>:<shard>`, so one user's events stay in order in
  one stream; every XADD trims its stream to about `maxlen` entries (bounded retention). The processor reads them
  through a consumer group and acknowledges what it has checkpointed (components/stream/redis_source.py):
  at-least-once delivery, made exactly-once in effect by the processor's idempotency (a redelivered event is the same
  record, which the processor's state ignores as a duplicate).

Query parameters of a redis URI: `shards` (default 4), `prefix` (default homefeed:events), `maxlen` (default
1,000,000 per stream). Every publisher and the processor must agree on `shards` and `prefix`: they are part of the
URI the manifests hand to all of them.

Client event ids (`publish_once`): an action a client retries with the same event id is published once. An id is
remembered in the same step that publishes its event, never before: a claim stored without its event (the bus going
down between the two) would make the client's retry a duplicate and the action lost. On Redis one Lua script checks
each id, appends the event and records the id with a TTL, atomically, shared by every replica of the actions
service; on the file bus, under a lock, in a bounded set of this process.

Kafka is not a transport here: no broker can run on the machines this is tested on.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from components.features.online_store import no_credentials, redis_client

DEFAULT_SHARDS = 4
DEFAULT_PREFIX = "homefeed:events"
DEFAULT_MAXLEN = 1_000_000
EVENT_FIELD = "e"  # a stream entry's one field: the event as JSON
EVENT_ID_TTL_S = 7 * 24 * 3600  # how long a client event id is remembered (a retry comes within seconds)
SEEN_IDS = 100_000  # the file bus' memory of client event ids


class BusUnavailable(RuntimeError):
    """The bus could not take the events (Redis down or refusing, the log's disk failing): nothing was published
    that the caller must not publish again."""


def shard_of(user_id: int, shards: int) -> int:
    """The shard of a user's events: every event of one user goes to one stream, in order."""
    return int(user_id) % shards


def event_line(event: Mapping) -> str:
    """An event as the bus stores it: compact JSON with sorted keys, so a republished event is byte-identical."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


class EventBus:
    """Where events are published. `publish` takes a batch and either stores all of it or raises BusUnavailable;
    a batch that raised may still have been stored (the file's write failing midway, Redis' reply to EXEC lost), so
    publishers republish it whole (at-least-once) and the processor ignores the repeated records."""

    uri: str

    def publish(self, events: Iterable[Mapping]) -> int:
        raise NotImplementedError

    def publish_once(self, events: list[Mapping]) -> list[bool]:
        """Publish each event whose `event_id` the bus has not published before (within the batch too) and remember
        its id, in one step; returns, per event, whether it was published. BusUnavailable when the bus cannot take
        them: an event whose id was remembered was published, so the client's retry finds it a duplicate and any
        other is published then."""
        raise NotImplementedError

    def unready(self) -> str | None:
        """None when the bus can take events now, else why not (a readiness probe's answer)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileBus(EventBus):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.uri = f"file:{self.path}"
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._ids_lock = threading.Lock()

    def publish(self, events: Iterable[Mapping]) -> int:
        data = "".join(event_line(e) + "\n" for e in events).encode()
        if not data:
            return 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o664)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time: whole lines, never interleaved
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)  # releases the lock
        except OSError as exc:
            raise BusUnavailable(f"event log {self.path}: {exc}") from exc
        return data.count(b"\n")

    def publish_once(self, events: list[Mapping]) -> list[bool]:
        with self._ids_lock:  # two threads taking one id must not both publish it
            fresh, batch = [], set()
            for e in events:
                new = e["event_id"] not in self._seen and e["event_id"] not in batch
                fresh.append(new)
                batch.add(e["event_id"])
                if not new and e["event_id"] in self._seen:
                    self._seen.move_to_end(e["event_id"])
            self.publish([e for e, new in zip(events, fresh, strict=True) if new])
            for e, new in zip(events, fresh, strict=True):  # only once published
                if new:
                    self._seen[e["event_id"]] = None
            while len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
        return fresh

    def unready(self) -> str | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"event log {self.path}: {exc}"
        target = self.path if self.path.exists() else self.path.parent
        return None if os.access(target, os.W_OK) else f"event log {self.path}: {target} is not writable"


@dataclass(frozen=True)
class RedisStreams:
    """Where a redis bus keeps its events: the server, the shard streams, their retention."""

    url: str  # redis://HOST:PORT/DB, without the bus' query parameters
    shards: int = DEFAULT_SHARDS
    prefix: str = DEFAULT_PREFIX
    maxlen: int = DEFAULT_MAXLEN

    @classmethod
    def parse(cls, uri: str) -> RedisStreams:
        no_credentials(uri, "a redis bus URI")  # before anything that would echo it
        parts = urlsplit(uri)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a redis bus URI starts with redis:// or rediss://, got {uri!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"shards", "prefix", "maxlen"}
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)} in bus URI {uri!r} (known: shards, prefix, maxlen)")
        try:
            shards, maxlen = int(query.get("shards", DEFAULT_SHARDS)), int(query.get("maxlen", DEFAULT_MAXLEN))
        except ValueError as exc:
            raise ValueError(f"shards and maxlen must be integers in bus URI {uri!r}") from exc
        if not 1 <= shards <= 1024 or maxlen < 1000:
            raise ValueError(f"bus URI {uri!r}: shards must be in [1, 1024] and maxlen >= 1000")
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(base, shards, query.get("prefix", DEFAULT_PREFIX), maxlen)

    def stream(self, shard: int) -> str:
        return f"{self.prefix}:{shard}"

    def streams(self) -> list[str]:
        return [self.stream(s) for s in range(self.shards)]


# KEYS: the n events' id keys, then their n streams; ARGV: ttl, maxlen, field, then the n events. Per event: unless
# its id is held, append the event and then hold the id, so a script that fails midway (a full Redis refusing an
# XADD) leaves no id held without its event; a script runs whole before any other command, so two replicas cannot
# both publish one id. Returns 1 (published) or 0 (a repeat) per event.
_PUBLISH_ONCE = """
local n = #KEYS / 2
local out = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('XADD', KEYS[n + i], 'MAXLEN', '~', ARGV[2], '*', ARGV[3], ARGV[3 + i])
    redis.call('SET', KEYS[i], '1', 'EX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


class RedisBus(EventBus):
    def __init__(self, uri: str, timeout_s: float = 2.0) -> None:
        self.where = RedisStreams.parse(uri)
        self.uri = uri
        self._redis = redis_client(self.where.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._publish_once = self._redis.register_script(_PUBLISH_ONCE)

    def publish(self, events: Iterable[Mapping]) -> int:
        import redis

        # MULTI/EXEC: the batch is stored whole or not at all (only a reply lost after EXEC leaves the caller unsure)
        pipe = self._redis.pipeline(transaction=True)
        n = 0
        for event in events:
            stream = self.where.stream(shard_of(event["user_id"], self.where.shards))
            pipe.xadd(stream, {EVENT_FIELD: event_line(event)}, maxlen=self.where.maxlen, approximate=True)
            n += 1
        if n:
            try:
                pipe.execute()
            except redis.RedisError as exc:
                raise BusUnavailable(f"redis bus {self.where.url}: {exc}") from exc
        return n

    def publish_once(self, events: list[Mapping]) -> list[bool]:
        import redis

        if not events:
            return []
        ids = [f"{self.where.prefix}:ids:{e['event_id']}" for e in events]
        streams = [self.where.stream(shard_of(e["user_id"], self.where.shards)) for e in events]
        try:
            done = self._publish_once(keys=ids + streams,
                                      args=[EVENT_ID_TTL_S, self.where.maxlen, EVENT_FIELD, *map(event_line, events)])  # fmt: skip
        except redis.RedisError as exc:
            raise BusUnavailable(f"redis bus {self.where.url}: {exc}") from exc
        return [bool(d) for d in done]

    def unready(self) -> str | None:
        import redis

        try:
            self._redis.ping()
        except redis.RedisError as exc:
            return f"redis bus {self.where.url}: {exc}"
        return None

    def close(self) -> None:
        self._redis.close()


def open_bus(uri: str | Path) -> EventBus:
    """`redis://...` (RedisBus) or `file:PATH` / a path (FileBus); ValueError for anything else."""
    text = str(uri)
    if not text:
        raise ValueError("an event bus URI is empty: redis://HOST:PORT/DB or file:PATH")
    if text.startswith(("redis://", "rediss://")):
        return RedisBus(text)
    if "://" in text:
        raise ValueError(f"unknown event bus {text!r}: redis://HOST:PORT/DB or file:PATH (Kafka is not supported)")
    return FileBus(text.removeprefix("file:"))
