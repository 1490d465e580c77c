"""The deployment as containers, end to end: `homefeed cluster up` plays the dev overlay's Milvus, Redis and Evidently
UI from the rendered manifests, a release built against the cluster's stores (features in its Redis, the index on
its Milvus server) is deployed to it with the pipeline's deploy target `podman:<dir>`, the homefeed predictor
serves a feed through the retrieval and ranking containers, a hide appended to the action log goes through the
stream processor container into Redis and out of the next feed, and `homefeed cluster down` leaves no container.

Needs podman, kubectl and both images (`make image`; .ci/run builds them); skips without them."""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
from click.testing import CliRunner

from components.cluster import local_cluster, podman
from components.index.client import TOKEN_ENV
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

    # the stream processor follows the work volume's action log, as its Deployment says
    log = cluster / "volumes" / "homefeed-work" / "events" / "actions.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    hide = {"user_id": USER, "pin_id": first[0], "action": "hide", "ts": int(time.time() * 1000), "request_id": 1,
            "surface": "homefeed"}  # fmt: skip
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(hide) + "\n")
    deadline = time.monotonic() + 60
    while first[0] in (feed := _feed(url)):
        assert time.monotonic() < deadline, "the hidden pin is still served a minute after the hide was logged"
        time.sleep(1)
    assert len(feed) == 10 and feed != first
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
    assert "removed 7 pods" in out
    assert all(podman.containers(f"{state.name}-{n}") == [] for n in ("redis-0", "homefeed-predictor"))
    assert podman.podman("ps", "--all", "--filter", f"name={state.name}-", "--format", "json").stdout.strip() in (
        "",
        "[]",
    )
    assert podman.podman("network", "exists", state.network, check=False).returncode != 0
