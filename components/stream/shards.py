"""Scale-out of the stream processor over the Redis bus's shards: each replica owns a set of shards, a replica that
dies hands its shards to the others, and no user's order is lost (a user's events are in one shard).

Ownership is a lease per shard in Redis (`<prefix>:lease:<shard>`, SET NX with a TTL, renewed by its owner every
TTL/3 and only while the owner still holds it). Each replica also keeps a heartbeat key (`<prefix>:replica:<name>`);
a replica aims at its fair share, ceil(shards / live replicas): below it, it takes free shards; above it (another
replica came back), it hands back its highest-numbered shards after flushing them. A crashed replica's leases
expire after the TTL and the survivors take the shards.

A shard is processed by a `StreamProcessor` of its own, so its state can move between replicas: its checkpoint and
dead letter live in `<state_dir>/shard-<n>/` on storage every replica sees (the workspace volume), its consumer name in
the group is `shard-<n>` whoever runs it, so the new owner's source first reads the entries the old owner was
delivered and never acknowledged, and resumes from the shard's checkpoint: exactly-once in effect, as in a restart
(components/stream/redis_source.py). Its offline-log parts are named for the shard.

Two owners of one shard at once can only happen if a replica stalls longer than the TTL between renewals (it then
stops the shard at its next renewal); the TTL (default 10 s) must be well above a push's duration.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from components.features.online_store import redis_client
from components.stream.bus import RedisStreams
from components.stream.redis_source import RedisStreamSource

log = logging.getLogger(__name__)

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def shard_consumer(shard: int) -> str:
    """A shard's consumer name in the group: the same on whichever replica processes it."""
    return f"shard-{shard}"


class ShardLeases:
    """This replica's leases on the shards of one bus, and its heartbeat."""

    def __init__(self, uri: str, replica: str, ttl_s: float = 10.0) -> None:
        self.where = RedisStreams.parse(uri)
        self.replica, self.ttl_ms = replica, int(ttl_s * 1000)
        self._redis = redis_client(self.where.url, socket_timeout=5)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

    def _key(self, shard: int) -> str:
        return f"{self.where.prefix}:lease:{shard}"

    def heartbeat(self) -> int:
        """Refresh this replica's heartbeat; returns how many replicas are alive (this one included)."""
        self._redis.set(f"{self.where.prefix}:replica:{self.replica}", 1, px=self.ttl_ms)
        return max(1, sum(1 for _ in self._redis.scan_iter(f"{self.where.prefix}:replica:*")))

    def acquire(self, shard: int) -> bool:
        return bool(self._redis.set(self._key(shard), self.replica, nx=True, px=self.ttl_ms))

    def renew(self, shard: int) -> bool:
        return bool(self._renew(keys=[self._key(shard)], args=[self.replica, self.ttl_ms]))

    def release(self, shard: int) -> None:
        self._release(keys=[self._key(shard)], args=[self.replica])

    def owners(self) -> dict[int, str]:
        values = self._redis.mget([self._key(s) for s in range(self.where.shards)])
        return {s: v.decode() for s, v in enumerate(values) if v is not None}

    def leave(self) -> None:
        self._redis.delete(f"{self.where.prefix}:replica:{self.replica}")


@dataclass
class _Running:
    stop: threading.Event
    thread: threading.Thread | None = None
    summary: dict = field(default_factory=dict)
    processor: object = None


class ShardedProcessor:
    """Runs one processor per owned shard, keeping ownership with `ShardLeases`, until `stop` is set.

    `make_processor(shard, shard_dir)` builds the StreamProcessor of a shard from its own folder (checkpoint, dead
    letter) and with its own feature-store client."""

    def __init__(self, uri: str, replica: str, state_dir: Path,
                 make_processor: Callable[[int, Path], object], *, ttl_s: float = 10.0, block_ms: int = 200,
                 stop: threading.Event | None = None) -> None:  # fmt: skip
        self.uri, self.replica, self.state_dir = uri, replica, Path(state_dir)
        self.make_processor, self.block_ms = make_processor, block_ms
        self.leases = ShardLeases(uri, replica, ttl_s)
        self.ttl_s = ttl_s
        self.stop = stop or threading.Event()
        self.running: dict[int, _Running] = {}
        self.finished: dict[int, list[dict]] = {}  # shard -> summaries of its runs here

    def owned(self) -> list[int]:
        return sorted(self.running)

    def metrics(self) -> dict[int, object]:
        """The StreamMetrics of each shard processed here now (components/stream/metrics.py `serve_shards`)."""
        return {shard: r.processor.metrics for shard, r in list(self.running.items()) if r.processor is not None}

    def run(self) -> dict[int, list[dict]]:
        """Until `stop`: every TTL/3, heartbeat, renew, rebalance. Then flush and release every shard."""
        try:
            while not self.stop.is_set():
                self._tick()
                self.stop.wait(self.ttl_s / 3)
        finally:
            for shard in list(self.running):
                self._hand_back(shard)
            self.leases.leave()
        return self.finished

    def _tick(self) -> None:
        alive = self.leases.heartbeat()
        for shard in list(self.running):
            if not self.leases.renew(shard):  # lost (this replica stalled past the TTL): stop at once
                log.warning("lost the lease of shard %d: stopping it", shard)
                self._hand_back(shard, release=False)
            elif not self.running[shard].thread.is_alive():  # its processor failed: let another replica retry it
                log.error("the processor of shard %d stopped: handing the shard back", shard)
                self._hand_back(shard)
        share = math.ceil(self.leases.where.shards / alive)
        if len(self.running) < share:
            owners = self.leases.owners()
            for shard in range(self.leases.where.shards):
                if len(self.running) >= share:
                    break
                if shard not in owners and self.leases.acquire(shard):
                    self._start(shard)
        while len(self.running) > share:  # another replica came back: hand over our highest shards
            self._hand_back(max(self.running))

    def _start(self, shard: int) -> None:
        folder = self.state_dir / f"shard-{shard}"
        folder.mkdir(parents=True, exist_ok=True)
        stop = threading.Event()
        proc = self.make_processor(shard, folder)
        source = RedisStreamSource(self.uri, consumer=shard_consumer(shard), shards=[shard], block_ms=self.block_ms,
                                   stop=stop)  # fmt: skip
        running = _Running(stop, processor=proc)

        def work() -> None:
            running.summary = proc.run(source.read(proc.offset, proc.source_position), source.commit, source.position)

        running.thread = threading.Thread(target=work, name=f"shard-{shard}", daemon=True)
        self.running[shard] = running
        running.thread.start()
        log.info("replica %s took shard %d (resuming at record %d)", self.replica, shard, proc.offset)

    def _hand_back(self, shard: int, release: bool = True) -> None:
        running = self.running.pop(shard)
        running.stop.set()  # the processor pushes what it holds, checkpoints and acknowledges, then returns
        running.thread.join(max(30.0, 3 * self.ttl_s))
        self.finished.setdefault(shard, []).append(running.summary)
        if release:
            self.leases.release(shard)
        log.info("replica %s handed back shard %d", self.replica, shard)
