"""The predictors when a dependency fails, on real components stopped under them: a `milvus-lite server` and a
`redis-server` (the Feast online store) killed between two requests, and a homefeed whose ranking server is not
there. Each answers 200 with a feed flagged `degraded`, counts the failure in /metrics, and recovers nothing it
should not: a client mistake is still a 400. Also: image-signature dedup in the retrieval merge, on an index built
so that pins share signatures."""

from __future__ import annotations

import json
import shutil
import socket

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from components.data.dataset import Dataset
from components.features.online_store import local_redis, redis_available
from components.features.store import build_feature_store
from components.index.client import local_milvus
from components.index.milvus import search
from components.index.versions import publish_version
from components.steps import INDEX_FILE
from components.train.examples import RETRIEVAL_SEQ_LEN, Catalog
from components.train.retrieval import load_two_tower, pin_embeddings
from serving.corpus import ServingCorpus
from serving.launcher import ServerSpec, running_servers
from serving.online import declared_interests, online_users
from serving.server import ranking_predictor, rest_app, retrieval_predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _index_at(uri: str, artifacts: dict, out_dir, signatures=None):
    """An index directory like the `index` step's, its collection at `uri` (a server, or another .db), holding the
    tiny corpus with the given image signatures (default: the corpus' own)."""
    shutil.copytree(artifacts["index"] / "corpus", out_dir / "corpus")
    info = json.loads((artifacts["index"] / INDEX_FILE).read_text())
    corpus = ServingCorpus.load(artifacts["index"])
    emb = pin_embeddings(load_two_tower(artifacts["retrieval"]), Catalog.load(Dataset(artifacts["data"])))
    sig = corpus.signature if signatures is None else signatures
    created = np.zeros(len(corpus), dtype=np.int64)
    published = publish_version(uri, "pins", corpus.pin_id, emb[corpus.pin_id], corpus.interest, sig, created)
    (out_dir / INDEX_FILE).write_text(json.dumps({**info, "uri": uri, "collection": published["alias"]}))
    return out_dir


def _busy_users(predictor, n: int) -> list[int]:
    cfg = predictor.model.cfg
    users = online_users(predictor.store, list(range(cfg.n_users)), cfg.n_interests)
    return [int(u) for u in np.argsort(-(users.seq_pin_ids >= 0).sum(1), kind="stable")[:n]]


def _predict(client: TestClient, model: str, instances: list[dict]) -> httpx.Response:
    return client.post(f"/v1/models/{model}:predict", json={"instances": instances})


