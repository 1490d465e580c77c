"""The deployment as containers, end to end: `homefeed cluster up` plays the dev overlay's Milvus, Redis and Evidently
UI from the rendered manifests, a release built against the cluster's stores (features in its Redis, the index on
its Milvus server) is deployed to it with the pipeline's deploy target `podman:<dir>`, the homefeed predictor
serves a feed through the retrieval and ranking containers and logs its impressions on the event bus, a hide sent
to the actions service goes over the bus through the stream processor container into Redis and out of the next
feed, and `homefeed cluster down` leaves no container.

Needs podman, kubectl and both images (`make image`; .ci/run builds them); skips without them."""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
import redis
from click.testing import CliRunner

from components.cluster import local_cluster, podman
from components.features.online_store import PASSWORD_ENV, redis_client
from components.index.client import TOKEN_ENV
from components.stream.offline_log import OfflineEventLog
from homefeed.cli import main
from pipelines import steps
from pipelines.ray_backend import IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER = 3

if shutil.which("kubectl") is None or not all(map(podman.image_exists, (IMAGE, local_cluster.MILVUS_IMAGE))):
    pytest.skip(f"needs podman, kubectl and the images {IMAGE}, {local_cluster.MILVUS_IMAGE} (make image)",
                allow_module_level=True)  # fmt: skip


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _feed(url: str) -> list[int]:
    response = httpx.post(f"{url}/v1/models/homefeed:predict", json={"instances": [{"user_id": USER, "n": 10}]},
                          timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    (feed,) = response.json()["predictions"]
    return [p["pin_id"] for p in feed["pins"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    where = tmp_path_factory.mktemp("cluster")
    name = f"hfe2e{os.getpid()}"
    _cli("cluster", "up", "--dir", str(where), "--name", name)
    try:
        yield where
    finally:
        _cli("cluster", "down", "--dir", str(where))


def test_a_release_serves_through_the_containers_and_a_streamed_hide_changes_the_next_feed(
    cluster, tiny_world, tiny_artifacts, tmp_path, monkeypatch
):
    state = local_cluster.ClusterState.read(cluster)
    rows = {r["workload"]: r for r in local_cluster.status(cluster)}
    assert all(rows[w.name]["ready"] for w in local_cluster.INFRA), rows
    assert not any(rows[w.name]["pod"] for w in local_cluster.RELEASE)  # nothing to serve yet

    # the release, built as a pipeline run that deploys here builds it (pipelines/local.py local_defaults)
    settings = local_cluster.client_settings(cluster)
    monkeypatch.setenv(TOKEN_ENV, settings["milvus_token"])
    monkeypatch.setenv(PASSWORD_ENV, settings["redis_password"])
    steps.build_features(tiny_world, tmp_path / "features", online_store=settings["online_store"])
    release = local_cluster.release_dir(cluster, 1)
    steps.index_pins(tiny_world, tiny_artifacts["retrieval"], release / "index", embed_workers=0,
                     index_uri=settings["index_uri"])  # fmt: skip
    for part in ("retrieval", "ranking"):
        shutil.copytree(tiny_artifacts[part], release / part, ignore=shutil.ignore_patterns("LOCK", "work"))
    summary = local_cluster.deploy(cluster, 1, tmp_path / "features")
    rows = {r["workload"]: r for r in local_cluster.status(cluster)}
    assert all(r["ready"] for r in rows.values()), rows

    url = summary["urls"]["homefeed"]
    first = _feed(url)
    assert len(first) == 10

    # a person hides the first pin: the actions service puts it on the event bus (Redis Streams on the cluster's
    # Redis), the stream processor container consumes it into the online sequence, and the next feed leaves it out
    actions = f"http://{state.address(local_cluster.INFRA[3])}:8080"
    hide = {"event_id": "e2e-hide-1", "user_id": USER, "pin_id": first[0], "action": "hide",
            "ts": int(time.time() * 1000), "request_id": 1}  # fmt: skip
    response = httpx.post(f"{actions}/v1/actions", json=hide, timeout=30)
    assert response.status_code == 202 and response.json() == {"accepted": 1, "duplicates": 0}, response.text
    again = httpx.post(f"{actions}/v1/actions", json=hide, timeout=30)  # the client's retry: taken once
    assert again.json() == {"accepted": 0, "duplicates": 1}
    bad = httpx.post(f"{actions}/v1/actions", json=hide | {"event_id": "e2e-bad", "action": "like"}, timeout=30)
    assert bad.status_code == 400
    deadline = time.monotonic() + 60
    while first[0] in (feed := _feed(url)):
        assert time.monotonic() < deadline, "the hidden pin is still served a minute after the hide was sent"
        time.sleep(1)
    assert len(feed) == 10 and feed != first

    # every feed served so far was logged, pin by pin, as impressions on the bus, and the processor wrote the
    # offline event log on the work volume
    with pytest.raises(redis.AuthenticationError):  # the cluster's Redis takes only its Secret's password
        redis.Redis.from_url(state.redis).ping()
    bus = redis_client(state.redis)
    # the shard streams only: the bus's keys also hold the event-id claims and the processor replicas' shard leases
    logged = [json.loads(f[b"e"]) for key in sorted(bus.keys("homefeed:events:*")) if bus.type(key) == b"stream"
              for _, f in bus.xrange(key)]  # fmt: skip
    impressions = [e for e in logged if e["action"] == "impression"]
    served_feeds = len({e["rid"] for e in impressions})
    assert len(impressions) == 10 * served_feeds and served_feeds >= 2
    assert [e["pin_id"] for e in impressions if e["position"] == 0][:1] == first[:1]
    assert [e for e in logged if e["action"] == "hide"] == [{k: v for k, v in hide.items()} | {"surface": "homefeed"}]
    offline = OfflineEventLog(cluster / "volumes" / "homefeed-work" / "events" / "log").read()
    assert (USER, first[0], "hide") in set(
        zip(*(offline[c].to_pylist() for c in ("user_id", "pin_id", "action")), strict=True)
    )
    dead = cluster / "volumes" / "homefeed-work" / "actions" / "dead_letter"
    assert any(p.read_text() for p in dead.glob("*/actions.jsonl"))  # the bad action, in its pod's folder
    metrics = httpx.get(f"http://{state.address(local_cluster.RELEASE[3])}:9100/metrics", timeout=5).text
    assert "homefeed_stream" in metrics

    # a release the pods could not serve is refused before anything stops
    other = tmp_path / "lite-features"
    steps.build_features(tiny_world, other)  # SQLite in the folder: not the cluster's Redis
    shutil.copytree(release, local_cluster.release_dir(cluster, 2))
    with pytest.raises(ValueError, match="not this cluster's Redis"):
        local_cluster.deploy(cluster, 2, other)
    assert _feed(url) == feed

    out = _cli("cluster", "down", "--dir", str(cluster))
    assert "removed 8 pods" in out
    assert all(podman.containers(f"{state.name}-{n}") == [] for n in ("redis-0", "homefeed-predictor"))
    assert podman.podman("ps", "--all", "--filter", f"name={state.name}-", "--format", "json").stdout.strip() in (
        "",
        "[]",
    )
    assert podman.podman("network", "exists", state.network, check=False).returncode != 0
