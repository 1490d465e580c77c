"""The stream processor's source on the deployed bus: the shard streams of a `RedisBus` (components/stream/bus.py),
read through a consumer group.

Delivery is at-least-once and the processor makes it exactly-once in effect:
- An entry counts as consumed only when acknowledged (XACK), and `commit(offset)` acknowledges exactly the entries
  the processor has pushed and checkpointed (it is called after each checkpoint; see StreamProcessor.run).
- On start the source first reads this consumer's pending entries (delivered before a crash, never acknowledged),
  then new ones. The processor resumes from its checkpoint's state, to which those entries were never applied, so
  each is applied once. An entry the checkpoint covers but that was not yet acknowledged (a crash between
  checkpoint and XACK) is pending too: each checkpoint records the last entry id of every stream it covers
  (`position`), and `read(start, covered)` acknowledges such entries without delivering them again. Delivered again,
  the state would ignore them as duplicates, but the offline log would hold them twice, and an impression, which
  the state does not keep, could not be told from a new one.

Offsets are this source's own count, continued from the checkpoint's (`read(start)`), because the processor's
checkpoint and chunking are written in offsets; which stream entries they stand for is kept until they are
acknowledged.

One consumer reads every shard here (a single processor replica, as the Deployment runs). The consumer name must be
stable across restarts (`--consumer`; not the pod's name, which changes with every pod of a Deployment), or the
pending entries of the crashed consumer are left to nobody.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence

from components.features.online_store import redis_client
from components.stream.bus import EVENT_FIELD, BusUnavailable, RedisStreams
from components.stream.sources import TICK, Record

DEFAULT_GROUP = "stream-processor"
DEFAULT_CONSUMER = "processor-0"

log = logging.getLogger(__name__)


class RedisStreamSource:
    def __init__(
        self, uri: str, *, group: str = DEFAULT_GROUP, consumer: str = DEFAULT_CONSUMER, block_ms: int = 200,
        count: int = 512, stop: threading.Event | None = None, shards: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        import redis

        self.where = RedisStreams.parse(uri)
        # the shard streams read: every one, or those a replica owns (components/stream/shards.py)
        self.streams = [self.where.stream(s) for s in (range(self.where.shards) if shards is None else shards)]
        self.group, self.consumer = group, consumer
        self.block_ms, self.count = block_ms, count
        self.stop = stop
        self._redis = redis_client(self.where.url, socket_timeout=max(5.0, 2 * block_ms / 1000))
        self._unacked: dict[int, tuple[str, bytes]] = {}  # offset -> (stream, entry id), until acknowledged
        self._acked: dict[str, str] = {}  # stream -> the last entry id acknowledged
        try:
            self._ensure_groups()
        except redis.ConnectionError as exc:
            raise BusUnavailable(f"redis bus {self.where.url}: {exc}") from exc

    def _ensure_groups(self) -> None:
        import redis

        for stream in self.streams:
            try:  # from the start of the stream: nothing published before the processor's first start is skipped
                self._redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, start: int = 0, covered: dict[str, str] | None = None) -> Iterator[tuple[int, Record]]:
        """(offset, record) from `start` on: this consumer's pending entries first, then new ones; `TICK` after
        every read that waited `block_ms` without anything new, and at least every `block_ms` while entries flow.
        Ends when `stop` is set. While Redis cannot be reached it retries, ticking; the group's entries wait in Redis
        meanwhile. `covered`: the checkpoint's `position`; pending entries up to it are acknowledged, not delivered."""
        import redis

        offset = start
        covered = covered or {}
        self._acked.update(covered)
        pending = dict.fromkeys(self.streams, "0")
        while pending:  # ids after the last one read, until every stream's pending list is spent
            replies = self._redis.xreadgroup(self.group, self.consumer, pending, count=self.count)
            pending = {}
            for stream_name, entries in replies or []:
                stream = stream_name.decode()
                done = [e for e, _ in entries if stream in covered and _id(e) <= _id(covered[stream])]
                if done:  # applied and checkpointed before a crash that came before their acknowledgement
                    self._redis.xack(stream, self.group, *done)
                for entry_id, fields in entries[len(done) :]:
                    self._unacked[offset] = (stream, entry_id)
                    yield offset, _record(fields)
                    offset += 1
                if entries:
                    pending[stream] = entries[-1][0]
        new = dict.fromkeys(self.streams, ">")
        outage = 0.0
        next_tick = time.monotonic() + self.block_ms / 1000
        while self.stop is None or not self.stop.is_set():
            try:
                replies = self._redis.xreadgroup(self.group, self.consumer, new, count=self.count, block=self.block_ms)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Redis restarting: keep ticking (the processor still pushes what it holds) and retry, backing off
                outage = min(5.0, max(0.2, 2 * outage))
                log.warning("redis bus %s unreachable (%s): retrying in %.1f s", self.where.url, exc, outage)
                yield TICK
                time.sleep(outage)
                continue
            outage = 0.0
            got = False
            for stream, entries in replies or []:
                for entry_id, fields in entries:
                    self._unacked[offset] = (stream.decode(), entry_id)
                    yield offset, _record(fields)
                    offset += 1
                    got = True
            # a steady trickle must not postpone the processor's time-based push: a TICK at least every block_ms
            if not got or time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.block_ms / 1000
                yield TICK

    def position(self, offset: int) -> dict[str, str]:
        """The last entry id of each stream among the entries before `offset` (what a checkpoint at `offset`
        covers), for `read(start, covered)` after a restart."""
        last = dict(self._acked)
        for o in sorted(o for o in self._unacked if o < offset):  # a stream's entries arrive in id order
            stream, entry_id = self._unacked[o]
            last[stream] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return last

    def commit(self, offset: int) -> None:
        """Acknowledge every entry before `offset`: the processor has pushed and checkpointed them. Entries whose
        acknowledgement fails (Redis unreachable) are kept and acknowledged with the next commit."""
        import redis

        by_stream: dict[str, list[int]] = {}
        for o in sorted(o for o in self._unacked if o < offset):
            by_stream.setdefault(self._unacked[o][0], []).append(o)
        for stream, offsets in by_stream.items():
            try:
                self._redis.xack(stream, self.group, *(self._unacked[o][1] for o in offsets))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # not lost either way: still pending in Redis, they are acknowledged by a later commit, or come back
                # after a restart as records the checkpointed state already holds (ignored as duplicates)
                log.warning("acknowledging %d entries of %s failed (%s): retried with the next commit",
                            len(offsets), stream, exc)  # fmt: skip
                continue
            last = self._unacked[offsets[-1]][1]
            self._acked[stream] = last.decode() if isinstance(last, bytes) else last
            for o in offsets:
                del self._unacked[o]

    def backlog(self) -> int:
        """Entries published but not yet acknowledged by the group, over all shards: delivered and pending, plus not
        yet delivered (XINFO GROUPS' `lag`, Redis 7)."""
        total = 0
        for stream in self.streams:
            for group in self._redis.xinfo_groups(stream):
                if group["name"].decode() == self.group:
                    total += int(group["pending"]) + int(group.get("lag") or 0)
        return total

    def close(self) -> None:
        self._redis.close()


def _record(fields: dict) -> Record:
    """A stream entry's event; an entry that is not one becomes a record the processor rejects with the reason."""
    raw = fields.get(EVENT_FIELD.encode())
    if raw is None:
        return {"_raw": repr(fields), "_error": f"a stream entry without the {EVENT_FIELD!r} field"}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {"_raw": raw.decode(errors="replace"), "_error": f"not valid JSON: {exc}"}
    return value if isinstance(value, dict) else {"_raw": raw.decode(errors="replace"), "_error": "not a JSON object"}


def _id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id (`<ms>-<seq>`) as a pair that orders as Redis orders ids."""
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)
