"""The predictors as server processes on loopback when a dependency fails, on real components stopped under them: a
`milvus-lite server` and a `redis-server` (the Feast online store) stopped between two requests, and a homefeed whose
ranking server is not there. Each answers 200 with a feed flagged `degraded`, counts the failure in /metrics, and
still refuses a client's mistake with a 400. Also: image-signature dedup in the retrieval merge, on an index built
so that pins share signatures."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket

import httpx
import numpy as np
import pytest
from feast import FeatureStore
from prometheus_client.parser import text_string_to_metric_families

from components.cluster.launcher import ServerSpec, running_servers
from components.data.dataset import Dataset
from components.features.online_store import local_redis, redis_available
from components.features.store import build_feature_store
from components.index.bundle import INDEX_FILE
from components.index.milvus import search
from components.index.servers import local_milvus
from components.index.versions import publish_version
from components.train.examples import RETRIEVAL_SEQ_LEN, Catalog
from components.train.retrieval import load_two_tower, pin_embeddings
from serving.corpus import ServingCorpus
from serving.online import OnlineUsers, declared_interests, online_users
from serving.server import retrieval_predictor

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


def _metric(text: str, name: str, **labels) -> float:
    """A sample's value from a /metrics page (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def _failures(url: str, model: str, dependency: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return _metric(text, "homefeed_dependency_failures_total", model=model, dependency=dependency)


def _server(kind: str, art: dict, features, index) -> ServerSpec:
    model = ["--model-dir", str(art[kind]), "--features-dir", str(features), "--index-dir", str(index)]
    return ServerSpec(kind, [kind, *model, *(["--device", "cpu"] if kind == "ranking" else [])])


