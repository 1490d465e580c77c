"""What a model server does with what it should not serve: every client mistake an audit of the servers found as a
4xx (never a 5xx), the routes it does not offer, bounded request work, readiness tied to the models, the bearer
token and the body bound. Retrieval and ranking run in this process on the tiny world's artifacts, through the
REST application `python -m serving` runs (serving/server.py); the scoring-off-the-loop check uses the session's
real ranking server on loopback.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.ranking import MAX_PAIRS
from serving.scorer import Scorer, synthetic_request
from serving.server import homefeed_predictor, ranking_predictor, rest_app, retrieval_predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def models(tiny_artifacts):
    art = tiny_artifacts
    retrieval = retrieval_predictor(art["retrieval"], art["features"], art["index"])
    ranking = ranking_predictor(art["ranking"], art["features"], art["index"], "cpu")
    homefeed = homefeed_predictor("http://127.0.0.1:9", "http://127.0.0.1:9", candidates=50)
    for model in (retrieval, ranking, homefeed):
        model.load()
    return retrieval, ranking, homefeed


@pytest.fixture(scope="module")
def client(models):
    with TestClient(rest_app(*models), raise_server_exceptions=False) as client:
        yield client


def _tensor(data, shape=None, datatype="INT64", name="user_id") -> dict:
    return {"name": name, "shape": [len(data)] if shape is None else shape, "datatype": datatype, "data": data}


DEEP = "[" * 1000 + "1" + "]" * 1000
# (path, raw JSON body, what the error names): each found sending a 500, a 501 or a 200 to a bad request
FINDINGS = {
    "deep nesting in an instance": ("/v1/models/retrieval:predict", '{"instances": ' + DEEP + "}", "body"),
    "deep nesting as the body": ("/v1/models/ranking:predict", DEEP, "body"),
    "deep nesting in v2 data": (
        "/v2/models/retrieval/infer",
        '{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": ' + DEEP + "}]}",
        "inputs.user_id",
    ),
    "a lone surrogate in a field name": ("/v1/models/retrieval:predict", '{"instances": [{"\\ud800": 1}]}', ""),
    "a lone surrogate in a v2 input name": (
        "/v2/models/retrieval/infer",
        '{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "INT64", "data": [1]}]}',
        "",
    ),
    "2**64 as UINT64": (
        "/v2/models/retrieval/infer",
        json.dumps({"inputs": [_tensor([2**64], datatype="UINT64")]}),
        "inputs.user_id",
    ),  # fmt: skip
    "Infinity in INT64": (
        "/v2/models/retrieval/infer",
        '{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [Infinity]}]}',
        "inputs.user_id",
    ),
    "1e400 in INT64": (
        "/v2/models/retrieval/infer",
        '{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1e400]}]}',
        "inputs.user_id",
    ),
    "406 as INT8": (
        "/v2/models/ranking/infer",
        json.dumps({"inputs": [_tensor([406], datatype="INT8")]}),
        "inputs.user_id",
    ),  # fmt: skip
    "a string in INT64": ("/v2/models/retrieval/infer", json.dumps({"inputs": [_tensor(["7"])]}), "inputs.user_id"),
    "a float in INT64": ("/v2/models/retrieval/infer", json.dumps({"inputs": [_tensor([7.5])]}), "inputs.user_id"),
    "a bool in INT64": ("/v2/models/retrieval/infer", json.dumps({"inputs": [_tensor([True])]}), "inputs.user_id"),
    "nested data": ("/v2/models/retrieval/infer", json.dumps({"inputs": [_tensor([[7]])]}), "inputs.user_id"),
    "a negative dimension": (
        "/v2/models/retrieval/infer",
        json.dumps({"inputs": [_tensor([7], [-1])]}),
        "inputs.user_id",
    ),  # fmt: skip
    "more data than the shape holds": (
        "/v2/models/retrieval/infer",
        json.dumps({"inputs": [_tensor([7, 8], [1])]}),
        "inputs.user_id",
    ),  # fmt: skip
    "a 1 MB request id": (
        "/v2/models/retrieval/infer",
        json.dumps({"id": "x" * 2**20, "inputs": [_tensor([7])]}),
        "request id",
    ),
}


@pytest.mark.parametrize("case", FINDINGS)
def test_each_bad_request_the_audit_found_is_a_400_that_says_why(client, case):
    path, body, named = FINDINGS[case]
    response = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    answer = response.json()  # ours name the field; FastAPI's own parser refuses some bodies before we see them
    assert answer.get("error", "").startswith(named) or (named and "detail" in answer), answer
    assert len(response.text) < 2_000  # the client's value is summarised, not echoed


def test_a_binary_v2_request_with_a_malformed_header_length_is_a_400(client):
    head = json.dumps({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64",
                                   "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
    body = head + np.array([7], dtype=np.int64).tobytes()
    for length in ("abc", "-5", "1e3"):
        response = client.post("/v2/models/retrieval/infer", content=body,
                               headers={"inference-header-content-length": length})  # fmt: skip
        assert response.status_code == 400 and "inference-header-content-length" in response.json()["error"]
    good = client.post("/v2/models/retrieval/infer", content=body,
                       headers={"inference-header-content-length": str(len(head))})  # fmt: skip
    assert good.status_code == 200, good.text[:300]


def test_routes_no_predictor_offers_are_404s_and_the_model_repository_is_closed(client):
    for path in ("/v2/models/retrieval/versions/1/infer", "/v2/repository/models/retrieval/unload",
                 "/v2/repository/models/retrieval/load"):  # fmt: skip
        assert client.post(path, json={}).status_code == 404, path
    assert client.post("/v1/models/retrieval:explain", json={"instances": [{"user_id": 1}]}).status_code in (404, 405)
    # the unload above did nothing: the model still answers
    assert client.post("/v1/models/retrieval:predict", json={"instances": [{"user_id": 1}]}).status_code == 200


def test_readiness_follows_every_model(client, models):
    _, ranking, _ = models
    assert client.get("/v2/health/ready").status_code == 200
    ranking.ready = False
    try:
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200  # alive: not a reason to restart the pod
    finally:
        ranking.ready = True


def test_a_server_with_a_token_refuses_requests_without_it_but_not_its_probes(models):
    # no `with`: the app's shutdown would stop the models the other tests share
    client = TestClient(rest_app(*models, token="not-a-real-token"))
    body = {"instances": [{"user_id": 1}]}
    assert client.post("/v1/models/retrieval:predict", json=body).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert client.post("/v1/models/retrieval:predict", json=body, headers=wrong).status_code == 401
    right = {"authorization": "Bearer not-a-real-token"}
    assert client.post("/v1/models/retrieval:predict", json=body, headers=right).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/metrics").status_code == 200


def test_a_body_over_the_bound_is_refused_before_it_is_read(models):
    client = TestClient(rest_app(*models, max_body=10_000))  # no `with`: as above
    big = {"instances": [{"user_id": 1, "candidates": list(range(3000))}]}
    response = client.post("/v1/models/ranking:predict", json=big)
    assert response.status_code == 413 and "10000 bytes" in response.json()["error"]

    def chunks():  # no content-length: counted as it streams
        yield b'{"instances": [{"user_id": 1, "candidates": ['
        for _ in range(5000):
            yield b"1, "
        yield b"2]}]}"

    streamed = client.post("/v1/models/ranking:predict", content=chunks())
    assert streamed.status_code in (400, 413) and "10000 bytes" in streamed.json()["error"]


def test_a_ranking_request_over_the_pair_bound_is_a_400(client, models):
    _, ranking, _ = models
    per_user = min(1000, ranking.n_pins)
    users = MAX_PAIRS // per_user + 1
    body = {"instances": [{"user_id": u, "candidates": list(range(per_user))} for u in range(users)]}
    response = client.post("/v1/models/ranking:predict", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"candidates: {users * per_user} (user, candidate) pairs")


def test_scoring_in_passes_gives_the_scores_of_one_pass(models):
    _, ranking, _ = models
    scorer = Scorer(ranking.model, "cpu")
    request = synthetic_request(ranking.model, 700, 7, scorer.seq_len, np.random.default_rng(1))
    whole = scorer.score(*request)
    scorer.pass_pairs = 64  # 11 passes, most of them splitting a user's candidates
    np.testing.assert_allclose(scorer.score(*request), whole, rtol=0, atol=1e-5)


def test_health_answers_while_the_ranking_server_scores(tiny_stack, models):
    """A large request keeps the scoring thread busy for seconds. Scored on the event loop, it held every probe
    for the whole pass (one probe as slow as the request); off the loop, each probe is answered at once."""
    _, ranking, _ = models
    url = tiny_stack["ranking"]
    per_user = min(1000, ranking.n_pins)
    body = {"instances": [{"user_id": u, "candidates": list(range(per_user))} for u in range(8)]}
    done, took = threading.Event(), []

    def score():
        start = time.perf_counter()
        response = httpx.post(f"{url}/v1/models/ranking:predict", json=body, timeout=300)
        took.append((response.status_code, time.perf_counter() - start))
        done.set()

    thread = threading.Thread(target=score)
    thread.start()
    probes = []
    while not done.is_set():
        start = time.perf_counter()
        assert httpx.get(f"{url}/v2/health/live", timeout=300).status_code == 200
        probes.append(time.perf_counter() - start)
    thread.join()
    (status, request_s), slowest = took[0], max(probes)
    assert status == 200
    assert len(probes) >= 5 and slowest < request_s / 4, (len(probes), slowest, request_s)


@pytest.mark.parametrize("damage", ["random bytes", "empty"])
def test_a_feature_registry_that_cannot_be_read_fails_the_start(tiny_artifacts, tmp_path, damage):
    """Not a server that reports ready and answers every request `degraded`: the start fails, naming the repository."""
    art = tiny_artifacts
    features = shutil.copytree(art["features"], tmp_path / "features")
    registry = features / "data" / "registry.db"
    assert registry.exists()
    registry.write_bytes(np.random.default_rng(0).bytes(3000) if damage == "random bytes" else b"")
    for model in (retrieval_predictor(art["retrieval"], features, art["index"]),
                  ranking_predictor(art["ranking"], features, art["index"], "cpu")):  # fmt: skip
        with pytest.raises(ValueError, match="the Feast registry cannot be read") as err:
            model.load()
        assert str(features) in str(err.value) and not model.ready