def _metric(text: str, name: str, **labels) -> float:
    """A sample's value from a /metrics page (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_milvus_down_gives_popular_pins_flagged_degraded(tiny_artifacts, tmp_path):
    with local_milvus(tmp_path / "milvus") as uri:
        index = _index_at(uri, tiny_artifacts, tmp_path / "index")
        retrieval = retrieval_predictor(tiny_artifacts["retrieval"], tiny_artifacts["features"], index)
        retrieval.load()
        client = TestClient(rest_app(retrieval))
        users = _busy_users(retrieval, 3)
        before = _predict(client, "retrieval", [{"user_id": u, "k": 30} for u in users])
        assert before.status_code == 200, before.text
        assert {p["mode"] for p in before.json()["predictions"]} == {"personalized"}
        failures = _metric(
            client.get("/metrics").text, "homefeed_dependency_failures_total", model="retrieval", dependency="milvus"
        )
    # the server is stopped: the same request is answered from the corpus' popular pins
    after = _predict(client, "retrieval", [{"user_id": u, "k": 30} for u in users] + [{"user_id": 1, "k": 10,
                                                                                       "interests": [2]}])  # fmt: skip
    assert after.status_code == 200, after.text
    predictions = after.json()["predictions"]
    assert {p["mode"] for p in predictions} == {"degraded"}
    assert {p["reason"] for p in predictions} == {"ann index unavailable"}
    # the popular pins of the interests each user declared (the store still answers), hidden pins left out
    users_in = online_users(retrieval.store, users, retrieval.model.cfg.n_interests)
    for i, prediction in enumerate(predictions[:3]):
        declared = declared_interests(users_in, i)
        assert declared  # the fallback is narrowed by them, not only the overall list
        popular = retrieval.corpus.popular(30 + len(users_in.hidden[i]), declared)
        expected = [h["pin_id"] for h in popular if h["pin_id"] not in users_in.hidden[i]][:30]
        assert [c["pin_id"] for c in prediction["candidates"]] == expected
    assert {c["interest_id"] for c in predictions[3]["candidates"]} == {2}
    assert (
        _metric(
            client.get("/metrics").text, "homefeed_dependency_failures_total", model="retrieval", dependency="milvus"
        )
        == failures + 1
    )
    # a client mistake is still the client's
    assert _predict(client, "retrieval", [{"user_id": 1, "k": 0}]).status_code == 400


@pytest.mark.skipif(not redis_available(), reason="redis-server is not installed (Debian package redis-server)")
def test_feature_store_down_ranks_without_the_sequence_flagged_degraded(tiny_artifacts, tmp_path):
    art = tiny_artifacts
    with local_redis(tmp_path / "redis") as url:
        build_feature_store(art["data"], tmp_path / "features", online_store=url)
        retrieval = retrieval_predictor(art["retrieval"], tmp_path / "features", art["index"])
        ranking = ranking_predictor(art["ranking"], tmp_path / "features", art["index"], "cpu")
        retrieval.load()
        ranking.load()
        client = TestClient(rest_app(retrieval, ranking))
        users = _busy_users(retrieval, 2)
        pins = [h["pin_id"] for h in retrieval.corpus.popular(40)]
        instances = [{"user_id": u, "candidates": pins} for u in users]
        before = _predict(client, "ranking", instances)
        assert before.status_code == 200, before.text
        assert {p["mode"] for p in before.json()["predictions"]} == {"personalized"}
    # redis is stopped: ranking goes on without the realtime sequence, retrieval falls back to popular pins
    after = _predict(client, "ranking", instances)
    assert after.status_code == 200, after.text
    for old, new in zip(before.json()["predictions"], after.json()["predictions"], strict=True):
        assert new["mode"] == "degraded" and "without the realtime sequence" in new["reason"]
        assert sorted(s["pin_id"] for s in new["scores"]) == sorted(pins)
        old_scores = {s["pin_id"]: s["score"] for s in old["scores"]}
        assert any(abs(old_scores[s["pin_id"]] - s["score"]) > 1e-4 for s in new["scores"])  # the sequence mattered
    found = _predict(client, "retrieval", [{"user_id": users[0], "k": 20}])
    assert found.status_code == 200 and found.json()["predictions"][0]["mode"] == "degraded"
    assert found.json()["predictions"][0]["reason"] == "feature store unavailable"
    assert (
        _metric(client.get("/metrics").text, "homefeed_dependency_failures_total", model="ranking", dependency="feast")
        >= 1
    )


def test_one_image_takes_one_slot_in_the_merge(tiny_artifacts, tmp_path):
    """An index whose pins share image signatures in pairs of neighbours in one user's ranking: retrieval keeps the
    better of each pair, so that user's candidates are every other pin of the plain ranking."""
    art = tiny_artifacts
    corpus = ServingCorpus.load(art["index"])
    plain = retrieval_predictor(art["retrieval"], art["features"], art["index"])
    plain.load()
    user = _busy_users(plain, 1)[0]
    cfg = plain.model.cfg
    vector = plain.user_vectors(online_users(plain.store, [user], cfg.n_interests, RETRIEVAL_SEQ_LEN))[0]
    emb = pin_embeddings(plain.model, Catalog.load(Dataset(art["data"])))[corpus.pin_id]
    pairs = np.empty(len(corpus), dtype=np.int64)
    pairs[np.argsort(-(emb @ vector), kind="stable")] = np.arange(len(corpus)) // 2
    index = _index_at(str(tmp_path / "dups" / "milvus.db"), art, tmp_path / "index", signatures=pairs)
    retrieval = retrieval_predictor(art["retrieval"], art["features"], index)
    retrieval.load()
    (prediction,) = retrieval.predict({"instances": [{"user_id": user, "k": 40}]})["predictions"]
    signature_of = dict(zip(corpus.pin_id.tolist(), pairs.tolist(), strict=True))
    got = [c["pin_id"] for c in prediction["candidates"]]
    assert [c["image_signature"] for c in prediction["candidates"]] == [signature_of[p] for p in got]
    assert len({signature_of[p] for p in got}) == len(got) > 0
    # the same search by hand: the first pin met of each signature, hidden pins dropped
    (hidden,) = online_users(retrieval.store, [user], cfg.n_interests).hidden
    hits = search(retrieval.index["uri"], retrieval.index["collection"], vector[None], 40 + len(hidden))[0]
    assert len({h["image_signature"] for h in hits}) <= len(hits) // 2 + 1  # the index did return pairs to drop
    seen, expected = set(), []
    for h in hits:
        if h["image_signature"] not in seen:
            seen.add(h["image_signature"])
            if h["pin_id"] not in hidden:
                expected.append(h["pin_id"])
    assert got == expected[:40]


def test_homefeed_serves_retrieval_order_when_ranking_is_down_and_logs_the_request_id(tiny_artifacts, tmp_path):
    index = shutil.copytree(tiny_artifacts["index"], tmp_path / "index", ignore=shutil.ignore_patterns("LOCK"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket closes
    art = tiny_artifacts
    specs = [
        ServerSpec(
            "retrieval",
            [
                "retrieval",
                "--model-dir",
                str(art["retrieval"]),
                "--features-dir",
                str(art["features"]),
                "--index-dir",
                str(index),
            ],
        ),  # fmt: skip
        ServerSpec("homefeed", ["homefeed", "--retrieval-url", "{retrieval}", "--ranking-url", closed]),
    ]
    with running_servers(specs, tmp_path / "logs") as urls:
        body = {"instances": [{"user_id": 3, "n": 5}]}
        headers = {"x-request-id": "feed-check-42"}
        response = httpx.post(f"{urls['homefeed']}/v1/models/homefeed:predict", json=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        (feed,) = response.json()["predictions"]
        found = httpx.post(f"{urls['retrieval']}/v1/models/retrieval:predict",
                           json={"instances": [{"user_id": 3, "k": 200}]}, timeout=60).json()  # fmt: skip
        metrics = httpx.get(f"{urls['homefeed']}/metrics").text
    assert feed["mode"] == "degraded" and feed["reason"] == "ranking unavailable: retrieval order"
    assert [p["pin_id"] for p in feed["pins"]] == [c["pin_id"] for c in found["predictions"][0]["candidates"][:5]]
    assert all(p["repin"] is None for p in feed["pins"])
    assert _metric(metrics, "homefeed_dependency_failures_total", model="homefeed", dependency="ranking") == 1
    assert _metric(metrics, "homefeed_stage_seconds_count", model="homefeed", stage="upstream") == 1
    assert _metric(metrics, "homefeed_answers_total", model="homefeed", mode="degraded") == 1
    for name in ("homefeed", "retrieval"):
        assert "request_id=feed-check-42" in (tmp_path / "logs" / f"{name}.log").read_text()