def _post(url: str, model: str, instances: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{model}:predict", json={"instances": instances}, timeout=60)


def _online(art: dict, features) -> tuple[list[int], OnlineUsers]:
    """The three users with the longest online sequences, and their online inputs (read in this process)."""
    cat = Catalog.load(Dataset(art["data"]))
    store = FeatureStore(repo_path=str(features))
    users = online_users(store, list(range(cat.n_users)), cat.n_interests)
    busiest = [int(u) for u in np.argsort(-(users.seq_pin_ids >= 0).sum(1), kind="stable")[:3]]
    return busiest, online_users(store, busiest, cat.n_interests)


def test_milvus_down_gives_popular_pins_flagged_degraded(tiny_artifacts, tmp_path):
    """A retrieval server searching a `milvus-lite server`, which is stopped between two requests."""
    art = tiny_artifacts
    users, online = _online(art, art["features"])
    with contextlib.ExitStack() as milvus:
        index = _index_at(milvus.enter_context(local_milvus(tmp_path / "milvus")), art, tmp_path / "index")
        with running_servers([_server("retrieval", art, art["features"], index)], tmp_path / "logs") as urls:
            url = urls["retrieval"]
            before = _post(url, "retrieval", [{"user_id": u, "k": 30} for u in users])
            assert before.status_code == 200, before.text
            assert {p["mode"] for p in before.json()["predictions"]} == {"personalized"}
            assert _failures(url, "retrieval", "milvus") == 0
            milvus.close()  # the Milvus server stops; the retrieval server does not know yet
            extra = [{"user_id": 1, "k": 10, "interests": [2]}, {"user_id": 10**12, "k": 5}]  # the last: a new user
            after = _post(url, "retrieval", [{"user_id": u, "k": 30} for u in users] + extra)
            assert after.status_code == 200, after.text
            assert _failures(url, "retrieval", "milvus") == 1
            # a client mistake is still the client's
            assert _post(url, "retrieval", [{"user_id": 1, "k": 0}]).status_code == 400
    *predictions, new_user = after.json()["predictions"]
    assert {p["mode"] for p in predictions} == {"degraded"}
    assert {p["reason"] for p in predictions} == {"ann index unavailable"}
    assert new_user["mode"] == "cold_start" and new_user["reason"] is None  # never needed Milvus
    # the popular pins of the interests each user declared (the store still answers), hidden pins left out
    corpus = ServingCorpus.load(index)
    for i, prediction in enumerate(predictions[:3]):
        declared = declared_interests(online, i)
        assert declared  # the fallback is narrowed by them, not only the overall list
        popular = corpus.popular(30 + len(online.hidden[i]), declared)
        expected = [h["pin_id"] for h in popular if h["pin_id"] not in online.hidden[i]][:30]
        assert [c["pin_id"] for c in prediction["candidates"]] == expected
    assert {c["interest_id"] for c in predictions[3]["candidates"]} == {2}


@pytest.mark.skipif(not redis_available(), reason="redis-server is not installed (Debian package redis-server)")
def test_feature_store_down_ranks_without_the_sequence_flagged_degraded(tiny_artifacts, tmp_path):
    """Retrieval and ranking servers on a Feast store whose Redis online store is stopped between two requests."""
    art = tiny_artifacts
    features = tmp_path / "features"
    with contextlib.ExitStack() as redis:
        build_feature_store(art["data"], features, online_store=redis.enter_context(local_redis(tmp_path / "redis")))
        users, _ = _online(art, features)
        pins = [h["pin_id"] for h in ServingCorpus.load(art["index"]).popular(40)]
        instances = [{"user_id": u, "candidates": pins} for u in users]
        index = shutil.copytree(art["index"], tmp_path / "index", ignore=shutil.ignore_patterns("LOCK"))
        specs = [_server("retrieval", art, features, index), _server("ranking", art, features, index)]
        with running_servers(specs, tmp_path / "logs") as urls:
            before = _post(urls["ranking"], "ranking", instances)
            assert before.status_code == 200, before.text
            assert {p["mode"] for p in before.json()["predictions"]} == {"personalized"}
            redis.close()  # Redis stops under both servers
            after = _post(urls["ranking"], "ranking", instances)
            found = _post(urls["retrieval"], "retrieval", [{"user_id": users[0], "k": 20}])
            assert _failures(urls["ranking"], "ranking", "feast") == 1
            assert _failures(urls["retrieval"], "retrieval", "feast") == 1
    # ranking goes on without the realtime sequence, retrieval falls back to popular pins
    assert after.status_code == 200, after.text
    for old, new in zip(before.json()["predictions"], after.json()["predictions"], strict=True):
        assert new["mode"] == "degraded" and "without the realtime sequence" in new["reason"]
        assert sorted(s["pin_id"] for s in new["scores"]) == sorted(pins)
        old_scores = {s["pin_id"]: s["score"] for s in old["scores"]}
        assert any(abs(old_scores[s["pin_id"]] - s["score"]) > 1e-4 for s in new["scores"])  # the sequence mattered
    assert found.status_code == 200, found.text
    (prediction,) = found.json()["predictions"]
    assert prediction["mode"] == "degraded" and prediction["reason"] == "feature store unavailable"
    assert [c["pin_id"] for c in prediction["candidates"]] == pins[:20]  # popular overall: no profile to narrow it


def test_one_image_takes_one_slot_in_the_merge(tiny_artifacts, tmp_path):
    """An index whose pins share image signatures in pairs of neighbours in one user's ranking: retrieval keeps the
    better of each pair, so that user's candidates are every other pin of the plain ranking."""
    art = tiny_artifacts
    corpus = ServingCorpus.load(art["index"])
    plain = retrieval_predictor(art["retrieval"], art["features"], art["index"])
    plain.load()
    user = _online(art, art["features"])[0][0]
    cfg = plain.model.cfg
    vector = plain.user_vectors(online_users(plain.store, [user], cfg.n_interests, RETRIEVAL_SEQ_LEN))[0]
    emb = pin_embeddings(plain.model, Catalog.load(Dataset(art["data"])))[corpus.pin_id]
    pairs = np.empty(len(corpus), dtype=np.int64)
    pairs[np.argsort(-(emb @ vector), kind="stable")] = np.arange(len(corpus)) // 2
    index = _index_at(str(tmp_path / "dups" / "milvus.db"), art, tmp_path / "index", signatures=pairs)
    retrieval = retrieval_predictor(art["retrieval"], art["features"], index)
    retrieval.load()
    (prediction,) = retrieval.predict_now({"instances": [{"user_id": user, "k": 40}]})["predictions"]
    signature_of = dict(zip(corpus.pin_id.tolist(), pairs.tolist(), strict=True))
    got = [c["pin_id"] for c in prediction["candidates"]]
    assert [c["image_signature"] for c in prediction["candidates"]] == [signature_of[p] for p in got]
    assert len({signature_of[p] for p in got}) == len(got) > 0
    # the same search by hand: the first pin met of each signature, hidden pins dropped
    (hidden,) = online_users(retrieval.store, [user], cfg.n_interests).hidden
    hits = search(retrieval.index.uri, retrieval.index.collection, vector[None], 40 + len(hidden))[0]
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


def test_homefeed_ranks_popular_pins_when_retrieval_is_down(tiny_artifacts, tmp_path):
    """A homefeed given the index (`--index-dir`) whose retrieval server is not there, in front of a real ranking
    server: popular pins (of the interests asked for) are ranked, flagged degraded; without the index it was a 500."""
    art = tiny_artifacts
    index = shutil.copytree(art["index"], tmp_path / "index", ignore=shutil.ignore_patterns("LOCK"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    homefeed = ["homefeed", "--retrieval-url", closed, "--ranking-url", "{ranking}", "--candidates", "50"]
    specs = [_server("ranking", art, art["features"], index),
             ServerSpec("homefeed", [*homefeed, "--index-dir", str(index)])]  # fmt: skip
    instances = [{"user_id": 3, "n": 5}, {"user_id": 4, "n": 5, "interests": [2]}]
    with running_servers(specs, tmp_path / "logs") as urls:
        response = _post(urls["homefeed"], "homefeed", instances)
        assert response.status_code == 200, response.text
        ranked = _post(urls["ranking"], "ranking", [
            {"user_id": 3, "candidates": [h["pin_id"] for h in ServingCorpus.load(index).popular(50)]}
        ]).json()["predictions"][0]  # fmt: skip
        failures = _failures(urls["homefeed"], "homefeed", "retrieval")
        assert _post(urls["homefeed"], "homefeed", [{"user_id": 3, "n": 0}]).status_code == 400
    overall, narrowed = response.json()["predictions"]
    for feed in (overall, narrowed):
        assert feed["mode"] == "degraded" and feed["reason"] == "retrieval unavailable: popular pins"
        assert len(feed["pins"]) == 5 and all(p["repin"] is not None for p in feed["pins"])  # scored by ranking
    # the overall feed is ranking's order of the 50 most popular pins; the other keeps to interest 2
    assert [p["pin_id"] for p in overall["pins"]] == [s["pin_id"] for s in ranked["scores"][:5]]
    assert {p["interest_id"] for p in narrowed["pins"]} == {2}
    assert failures == 1
