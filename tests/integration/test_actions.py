"""The actions service (serving/actions.py) in-process through Starlette's TestClient on a file bus and on a real
Redis, and once as a real `python -m serving actions` process over HTTP: what is published (read back from the log
file or the shard streams), idempotency on client event ids, invalid events refused whole into the dead letter, and
a bus outage answered 503 with the retry taken once the bus is back."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from components.cluster.launcher import HOST, free_ports, start_server, stop_servers
from components.data.contracts import DeadLetter
from components.stream.bus import BusUnavailable, EventBus, FileBus, RedisBus, shard_of
from serving.actions import MAX_BODY_BYTES, MAX_EVENTS, actions_app

pytestmark = pytest.mark.integration
NOW = 1_767_226_387_455  # the server's clock in these tests (epoch ms)
URL = "/v1/actions"


def action(event_id: str, user: int = 7, pin: int = 42, kind: str = "click", **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "pin_id": pin, "action": kind, **extra}


def record(event_id: str, user: int = 7, pin: int = 42, kind: str = "click", **extra) -> dict:
    """What the bus should hold for `action(...)`: the defaults filled in."""
    return {"ts": NOW, "request_id": 0, "surface": "homefeed", **action(event_id, user, pin, kind), **extra}


def published(bus: EventBus) -> list[dict]:
    """Every event on the bus: the log's lines, or the shard streams' entries (XRANGE), shard by shard."""
    if isinstance(bus, FileBus):
        return [json.loads(line) for line in bus.path.read_text().splitlines()] if bus.path.exists() else []
    client = redis.Redis.from_url(bus.where.url)
    return [json.loads(f[b"e"]) for s in bus.where.streams() for _, f in client.xrange(s)]


def redis_uri(redis_server: str) -> str:
    return f"{redis_server}?shards=4&prefix=t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["file", "redis"])
def bus(request, tmp_path) -> EventBus:
    if request.param == "file":
        made: EventBus = FileBus(tmp_path / "events" / "actions.jsonl")
    else:
        made = RedisBus(redis_uri(request.getfixturevalue("redis_server")))
    yield made
    made.close()


@pytest.fixture
def dead_letter(tmp_path) -> DeadLetter:
    return DeadLetter(tmp_path / "dead_letter")


def client_for(bus: EventBus, dead_letter: DeadLetter | None) -> TestClient:
    return TestClient(actions_app(bus, dead_letter, clock=lambda: NOW))


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- publishing and idempotency


def test_a_valid_event_is_published_once_with_its_defaults(bus, dead_letter):
    before = metric("homefeed_actions_accepted_total", action="repin")
    response = client_for(bus, dead_letter).post(URL, json=action("a-1", kind="repin", request_id=12))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert published(bus) == [record("a-1", kind="repin", request_id=12)]
    assert metric("homefeed_actions_accepted_total", action="repin") == before + 1
    assert dead_letter.read("actions") == []


def test_given_fields_are_kept_and_typed_by_the_contract(bus, dead_letter):
    sent = action("a-2", user="8", pin=43.0, kind="hide", ts=NOW - 5, surface="search")
    assert client_for(bus, dead_letter).post(URL, json=sent).status_code == 202
    assert published(bus) == [record("a-2", user=8, pin=43, kind="hide", ts=NOW - 5, surface="search")]


def test_a_retried_event_id_is_not_published_twice(bus, dead_letter):
    client = client_for(bus, dead_letter)
    before = metric("homefeed_actions_duplicates_total")
    assert client.post(URL, json=action("r-1")).json() == {"accepted": 1, "duplicates": 0}
    assert client.post(URL, json=action("r-1")).json() == {"accepted": 0, "duplicates": 1}
    # a batch that repeats it, and repeats one of its own ids, publishes only its one new event
    batch = {"events": [action("r-1"), action("r-2", pin=9), action("r-2", pin=9)]}
    response = client.post(URL, json=batch)
    assert response.status_code == 202 and response.json() == {"accepted": 1, "duplicates": 2}
    assert published(bus) == [record("r-1"), record("r-2", pin=9)]
    assert metric("homefeed_actions_duplicates_total") == before + 3


def test_a_batch_of_the_maximum_size_is_published_whole_and_in_order_per_user(bus, dead_letter):
    events = [action(f"b-{i}", user=i % 10, pin=i, kind=("click", "repin", "hide")[i % 3]) for i in range(MAX_EVENTS)]
    response = client_for(bus, dead_letter).post(URL, json={"events": events})
    assert response.status_code == 202 and response.json() == {"accepted": MAX_EVENTS, "duplicates": 0}
    got = published(bus)
    expected = [record(e["event_id"], e["user_id"], e["pin_id"], e["action"]) for e in events]
    assert sorted(got, key=lambda e: e["pin_id"]) == expected
    for user in range(10):  # one user's events stay in the order sent (on Redis: one shard stream)
        assert [e["pin_id"] for e in got if e["user_id"] == user] == list(range(user, MAX_EVENTS, 10))
    if isinstance(bus, RedisBus):
        client = redis.Redis.from_url(bus.where.url)
        for shard, stream in enumerate(bus.where.streams()):
            users = {json.loads(f[b"e"])["user_id"] for _, f in client.xrange(stream)}
            assert all(shard_of(u, bus.where.shards) == shard for u in users)


# ---- client mistakes


def test_invalid_events_refuse_the_whole_batch_and_go_to_the_dead_letter(bus, dead_letter):
    client = client_for(bus, dead_letter)
    before = metric("homefeed_actions_rejected_total")
    events = [
        action("ok-1"),
        action("bad-1", user=-1),
        {"event_id": "bad-2", "user_id": 1, "action": "click"},  # no pin_id
        action("bad-3", ts=NOW // 1000),  # seconds, not milliseconds
        action("bad-4", pinn=3),  # a misspelt field is not dropped silently
        action("", kind="share"),
        action("bad-6", user=True),
        "click",
    ]
    response = client.post(URL, json={"events": events})
    assert response.status_code == 400
    body = response.json()
    assert "7 of 8 events are invalid" in body["error"]
    fields = {r["index"]: [e["field"] for e in r["errors"]] for r in body["rejected"]}
    assert fields == {
        1: ["user_id"],
        2: ["pin_id"],
        3: ["ts"],
        4: ["pinn"],
        5: ["event_id", "action"],
        6: ["user_id"],
        7: ["_event"],
    }
    reasons = {r["index"]: r["errors"][0]["reason"] for r in body["rejected"]}
    assert "epoch seconds" in reasons[3] and "unknown field" in reasons[4] and "true/false" in reasons[6]
    assert published(bus) == []
    dead = dead_letter.read("actions")
    assert [(d["source"], d["row"]) for d in dead] == [("actions", i) for i in range(1, 8)]
    assert dead[3]["record"] == events[4] and dead[6]["record"] == {"_event": "click"}
    assert dead[1]["errors"] == body["rejected"][1]["errors"]
    assert metric("homefeed_actions_rejected_total") == before + 7
    # nothing was claimed either: the fixed batch is taken whole, its valid event included
    fixed = [action("ok-1"), action("bad-1", user=1)]
    assert client.post(URL, json={"events": fixed}).json() == {"accepted": 2, "duplicates": 0}


def test_an_impression_is_the_servers_to_log(bus, dead_letter):
    response = client_for(bus, dead_letter).post(URL, json=action("i-1", kind="impression"))
    assert response.status_code == 400
    [rejected] = response.json()["rejected"]
    assert rejected["index"] == 0 and [e["field"] for e in rejected["errors"]] == ["action"]
    assert "impressions are logged by the server" in rejected["errors"][0]["reason"]
    assert published(bus) == [] and len(dead_letter.read("actions")) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected an event object"),
        (b'{"events": []}', "non-empty list"),
        (b'{"events": [], "user": 1}', "user: unknown field"),
        (json.dumps({"events": [action(f"n-{i}") for i in range(MAX_EVENTS + 1)]}).encode(), "at most 1000"),
    ],
)
def test_a_body_that_cannot_be_read_is_a_400_naming_why(tmp_path, dead_letter, body, message):
    bus = FileBus(tmp_path / "events.jsonl")
    response = client_for(bus, dead_letter).post(URL, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]
    assert published(bus) == []


def test_a_body_over_the_limit_is_a_413(tmp_path):
    bus = FileBus(tmp_path / "events.jsonl")
    client = client_for(bus, None)
    padded = json.dumps(action("big-1", surface="x" * MAX_BODY_BYTES)).encode()
    assert client.post(URL, content=padded).status_code == 413

    def chunked():  # no Content-Length: the limit holds while the body streams in
        yield padded[: len(padded) // 2]
        yield padded[len(padded) // 2 :]

    assert client.post(URL, content=chunked()).status_code == 413
    assert published(bus) == []


# ---- the bus down


class FlakyBus(EventBus):
    """A working bus that refuses while `down` is set."""

    def __init__(self, inner: EventBus) -> None:
        self.inner, self.uri, self.down = inner, inner.uri, True

    def publish_once(self, events):
        if self.down:
            raise BusUnavailable("down for the test")
        return self.inner.publish_once(events)


def test_a_refused_publish_is_a_503_and_the_retry_is_taken(bus, dead_letter):
    flaky = FlakyBus(bus)
    client = client_for(flaky, dead_letter)
    before = metric("homefeed_actions_bus_failures_total")
    batch = {"events": [action("d-1"), action("d-2", pin=5)]}
    response = client.post(URL, json=batch)
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert "retry the request with the same event ids" in response.json()["error"]
    assert published(bus) == [] and metric("homefeed_actions_bus_failures_total") == before + 1
    flaky.down = False  # the bus is back: the retry is published, once
    assert client.post(URL, json=batch).json() == {"accepted": 2, "duplicates": 0}
    assert client.post(URL, json=batch).json() == {"accepted": 0, "duplicates": 2}
    assert published(bus) == [record("d-1"), record("d-2", pin=5)]


def test_redis_that_does_not_answer_is_a_503_and_not_ready(redis_server, dead_letter):
    [port] = free_ports(1)  # nothing listens there
    down = RedisBus(f"redis://{HOST}:{port}/0?shards=4", timeout_s=0.5)
    client = client_for(down, dead_letter)
    response = client.post(URL, json=action("x-1"))
    assert response.status_code == 503 and "retry-after" in response.headers
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False and str(port) in ready.json()["reason"]
    assert client.get("/healthz").status_code == 200  # alive: restarting it would not bring Redis back
    # the same id on a Redis that answers is taken: the failed request claimed nothing
    up = RedisBus(redis_uri(redis_server))
    assert client_for(up, dead_letter).post(URL, json=action("x-1")).json() == {"accepted": 1, "duplicates": 0}
    assert published(up) == [record("x-1")]


def test_a_file_bus_on_an_unwritable_path_is_not_ready_and_refuses_with_503(tmp_path, dead_letter):
    blocker = tmp_path / "events"
    blocker.write_text("a file where the log's folder should be")
    bus = FileBus(blocker / "actions.jsonl")
    client = client_for(bus, dead_letter)
    assert client.get("/readyz").status_code == 503
    assert client.post(URL, json=action("f-1")).status_code == 503
    blocker.unlink()
    assert client.get("/readyz").json() == {"ready": True}
    assert client.post(URL, json=action("f-1")).json() == {"accepted": 1, "duplicates": 0}
    assert published(bus) == [record("f-1")]


# ---- operations


def test_health_readiness_and_metrics(bus, dead_letter):
    client = client_for(bus, dead_letter)
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"ready": True}
    client.post(URL, json=action("m-1"))
    text = client.get("/metrics").text
    for name in ("accepted_total", "duplicates_total", "rejected_total", "bus_failures_total"):
        assert f"homefeed_actions_{name}" in text
    assert 'homefeed_actions_request_seconds_bucket{code="202"' in text


def test_the_live_client_retries_through_an_outage_and_each_action_is_published_once(bus, dead_letter):
    from homefeed.live import EndpointError, PublicEndpoints

    flaky = FlakyBus(bus)
    endpoints = PublicEndpoints("http://testserver", "http://testserver", client=client_for(flaky, dead_letter))
    events = [action(f"l-{i}", pin=i, ts=NOW + i) for i in range(1500)]  # two posts: at most 1000 a request
    timer = threading.Timer(0.5, lambda: setattr(flaky, "down", False))  # the bus comes back while it retries
    timer.start()
    totals = endpoints.send(events)
    timer.join()
    assert totals["accepted"] == 1500 and totals["duplicates"] == 0 and totals["retries"] >= 1
    assert endpoints.send(events[:10]) == {"accepted": 0, "duplicates": 10, "retries": 0}  # a client's replay
    assert [e["event_id"] for e in published(bus)] == [e["event_id"] for e in events]
    with pytest.raises(EndpointError, match="refused a batch"):
        endpoints.send([action("l-bad", kind="like")])
    flaky.down = True
    with pytest.raises(RuntimeError, match="did not take a batch"):
        PublicEndpoints("http://testserver", "http://testserver", retry_for_s=0.3,
                        client=client_for(flaky, dead_letter)).send([action("l-late")])  # fmt: skip


def test_the_server_process_takes_actions_over_http(redis_server, tmp_path):
    uri = redis_uri(redis_server)
    [port] = free_ports(1)
    url = f"http://{HOST}:{port}"
    args = ["actions", "--events", uri, "--dead-letter", str(tmp_path / "dead")]
    server = start_server("actions", args, url, tmp_path / "actions.log")
    try:
        _wait_ready(url, server, tmp_path / "actions.log")
        # one event sent by 16 clients at once (a retry storm) is published once
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{url}{URL}", json=action("p-1"), timeout=30), range(16)))
        assert {a.status_code for a in answers} == {202}
        assert sorted(a.json()["accepted"] for a in answers) == [0] * 15 + [1]
        bad = httpx.post(f"{url}{URL}", json=action("p-2", kind="impression"), timeout=30)
        assert bad.status_code == 400 and bad.json()["rejected"][0]["errors"][0]["field"] == "action"
        assert "homefeed_actions_accepted_total" in httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        stop_servers([server])
    log = (tmp_path / "actions.log").read_text()
    # a graceful stop: uvicorn finishes, then re-raises the SIGTERM it caught, so the exit is 0 or -15
    assert server.process.returncode in (0, -15) and "Finished server process" in log, log[-2000:]
    bus = RedisBus(uri)
    assert [{k: v for k, v in e.items() if k != "ts"} for e in published(bus)] == [
        {k: v for k, v in record("p-1").items() if k != "ts"}
    ]
    assert abs(published(bus)[0]["ts"] - time.time() * 1000) < 120_000  # stamped by the server's clock
    assert [d["row"] for d in DeadLetter(tmp_path / "dead").read("actions")] == [0]
    assert "model=actions events=1 status=400" in log


def _wait_ready(url: str, server, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout_s} s: {log.read_text()[-2000:]}")


@pytest.mark.parametrize(
    ("events", "said"),
    [("kafka://broker:9092/events", "Kafka is not supported"),
     ("redis://:s3cret@127.0.0.1:6379/0", "must not carry credentials")],
)  # fmt: skip
def test_a_bad_bus_option_is_a_one_line_error_not_a_traceback(tmp_path, events, said):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "serving", "actions", "--events", events, "--dead-letter",
                           str(tmp_path / "dead")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("python -m serving actions: error: ") and said in done.stderr
    assert "s3cret" not in done.stderr
