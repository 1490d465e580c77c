"""The event bus between served traffic and the stream processor (components/stream/bus.py, redis_source.py) and
impression logging (serving/event_log.py), on a real Redis.

Delivery is at-least-once; the tests check that the processor makes it exactly-once in effect (a crash between
reading and checkpointing redelivers, and the final sequences hold every event once) and that an outage of the bus
loses no impression (spooled, replayed, counted).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import uuid

import httpx
import pyarrow as pa
import pytest
import redis
from redis_process import RedisProcess
from test_stream import _online, _store

from components.cluster.launcher import free_ports
from components.data.contracts import DeadLetter
from components.data.dataset import Dataset
from components.stream.bus import BusUnavailable, FileBus, RedisBus, RedisStreams, open_bus, shard_of
from components.stream.checkpoint import Checkpoint
from components.stream.processor import StreamProcessor
from components.stream.redis_source import RedisStreamSource
from serving.event_log import EventLog, impressions, request_number

pytestmark = pytest.mark.integration
USERS = (999_990, 999_991, 999_992, 999_993)  # not in the tiny world: nothing online for them until the stream pushes
TS0 = 1_767_226_387_455


def event(user: int, i: int) -> dict:
    return {"user_id": user, "pin_id": 100 + i, "action": "repin", "ts": TS0 + i, "request_id": i,
            "surface": "homefeed", "event_id": f"{user}-{i}"}  # fmt: skip


@pytest.fixture
def bus_uri(redis_server) -> str:
    return f"{redis_server}?shards=3&prefix=t-{uuid.uuid4().hex[:8]}"


def entries(uri: str) -> list[dict]:
    where = RedisStreams.parse(uri)
    client = redis.Redis.from_url(where.url)
    return [json.loads(f[b"e"]) for s in where.streams() for _, f in client.xrange(s)]


def run_until(proc: StreamProcessor, source: RedisStreamSource, stop: threading.Event, offset: int) -> None:
    """Run `proc` on `source` in a thread until it has read up to `offset`, then stop it (it pushes and commits)."""
    runner = threading.Thread(target=proc.run, args=(source.read(proc.offset), source.commit))
    runner.start()
    deadline = time.monotonic() + 60
    while proc.offset < offset:
        assert runner.is_alive() and time.monotonic() < deadline, f"read {proc.offset} of {offset}"
        time.sleep(0.02)
    stop.set()
    runner.join(30)
    assert not runner.is_alive()


# ---- the transports


def test_the_file_bus_keeps_whole_lines_from_concurrent_writers(tmp_path):
    bus = open_bus(f"file:{tmp_path / 'events' / 'actions.jsonl'}")
    assert isinstance(bus, FileBus)
    batches = [[event(u, i) for i in range(250)] for u in USERS]
    threads = [threading.Thread(target=bus.publish, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "events" / "actions.jsonl").read_text().splitlines()
    assert sorted(map(json.dumps, map(json.loads, lines))) == sorted(json.dumps(e, sort_keys=True)
                                                                     for b in batches for e in b)  # fmt: skip
    # an id is published once, a repeat inside one batch too; a batch the disk refuses remembers none of its ids
    first, again = event(1, 0), event(1, 1)
    assert bus.publish_once([first]) == [True]
    assert bus.publish_once([first, again, {**again, "pin_id": 7}]) == [False, True, False]
    blocked = FileBus(tmp_path / "a-file" / "actions.jsonl")
    (tmp_path / "a-file").write_text("a file where the log's folder should be")
    with pytest.raises(BusUnavailable):
        blocked.publish_once([first])
    (tmp_path / "a-file").unlink()
    assert blocked.publish_once([first]) == [True]


@pytest.mark.parametrize("uri", ["kafka://broker:9092/events", "redis://h:6379/0?shards=0", "redis://h/0?topic=x", ""])
def test_a_bus_uri_that_cannot_work_is_refused(uri):
    with pytest.raises(ValueError):
        open_bus(uri)


def test_the_redis_bus_shards_by_user_and_keeps_each_users_order(bus_uri):
    bus = open_bus(bus_uri)
    assert isinstance(bus, RedisBus)
    published = [event(u, i) for i in range(20) for u in USERS]
    assert bus.publish(published) == len(published)
    where = RedisStreams.parse(bus_uri)
    client = redis.Redis.from_url(where.url)
    for shard, stream in enumerate(where.streams()):
        got = [json.loads(f[b"e"]) for _, f in client.xrange(stream)]
        assert got == [e for e in published if shard_of(e["user_id"], 3) == shard]
    assert bus.publish_once([event(USERS[0], 99)]) == [True]
    assert bus.publish_once([event(USERS[0], 99), event(USERS[1], 99), event(USERS[1], 99)]) == [False, True, False]
    assert len(entries(bus_uri)) == len(published) + 2


def test_an_id_is_never_held_without_its_event(bus_uri):
    """A publish that fails midway (here an event's stream is a key of another type, as a full Redis refusing the
    append would) holds the ids of the events before it, which were published, and not the rest: the client's retry
    publishes those, once."""
    bus = open_bus(bus_uri)
    where = RedisStreams.parse(bus_uri)
    client = redis.Redis.from_url(where.url)
    batch = [event(USERS[0], 1), event(USERS[1], 1), event(USERS[0], 2)]  # shards 0, 1, 0 of 3 (999_990 % 3 == 0)
    client.set(where.stream(shard_of(USERS[1], where.shards)), "not a stream")
    with pytest.raises(BusUnavailable, match="WRONGTYPE"):
        bus.publish_once(batch)
    client.delete(where.stream(shard_of(USERS[1], where.shards)))
    assert entries(bus_uri) == [batch[0]]
    assert bus.publish_once(batch) == [False, True, True]
    assert sorted(entries(bus_uri), key=lambda e: e["event_id"]) == sorted(batch, key=lambda e: e["event_id"])


def test_a_redis_bus_that_is_down_says_so():
    (port,) = free_ports(1)
    bus = RedisBus(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    with pytest.raises(BusUnavailable, match=f"127.0.0.1:{port}"):
        bus.publish([event(USERS[0], 0)])


# ---- the processor on the redis bus


def test_the_processor_consumes_the_bus_into_the_online_sequences_and_acknowledges(tiny_world, tmp_path, bus_uri):
    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    bus = open_bus(bus_uri)
    bus.publish([event(u, i) for i in range(5) for u in USERS] + [{"user_id": USERS[0], "action": "like"}])
    stop = threading.Event()
    source = RedisStreamSource(bus_uri, stop=stop, block_ms=20)
    proc = StreamProcessor(store, tmp_path / "ckpt.json", DeadLetter(tmp_path / "dead"), batch=7, max_delay_ms=50)
    run_until(proc, source, stop, 21)
    online = _online(store, USERS)
    assert [list(s) for s in online["seq_pin_ids"]] == [[104, 103, 102, 101, 100]] * len(USERS)
    assert proc.metrics.summary()["counters"]["invalid"] == 1
    assert source.backlog() == 0  # everything read was checkpointed and acknowledged


def test_a_crash_between_read_and_checkpoint_redelivers_and_nothing_applies_twice(tiny_world, tmp_path, bus_uri):
    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    user = USERS[1]
    bus = open_bus(bus_uri)
    bus.publish([event(user, i) for i in range(3)])
    ckpt, dead = tmp_path / "ckpt.json", DeadLetter(tmp_path / "dead")

    class Crash(Exception):
        pass

    def crashing(records, after: int):
        for item in records:
            yield item
            if item[0] == after:  # the record is read, not yet pushed or checkpointed
                raise Crash

    first = RedisStreamSource(bus_uri, consumer="p0", block_ms=20)
    proc = StreamProcessor(store, ckpt, dead, batch=2, max_delay_ms=None)  # checkpoints after records 0-1
    with pytest.raises(Crash):
        proc.run(crashing(first.read(0), after=2), first.commit)
    assert Checkpoint.load(ckpt).offset == 2
    assert first.backlog() == 1  # record 2: delivered, never acknowledged

    bus.publish([event(user, i) for i in range(3, 5)])
    stop = threading.Event()
    again = RedisStreamSource(bus_uri, consumer="p0", stop=stop, block_ms=20)  # the same consumer, restarted
    proc = StreamProcessor(store, ckpt, dead, batch=100, max_delay_ms=50)
    run_until(proc, again, stop, 5)
    assert list(_online(store, [user])["seq_pin_ids"].iloc[0]) == [104, 103, 102, 101, 100]  # each event once
    counters = proc.metrics.summary()["counters"]
    assert counters["applied"] == 5 and counters["duplicates"] == 0
    assert again.backlog() == 0


def test_a_crash_between_checkpoint_and_acknowledgement_delivers_nothing_twice(tiny_world, tmp_path, bus_uri):
    """The checkpoint covers records 0-3 but the process dies before acknowledging them: they are still pending
    when the same consumer restarts. The checkpoint's position says they are covered, so they are acknowledged, not
    delivered again: the offline log holds every event once, impressions (which the state does not keep) too."""
    from components.stream.offline_log import OfflineEventLog

    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    user = USERS[0]
    shown = [event(user, i) | {"action": "impression", "event_id": f"imp-{i}"} for i in range(2)]
    bus = open_bus(bus_uri)
    bus.publish([event(user, 0), shown[0], event(user, 1), shown[1]])
    ckpt, dead, root = tmp_path / "ckpt.json", DeadLetter(tmp_path / "dead"), tmp_path / "offline"

    class Crash(Exception):
        pass

    def dies_before_acknowledging(offset: int) -> None:
        raise Crash

    first = RedisStreamSource(bus_uri, consumer="p0", block_ms=20)
    proc = StreamProcessor(store, ckpt, dead, batch=4, max_delay_ms=None, offline_log=OfflineEventLog(root))
    with pytest.raises(Crash):
        proc.run(first.read(0), dies_before_acknowledging, first.position)
    assert Checkpoint.load(ckpt).offset == 4 and first.backlog() == 4  # checkpointed, none acknowledged

    bus.publish([event(user, 2)])
    stop = threading.Event()
    again = RedisStreamSource(bus_uri, consumer="p0", stop=stop, block_ms=20)
    proc = StreamProcessor(store, ckpt, dead, batch=100, max_delay_ms=50, offline_log=OfflineEventLog(root))
    runner = threading.Thread(target=proc.run,
                              args=(again.read(proc.offset, proc.source_position), again.commit, again.position))  # fmt: skip
    runner.start()
    deadline = time.monotonic() + 60
    while proc.offset < 5:
        assert runner.is_alive() and time.monotonic() < deadline, f"read {proc.offset} of 5"
        time.sleep(0.02)
    stop.set()
    runner.join(30)
    logged = OfflineEventLog(root).read()
    assert sorted(zip(logged["pin_id"].to_pylist(), logged["action"].to_pylist(), strict=True)) == [
        (100, "impression"), (100, "repin"), (101, "impression"), (101, "repin"), (102, "repin")
    ]  # fmt: skip
    assert list(_online(store, [user])["seq_pin_ids"].iloc[0]) == [102, 101, 100]
    assert proc.metrics.summary()["counters"]["duplicates"] == 0 and again.backlog() == 0


# ---- impression logging


def test_impressions_name_the_feed_they_were_served_in():
    feed = {"user_id": 7, "mode": "personalized", "pins": [{"pin_id": 3, "score": 0.9}, {"pin_id": 1, "score": 0.5}]}
    got = impressions(feed, "req-1", TS0, model_version="4", index_version="4")
    assert [(e["pin_id"], e["position"], e["action"]) for e in got] == [(3, 0, "impression"), (1, 1, "impression")]
    assert {e["request_id"] for e in got} == {request_number("req-1")} and 0 <= got[0]["request_id"] < 2**63
    assert got[1]["event_id"] == f"req-1:{request_number('req-1')}:1"
    assert got[0]["model_version"] == "4" and got[0]["mode"] == "personalized"


def test_a_bus_outage_loses_no_impression_and_never_reaches_the_request(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisProcess(tmp_path / "redis")
    server.start()
    uri = f"{server.url}?shards=2"
    log = EventLog(RedisBus(uri, timeout_s=0.5), tmp_path / "spool", retry_s=0.2)
    feeds = [{"user_id": u, "mode": "personalized", "pins": [{"pin_id": p, "score": 1.0} for p in range(10)]}
             for u in range(40)]  # fmt: skip
    try:
        for i, feed in enumerate(feeds[:20]):
            log.log(impressions(feed, f"before-{i}", TS0))
        assert log.flush(30)
        server.stop()
        # while the bus is down the requests still log at once: the events wait on disk
        for i, feed in enumerate(feeds[20:]):
            log.log(impressions(feed, f"during-{i}", TS0))
        deadline = time.monotonic() + 30
        while log.spooled < 200:
            assert time.monotonic() < deadline, "the outage's events were not spooled"
            time.sleep(0.05)
        assert sorted(p.name for p in (tmp_path / "spool").glob("*.jsonl"))  # on disk, not in memory
        server.start()
        assert log.flush(30), "the spool was not replayed after the bus returned"
    finally:
        log.close()
        server.stop()
    server.start()
    try:
        got = entries(uri)
    finally:
        server.stop()
    ids = [e["event_id"] for e in got]
    assert len(ids) == len(set(ids)) == 400  # every impression, once
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_the_homefeed_predictor_logs_every_served_pin(tiny_stack, tmp_path):
    from serving.homefeed import HomefeedPredictor

    bus = FileBus(tmp_path / "events.jsonl")
    log = EventLog(bus, tmp_path / "spool")
    predictor = HomefeedPredictor(tiny_stack["retrieval"], tiny_stack["ranking"], events=log, versions=("3", "3"))
    payload = {"instances": [{"user_id": 1, "n": 5}, {"user_id": 2, "n": 3}]}
    answer = asyncio.run(predictor.predict(payload, {"x-request-id": "r-42"}))
    assert log.flush(30)
    log.close()
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    served = [(p["user_id"], pin["pin_id"]) for p in answer["predictions"] for pin in p["pins"]]
    assert [(e["user_id"], e["pin_id"]) for e in logged] == served and len(served) == 8
    assert {e["rid"] for e in logged} == {"r-42"} and {e["model_version"] for e in logged} == {"3"}
    # each feed is a request of its own in the log, and the response names it for the client's actions
    ids = [p["request_id"] for p in answer["predictions"]]
    assert ids[0] == request_number("r-42") and len(set(ids)) == 2
    assert [e["request_id"] for e in logged] == [ids[0]] * 5 + [ids[1]] * 3
    assert len({e["event_id"] for e in logged}) == 8


def test_the_homefeed_predictor_takes_the_clients_time_only_when_told(tiny_stack, tmp_path):
    from kserve.errors import InvalidInput

    from serving.homefeed import HomefeedPredictor

    timed = {"instances": [{"user_id": 1, "n": 2, "ts": TS0}, {"user_id": 2, "n": 2, "ts": TS0 + 5}]}
    log = EventLog(FileBus(tmp_path / "own.jsonl"), tmp_path / "spool-own")
    own_clock = HomefeedPredictor(tiny_stack["retrieval"], tiny_stack["ranking"], events=log)
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.ts: this server logs impressions at its own clock"):
        asyncio.run(own_clock.predict(timed, {"x-request-id": "t-1"}))
    log.close()
    assert not (tmp_path / "own.jsonl").exists() or not (tmp_path / "own.jsonl").read_text()  # nothing logged

    log = EventLog(FileBus(tmp_path / "sim.jsonl"), tmp_path / "spool-sim")
    simulated = HomefeedPredictor(tiny_stack["retrieval"], tiny_stack["ranking"], events=log, client_time=True)
    asyncio.run(simulated.predict(timed, {"x-request-id": "t-2"}))
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.ts: expected an integer"):
        asyncio.run(simulated.predict({"instances": [{"user_id": 1, "ts": -1}]}, {"x-request-id": "t-3"}))
    assert log.flush(30)
    log.close()
    logged = [json.loads(line) for line in (tmp_path / "sim.jsonl").read_text().splitlines()]
    assert [e["ts"] for e in logged] == [TS0, TS0, TS0 + 5, TS0 + 5]


# ---- the offline event log


def test_the_offline_log_holds_every_valid_event_once_across_a_crash(tiny_world, tmp_path):
    from components.stream.offline_log import OfflineEventLog

    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    day = 24 * 3600 * 1000
    events = [event(USERS[i % 4], i) | {"ts": TS0 + (i // 6) * day} for i in range(12)]  # two UTC days
    events[3] = {"user_id": USERS[3], "action": "like"}  # invalid: the dead letter's, not the log's
    log_path = tmp_path / "log.jsonl"
    log_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    ckpt, dead, root = tmp_path / "ckpt.json", DeadLetter(tmp_path / "dead"), tmp_path / "offline"

    class Crash(Exception):
        pass

    def crashing(records):
        for item in records:
            if item[0] == 9:  # records 0-7 pushed, checkpointed and logged; record 8 read, not checkpointed
                raise Crash
            yield item

    from components.stream.sources import open_source

    proc = StreamProcessor(store, ckpt, dead, batch=4, max_delay_ms=None, offline_log=OfflineEventLog(root))
    with pytest.raises(Crash):
        proc.run(crashing(open_source(log_path)))
    assert Checkpoint.load(ckpt).offset == 8
    # what a crash between writing a part and checkpointing leaves: a part past the checkpoint
    stray = sorted(root.glob("day=*/part-*.parquet"))[-1]
    stray.with_name("part-000000000008-000000000009.parquet").write_bytes(stray.read_bytes())

    offline = OfflineEventLog(root)
    proc = StreamProcessor(store, ckpt, dead, batch=4, max_delay_ms=None, offline_log=offline)
    proc.run(open_source(log_path, proc.offset))
    got = offline.read()
    valid = [e for i, e in enumerate(events) if i != 3]
    assert sorted(zip(got["user_id"].to_pylist(), got["pin_id"].to_pylist(), got["ts"].to_pylist(), strict=True)) == \
        sorted((e["user_id"], e["pin_id"], e["ts"]) for e in valid)  # fmt: skip
    days = sorted({p.parent.name for p in offline.parts()})
    assert len(days) == 2
    first_day = days[0].removeprefix("day=")
    before = offline.read(first_day)
    merged = offline.compact(first_day)
    assert offline.parts(first_day) == [merged] and offline.read(first_day).equals(before)


def test_the_processor_rides_out_a_bus_restart_with_nothing_lost_or_applied_twice(tiny_world, tmp_path, caplog):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    server = RedisProcess(tmp_path / "redis")
    server.start()
    uri = f"{server.url}?shards=2"
    user = USERS[2]
    stop = threading.Event()
    source = RedisStreamSource(uri, stop=stop, block_ms=20)
    proc = StreamProcessor(store, tmp_path / "ckpt.json", DeadLetter(tmp_path / "dead"), batch=100, max_delay_ms=50)
    runner = threading.Thread(target=proc.run, args=(source.read(proc.offset), source.commit))
    runner.start()

    def read_until(offset: int) -> None:
        deadline = time.monotonic() + 60
        while proc.offset < offset:
            assert runner.is_alive() and time.monotonic() < deadline, f"read {proc.offset} of {offset}"
            time.sleep(0.02)

    try:
        RedisBus(uri).publish([event(user, i) for i in range(3)])
        read_until(3)
        server.stop()  # the bus goes away under the running processor ...
        deadline = time.monotonic() + 30
        while "unreachable" not in caplog.text:  # ... which keeps retrying meanwhile
            assert runner.is_alive() and time.monotonic() < deadline, "the source did not notice the outage"
            time.sleep(0.05)
        server.start()  # ... and comes back with its data (AOF)
        RedisBus(uri).publish([event(user, i) for i in range(3, 6)])
        read_until(6)
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    try:
        assert source.backlog() == 0
    finally:
        server.stop()
    assert list(_online(store, [user])["seq_pin_ids"].iloc[0]) == [105, 104, 103, 102, 101, 100]
    counters = proc.metrics.summary()["counters"]
    assert counters["applied"] == 6 and counters["duplicates"] == 0


# ---- scale-out: replicas sharing the shards


def test_two_replicas_share_the_shards_and_a_killed_ones_shards_move_without_loss(tiny_world, tmp_path, redis_store):
    """Two `homefeed stream --state-dir` processes on a 4-shard bus; one is killed (SIGKILL) mid-stream; the other
    takes its shards once their leases expire, resumes each from its checkpoint with the killed one's unacknowledged
    entries, and every user ends with each of their events once, in order."""
    import os
    import signal
    import sys

    from feast import FeatureStore

    from components.features.store import build_feature_store
    from components.stream.offline_log import OfflineEventLog
    from components.stream.shards import ShardLeases

    events = Dataset(tiny_world).read("events")
    build_feature_store(tiny_world, tmp_path / "fs", as_of_ts=int(events["ts"].quantile(0.5)), online_store=redis_store)
    uri = f"{redis_store}?shards=4&prefix=t-{uuid.uuid4().hex[:8]}"
    users = [900_000 + u for u in range(16)]  # every shard has 4 of them
    state = tmp_path / "state"

    (metrics_port,) = free_ports(1)

    def replica(name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "homefeed.cli", "stream", uri, "--features", str(tmp_path / "fs"),
               "--state-dir", str(state), "--replica", name, "--max-delay-ms", "50", "--poll-ms", "50",
               "--event-log", str(tmp_path / "offline")]  # fmt: skip
        if name == "b":  # its shards' metrics, labelled by shard
            cmd += ["--metrics-port", str(metrics_port)]
        with open(tmp_path / f"{name}.log", "w") as log:
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )

    leases = ShardLeases(uri, "observer")

    def owners() -> dict[int, str]:
        return leases.owners()

    def wait(condition, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}: {owners()}"
            time.sleep(0.1)

    reader = FeatureStore(repo_path=str(tmp_path / "fs"))

    def sequences() -> list[list[int]]:
        got = _online(reader, users)
        return [[] if not isinstance(s, list) else list(s) for s in got["seq_pin_ids"]]

    a, b = replica("a"), replica("b")
    try:
        wait(lambda: sorted(owners().values()) == ["a", "a", "b", "b"], "each replica owns two shards")
        bus = RedisBus(uri)
        bus.publish([event(u, i) for i in range(5) for u in users])
        wait(lambda: all(s[:1] == [104] for s in sequences()), "the first events are online")
        a_shards = sorted(s for s, o in owners().items() if o == "a")
        # killed as the next events arrive: whatever it had read and not checkpointed is redelivered to b
        bus.publish([event(u, i) for i in range(5, 10) for u in users])
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        wait(lambda: sorted(owners().values()) == ["b"] * 4, "b takes the killed replica's shards", timeout=120)
        wait(lambda: all(s[:1] == [109] for s in sequences()), "the later events are online", timeout=120)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        alive_at_end = [p.poll() is None for p in (a, b)]
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (a, b):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    assert alive_at_end == [False, True]
    assert b.returncode == 0 and "stopped by SIGTERM" in (tmp_path / "b.log").read_text(), (
        tmp_path / "b.log"
    ).read_text()[-3000:]
    assert sequences() == [[109, 108, 107, 106, 105, 104, 103, 102, 101, 100]] * len(users)  # each event once
    assert a_shards and all((state / f"shard-{s}" / "checkpoint.json").exists() for s in range(4))
    assert "homefeed_stream_shards_owned 4.0" in scraped
    applied = [float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
               if line.startswith("homefeed_stream_applied_total{shard=")]  # fmt: skip
    assert len(applied) == 4 and sum(applied) == 10 * len(users)  # each applied once, a's counts from its checkpoints
    logged = OfflineEventLog(tmp_path / "offline").read()
    assert sorted(zip(logged["user_id"].to_pylist(), logged["pin_id"].to_pylist(), strict=True)) == sorted(
        (u, 100 + i) for u in users for i in range(10)
    )


def test_impressions_alone_reach_the_offline_log_and_the_bus_within_the_max_delay(tiny_world, tmp_path):
    # impressions change no sequence; they are flushed (logged, checkpointed, acknowledged) on the time rule all the
    # same, not left waiting for the next action or the batch's 1000th event
    from components.stream.offline_log import OfflineEventLog
    from components.stream.sources import TICK

    store = _store(tiny_world, tmp_path / "fs", Dataset(tiny_world).read("events"))
    shown = [event(USERS[0], i) | {"action": "impression"} for i in range(5)]
    proc = StreamProcessor(store, tmp_path / "ckpt.json", batch=1000, max_delay_ms=50,
                           offline_log=OfflineEventLog(tmp_path / "offline"))  # fmt: skip
    committed, logged = [], []

    def records():
        yield from enumerate(shown)
        time.sleep(0.1)  # longer than the max delay: the source waits, and says so
        yield TICK
        logged.append(OfflineEventLog(tmp_path / "offline").read().num_rows)  # before the end-of-source flush

    proc.run(records(), committed.append)
    assert logged == [5] and committed[0] == 5 and proc.metrics.counts["pushes"] == 0


def test_the_offline_log_over_its_catalog_is_a_data_source(tiny_world, tmp_path):
    from components.stream.offline_log import OfflineEventLog
    from pipelines import steps

    catalog = Dataset(tiny_world)
    history = catalog.read("events")
    user = int(history["user_id"].iloc[0])
    pins = catalog.read("pins", columns=["pin_id"])["pin_id"].tolist()
    end = int(history["ts"].max())
    served = [event(user, 0) | {"pin_id": pins[i], "ts": end + 1000 * (i + 1), "action": "impression"}
              for i in range(5)]  # fmt: skip
    served.append(event(user, 0) | {"pin_id": pins[0], "ts": end + 9000, "action": "repin"})
    served.append(event(USERS[0], 0) | {"pin_id": pins[1], "ts": end + 9500})  # a user the catalog does not know
    again = history.iloc[:1].to_dict("records")  # an event the catalog already holds, logged again
    log = OfflineEventLog(tmp_path / "log")
    log.hold(pa.Table.from_pylist(served + again).select(["user_id", "pin_id", "action", "ts", "request_id",
                                                          "surface"]))  # fmt: skip
    log.write(0, len(served) + 1)

    manifest = steps.prepare_data(f"log:{tmp_path / 'log'}?catalog={tiny_world}", tmp_path / "dataset")
    assert manifest["logged_events"] == len(served) + 1 and manifest["catalog_events"] == len(history)
    assert manifest["rows"]["events"] == len(history) + len(served) - 1  # the repeat once, the stranger rejected
    assert manifest["rejected"]["events"] == 1
    events = Dataset(tmp_path / "dataset").read("events")
    assert events["ts"].is_monotonic_increasing and int(events["ts"].iloc[-1]) == end + 9000
    with pytest.raises(ValueError, match="catalog"):
        steps.prepare_data(f"log:{tmp_path / 'log'}", tmp_path / "other")


def test_an_acknowledgement_that_fails_is_made_with_the_next_commit(tmp_path, caplog):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        uri = f"{server.url}?shards=1"
        RedisBus(uri).publish([event(USERS[0], i) for i in range(2)])
        source = RedisStreamSource(uri, block_ms=20)
        reader = source.read(0)
        assert [next(reader)[0], next(reader)[0]] == [0, 1]
        server.stop()
        source.commit(2)  # Redis is down: nothing acknowledged, nothing forgotten
        assert "retried with the next commit" in caplog.text
        server.start()
        assert source.backlog() == 2
        source.commit(2)
        assert source.backlog() == 0
    finally:
        server.stop()
