"""The KServe predictors on the tiny world's artifacts: online inputs against their offline definition, retrieval and
ranking in-process through FastAPI's TestClient on the model server's REST app, every kind of bad input as a 400,
and the homefeed over real loopback processes started by the launcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket

import httpx
import kserve.model_server
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from components.cluster.launcher import ServerFailed, ServerSpec, running_servers
from components.data.dataset import Dataset
from components.features.sequence import ActionLog
from components.features.store import build_feature_store
from components.index.corpus import read_corpus
from components.train.examples import RETRIEVAL_SEQ_LEN, Catalog, sequence_age_hours
from components.train.ranking import score
from components.train.retrieval import pin_embeddings, user_embeddings
from models.ranking.pinnability import BLEND
from serving.__main__ import build_parser
from serving.online import HIDE, online_users
from serving.server import homefeed_predictor, ranking_predictor, rest_app, retrieval_predictor

pytestmark = pytest.mark.integration
slow = pytest.mark.slow  # everything that needs the tiny world's trained artifacts

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def offline(tiny_artifacts) -> dict:
    ds = Dataset(tiny_artifacts["data"])
    events = ds.read("events")
    cutoff = int(events["ts"].max()) + 1
    pins = ds.read("pins", columns=["pin_id", "created_ts"])
    in_store = np.sort(pins.loc[pins["created_ts"] < cutoff, "pin_id"].to_numpy())  # the store holds pins as of then
    return {"cat": Catalog.load(ds), "log": ActionLog(events), "cutoff": cutoff, "events": events, "pins": in_store}


@pytest.fixture(scope="module")
def retrieval(tiny_artifacts):
    model = retrieval_predictor(tiny_artifacts["retrieval"], tiny_artifacts["features"], tiny_artifacts["index"])
    model.load()
    return model


@pytest.fixture(scope="module")
def ranking(tiny_artifacts):
    model = ranking_predictor(tiny_artifacts["ranking"], tiny_artifacts["features"], tiny_artifacts["index"], "cpu")
    model.load()
    return model


@pytest.fixture(scope="module")
def client(retrieval, ranking) -> TestClient:
    homefeed = homefeed_predictor(_closed_url(), _closed_url(), candidates=50)
    homefeed.load()
    return TestClient(rest_app(retrieval, ranking, homefeed))


@pytest.fixture(scope="module")
def users_with_hides(retrieval, offline) -> list[int]:
    """The 20 users who hid the most pins in their online sequence."""
    users = online_users(retrieval.store, list(range(offline["cat"].n_users)), offline["cat"].n_interests)
    hides = np.array([len(h) for h in users.hidden])
    assert hides.max() > 1
    return [int(u) for u in np.argsort(-hides, kind="stable")[:20]]


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket closes


def _predict(client: TestClient, model: str, instances: list[dict]) -> httpx.Response:
    return client.post(f"/v1/models/{model}:predict", json={"instances": instances})


@slow
def test_online_inputs_equal_the_offline_definition(retrieval, offline):
    cat, log, cutoff = offline["cat"], offline["log"], offline["cutoff"]
    ids = np.arange(cat.n_users)
    users = online_users(retrieval.store, ids.tolist(), cat.n_interests)
    seq = log.sequences_at(ids, np.full(len(ids), cutoff))
    np.testing.assert_array_equal(users.segment, cat.user_segment)
    np.testing.assert_array_equal(users.declared, cat.user_declared)
    np.testing.assert_array_equal(users.seq_pin_ids, seq.pin_ids)
    np.testing.assert_array_equal(users.seq_actions, seq.actions)
    np.testing.assert_array_equal(users.seq_ts, seq.ts)
    assert users.hidden == [frozenset(seq.pin_ids[i][seq.actions[i] == HIDE].tolist()) for i in range(len(ids))]
    assert sum(map(len, users.hidden)) > 0

    short = online_users(retrieval.store, ids.tolist(), cat.n_interests, seq_len=RETRIEVAL_SEQ_LEN)
    expected = user_embeddings(retrieval.model, cat, log, ids, np.full(len(ids), cutoff))
    np.testing.assert_allclose(retrieval.user_vectors(short), expected, atol=1e-6)


@slow
def test_ranking_scores_from_online_features_equal_offline_scoring(ranking, offline):
    cat, log, cutoff = offline["cat"], offline["log"], offline["cutoff"]
    rng = np.random.default_rng(0)
    users = rng.choice(cat.n_users, size=12, replace=False)
    corpus = ranking.corpus.pin_id  # ranking scores the pins retrieval can serve
    pins = np.stack([rng.choice(corpus, size=25, replace=False) for _ in users])
    answer = ranking.predict_now(
        {"instances": [{"user_id": int(u), "candidates": p.tolist()} for u, p in zip(users, pins, strict=True)]}
    )

    user_of, pin_ids = np.repeat(users, pins.shape[1]), pins.ravel()
    seq = log.sequences_at(user_of, np.full(len(user_of), cutoff))
    assert seq.lengths.max() > 20  # the sequence (TransAct) part of the model is exercised, not only padding
    examples = {
        "user_id": user_of,
        "segment": cat.user_segment[user_of],
        "pin_id": pin_ids,
        "interest": cat.pin_interest[pin_ids],
        "seq_pin_ids": seq.pin_ids,
        "seq_actions": seq.actions.astype(np.int64),
        "seq_age_h": sequence_age_hours(seq.ts, np.full(len(user_of), cutoff), seq.pin_ids >= 0),
    }
    expected = score(ranking.model, ranking.user_emb, examples).reshape(len(users), pins.shape[1], 3)
    for i, prediction in enumerate(answer["predictions"]):
        assert prediction["user_id"] == users[i] and prediction["unscored"] == []
        assert prediction["mode"] == "personalized" and prediction["reason"] is None
        got = {s["pin_id"]: s for s in prediction["scores"]}
        assert sorted(got) == sorted(pins[i].tolist())
        for j, pin in enumerate(pins[i]):
            heads = [got[pin]["click"], got[pin]["repin"], got[pin]["hide"]]
            np.testing.assert_allclose(heads, expected[i, j], atol=1e-5)
            blend = sum(BLEND[h] * got[pin][h] for h in ("click", "repin", "hide"))
            assert got[pin]["score"] == pytest.approx(blend, abs=1e-6)
        assert [s["score"] for s in prediction["scores"]] == sorted(
            (s["score"] for s in prediction["scores"]), reverse=True
        )


@slow
def test_retrieval_returns_k_candidates_by_user_pin_affinity_without_hidden_pins(
    client, retrieval, offline, users_with_hides
):
    cat, log, cutoff = offline["cat"], offline["log"], offline["cutoff"]
    response = _predict(client, "retrieval", [{"user_id": u, "k": 200} for u in users_with_hides])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    hidden = online_users(retrieval.store, users_with_hides, cat.n_interests).hidden
    user_vecs = user_embeddings(
        retrieval.model, cat, log, np.array(users_with_hides), np.full(len(users_with_hides), cutoff)
    )
    pin_vecs = pin_embeddings(retrieval.model, cat)
    corpus = set(read_corpus(retrieval.index_dir / "corpus")[0].pin_id.tolist())
    for user, prediction, vec, hid in zip(users_with_hides, predictions, user_vecs, hidden, strict=True):
        pins = [c["pin_id"] for c in prediction["candidates"]]
        assert prediction["user_id"] == user and len(pins) == len(set(pins)) == 200
        assert not hid & set(pins) and set(pins) <= corpus
        assert {c["source"] for c in prediction["candidates"]} == {"user_embedding"}
        assert [c["interest_id"] for c in prediction["candidates"]] == cat.pin_interest[pins].tolist()
        np.testing.assert_allclose([c["score"] for c in prediction["candidates"]], pin_vecs[pins] @ vec, atol=1e-5)
    assert sum(p["hidden_excluded"] for p in predictions) > 0  # the exclusion was exercised, not vacuous


@slow
def test_an_interest_filter_returns_every_available_pin_of_those_interests(
    client, retrieval, offline, users_with_hides
):
    cat = offline["cat"]
    sizes = np.bincount(cat.pin_interest, minlength=cat.n_interests)
    small = [int(i) for i in np.argsort(sizes, kind="stable") if sizes[i] > 0][:2]
    user = users_with_hides[0]
    response = _predict(client, "retrieval", [{"user_id": user, "k": 1000, "interests": small}])
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    (hidden,) = online_users(retrieval.store, [user], cat.n_interests).hidden
    corpus, _ = read_corpus(retrieval.index_dir / "corpus")  # what may be served: the corpus, not every pin
    served = corpus.pin_id.to_numpy()
    available = {p for p in served[np.isin(cat.pin_interest[served], small)].tolist() if p not in hidden}
    assert {c["pin_id"] for c in prediction["candidates"]} == available
    assert len(prediction["candidates"]) == len(available) < 1000


RANKING_USER = {"user_id": 1, "candidates": [1, 2, 3]}

BAD_REQUESTS = [
    ("retrieval", {"instances": [{"k": 5}]}, "instances[0].user_id"),
    ("retrieval", {"instances": [{"user_id": "7"}]}, "instances[0].user_id"),
    ("retrieval", {"instances": [{"user_id": 1.5}]}, "instances[0].user_id"),
    ("retrieval", {"instances": [{"user_id": True}]}, "instances[0].user_id"),
    ("retrieval", {"instances": [{"user_id": 1}, {"user_id": 2**63}]}, "instances[1].user_id"),
    ("retrieval", {"instances": [{"user_id": -1}]}, "instances[0].user_id"),
    ("retrieval", {"instances": [{"user_id": 1, "k": 0}]}, "instances[0].k"),
    ("retrieval", {"instances": [{"user_id": 1, "k": 1001}]}, "instances[0].k"),
    ("retrieval", {"instances": [{"user_id": 1, "interests": []}]}, "instances[0].interests"),
    ("retrieval", {"instances": [{"user_id": 1, "interests": [10**4]}]}, "instances[0].interests[0]"),
    ("retrieval", {"instances": []}, "instances"),
    ("retrieval", {"instances": [7]}, "instances[0]"),
    ("retrieval", {"users": [1]}, "instances"),
    ("retrieval", {"instances": [{"user_id": 1, "intrests": [2]}]}, "instances[0].intrests"),
    ("retrieval", {"instances": [{"user_id": 1}], "k": 5}, "k"),
    ("retrieval", {"instances": [{"user_id": 1}] * 257}, "instances"),
    ("ranking", {"instances": [{"user_id": 1}]}, "instances[0].candidates"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": []}]}, "instances[0].candidates"),
    ("ranking", {"instances": [RANKING_USER, {"user_id": 1, "candidates": [5, -1]}]}, "instances[1].candidates[1]"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": [10**7]}]}, "instances[0].candidates[0]"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": ["4"]}]}, "instances[0].candidates[0]"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": [4, 4]}]}, "instances[0].candidates"),
    ("ranking", {"instances": [{"user_id": -3, "candidates": [4]}]}, "instances[0].user_id"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": list(range(1001))}]}, "instances[0].candidates"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": [4], "k": 3}]}, "instances[0].k"),
    ("homefeed", {"instances": [{"n": 3}]}, "instances[0].user_id"),
    ("homefeed", {"instances": [{"user_id": 1, "n": 0}]}, "instances[0].n"),
    ("homefeed", {"instances": [{"user_id": 1, "n": 51}]}, "instances[0].n"),
    ("homefeed", {"instances": [{"user_id": 1, "n": "10"}]}, "instances[0].n"),
    ("homefeed", {"instances": [{"user_id": 1, "interests": [1.5]}]}, "instances[0].interests[0]"),
    ("homefeed", {"instances": [{"user_id": 1, "feed": "home"}]}, "instances[0].feed"),
]


@slow
@pytest.mark.parametrize(("model", "body", "field"), BAD_REQUESTS)
def test_a_bad_request_is_a_400_naming_the_field(client, model, body, field):
    response = client.post(f"/v1/models/{model}:predict", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}:")


def _v2(name: str, data: list, shape: list[int] | None = None, datatype: str = "INT64") -> dict:
    flat = np.asarray(data).ravel().tolist()
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": flat}


def _outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


@slow
def test_v2_requests_get_the_v1_answers_as_tensors(client, users_with_hides):
    users = users_with_hides[:3]
    v1 = _predict(client, "retrieval", [{"user_id": u, "k": 30, "interests": [1, 2]} for u in users]).json()
    interests = [[1, 2]] * len(users)
    body = {"id": "req-7", "inputs": [_v2("user_id", users), _v2("k", [30], [1]), _v2("interests", interests, [3, 2])]}
    response = client.post("/v2/models/retrieval/infer", json=body)
    out = _outputs(response)
    assert response.json()["id"] == "req-7"
    for i, prediction in enumerate(v1["predictions"]):
        n = len(prediction["candidates"])
        assert n > 0 and out["candidates_count"][i] == n
        assert out["pin_id"][i, :n].tolist() == [c["pin_id"] for c in prediction["candidates"]]
        assert (out["pin_id"][i, n:] == -1).all()
        assert out["source"][i, :n].tolist() == [c["source"] for c in prediction["candidates"]]
        np.testing.assert_allclose(out["score"][i, :n], [c["score"] for c in prediction["candidates"]], rtol=1e-6)
        assert out["mode"][i] == prediction["mode"] and out["hidden_excluded"][i] == prediction["hidden_excluded"]

    # ranking: rows right-padded with -1 hold fewer candidates
    padded = np.where(np.arange(20) < [[15], [20], [5]], out["pin_id"][:, :20], -1)
    instances = [{"user_id": u, "candidates": row[row >= 0].tolist()} for u, row in zip(users, padded, strict=True)]
    v1 = _predict(client, "ranking", instances).json()
    body = {"inputs": [_v2("user_id", users), _v2("candidates", padded, [3, 20])]}
    out = _outputs(client.post("/v2/models/ranking/infer", json=body))
    for i, prediction in enumerate(v1["predictions"]):
        n = len(prediction["scores"])
        assert n == len(instances[i]["candidates"]) == out["scores_count"][i]
        assert out["pin_id"][i, :n].tolist() == [s["pin_id"] for s in prediction["scores"]]
        np.testing.assert_allclose(out["repin"][i, :n], [s["repin"] for s in prediction["scores"]], rtol=1e-6)
        assert (out["repin"][i, n:] == 0).all()


V2_BAD = [
    ("retrieval", [_v2("k", [5])], "inputs.user_id"),
    ("retrieval", [_v2("user_id", [1]), _v2("kk", [5])], "inputs.kk"),
    ("retrieval", [_v2("user_id", [1.5], datatype="FP32")], "inputs.user_id"),
    ("retrieval", [_v2("user_id", [1, 2], [3])], "inputs.user_id"),
    ("retrieval", [_v2("user_id", [-1], datatype="UINT8")], "inputs.user_id"),  # out of the type's range (fuzzing)
    ("ranking", [_v2("user_id", [1]), _v2("candidates", [441], datatype="UINT8")], "inputs.candidates"),
    ("retrieval", [_v2("user_id", [1, 2]), _v2("k", [5, 5, 5])], "inputs.k"),
    ("retrieval", [_v2("user_id", [1]), _v2("k", [0])], "instances[0].k"),
    ("ranking", [_v2("user_id", [1]), _v2("candidates", [1, 2])], "inputs.candidates"),
    ("ranking", [_v2("user_id", [1]), _v2("candidates", [[1, 1]], [1, 2])], "instances[0].candidates"),
]


@slow
@pytest.mark.parametrize(("model", "inputs", "field"), V2_BAD)
def test_a_bad_v2_request_is_a_400_naming_the_input(client, model, inputs, field):
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}:")


def _popular(corpus, n: int, interest: int | None = None) -> list[int]:
    """The corpus' `n` best-scored pins (of `interest`), ties by pin id: the definition the fallback must follow."""
    rows = np.arange(len(corpus)) if interest is None else np.flatnonzero(corpus.interest == interest)
    return corpus.pin_id[rows[np.lexsort((corpus.pin_id[rows], -corpus.score[rows]))]][:n].tolist()


@slow
def test_new_users_cold_start_from_popular_pins_of_their_interests(tiny_artifacts, offline, tmp_path):
    """A store built a week into the data has not seen the users who signed up or pins created after then."""
    early = int(offline["events"]["ts"].min()) + 7 * DAY_MS
    build_feature_store(tiny_artifacts["data"], tmp_path / "features", as_of_ts=early)
    ds = Dataset(tiny_artifacts["data"])
    late_user = int(ds.read("users").query("signup_ts >= @early")["user_id"].iloc[0])
    art = tiny_artifacts
    retrieval = retrieval_predictor(art["retrieval"], tmp_path / "features", art["index"])
    ranking = ranking_predictor(art["ranking"], tmp_path / "features", art["index"], "cpu")
    retrieval.load()
    ranking.load()
    client = TestClient(rest_app(retrieval, ranking))
    known = int(ds.read("users").query("signup_ts < @early")["user_id"].iloc[0])
    corpus = retrieval.corpus
    stranger = 10**12  # an id no model or store has seen
    sizes = np.bincount(corpus.interest)
    wanted = [int(i) for i in np.argsort(-sizes, kind="stable")[:2]]  # two interests with at least 10 pins each
    assert sizes[wanted].min() >= 10

    instances = [{"user_id": known, "k": 20}, {"user_id": late_user, "k": 20},
                 {"user_id": stranger, "k": 20, "interests": wanted}]  # fmt: skip
    response = _predict(client, "retrieval", instances)
    assert response.status_code == 200, response.text
    mine, late, new = response.json()["predictions"]
    assert mine["mode"] == "personalized" and late["mode"] == new["mode"] == "cold_start"
    # the stranger's feed: the most popular corpus pins of the interests asked for, alternating between them
    expected = [p for pair in zip(*(_popular(corpus, 10, i) for i in wanted), strict=True) for p in pair]
    assert [c["pin_id"] for c in new["candidates"]] == expected
    assert {c["source"] for c in new["candidates"]} == {f"popular_interest_{i}" for i in wanted}
    # a user the store does not know and who asked for nothing: the most popular pins overall
    assert [c["pin_id"] for c in late["candidates"]] == _popular(corpus, 20)

    outside = int(np.setdiff1d(np.arange(ranking.n_pins), corpus.pin_id)[0])  # a real pin the corpus left out
    pins = [c["pin_id"] for c in mine["candidates"][:5]]
    response = _predict(client, "ranking", [{"user_id": stranger, "candidates": [outside, *pins]},
                                            {"user_id": known, "candidates": pins}])  # fmt: skip
    assert response.status_code == 200, response.text
    cold, warm = response.json()["predictions"]
    assert cold["mode"] == "cold_start" and warm["mode"] == "personalized"
    assert cold["unscored"] == [outside] and warm["unscored"] == []
    assert sorted(s["pin_id"] for s in cold["scores"]) == sorted(pins)
    # the stranger is scored as the average user, not as the known one
    cold_scores = {s["pin_id"]: s["score"] for s in cold["scores"]}
    assert any(abs(cold_scores[s["pin_id"]] - s["score"]) > 1e-6 for s in warm["scores"])


@slow
def test_an_unreachable_upstream_is_a_server_error_that_names_it(client):
    response = _predict(client, "homefeed", [{"user_id": 1}])
    assert response.status_code == 500
    assert "retrieval at http://127.0.0.1:" in response.json()["error"] and "unreachable" in response.json()["error"]


def test_our_command_line_flags_cannot_be_read_by_kserves_parser():
    ours = {
        flag
        for sub in build_parser()._subparsers._group_actions[0].choices.values()
        for flag in sub._option_string_actions
        if flag.startswith("--")
    }
    theirs = set(kserve.model_server.parser._option_string_actions)
    assert {"--model-dir", "--features-dir", "--index-dir", "--http-port", "--retrieval-url"} <= ours
    assert not [(a, b) for a in ours for b in theirs if b.startswith(a)]
    argv = ["retrieval", "--model-dir", "m", "--features-dir", "f", "--index-dir", "i", "--http-port", "9"]
    assert kserve.model_server.parser.parse_known_args(argv)[0] == kserve.model_server.parser.parse_known_args([])[0]


@pytest.fixture(scope="module")
def stack(tiny_stack):
    """The three servers as processes on loopback: the session's (tests/integration/conftest.py)."""
    return tiny_stack


def _post(url: str, model: str, instances: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{model}:predict", json={"instances": instances}, timeout=120)


@slow
def test_homefeed_serves_the_n_best_ranked_candidates_none_of_them_hidden(stack, retrieval, offline, users_with_hides):
    response = _post(stack["homefeed"], "homefeed", [{"user_id": u, "n": 10} for u in users_with_hides])
    assert response.status_code == 200, response.text
    feeds = response.json()["predictions"]
    hidden = online_users(retrieval.store, users_with_hides, offline["cat"].n_interests).hidden
    # the same two hops made directly: retrieval's 200 candidates, ranked, top 10
    found = _post(stack["retrieval"], "retrieval", [{"user_id": u, "k": 200} for u in users_with_hides]).json()
    ranked = _post(
        stack["ranking"],
        "ranking",
        [{"user_id": p["user_id"], "candidates": [c["pin_id"] for c in p["candidates"]]} for p in found["predictions"]],
    ).json()
    for user, feed, hid, top in zip(users_with_hides, feeds, hidden, ranked["predictions"], strict=True):
        pins = [p["pin_id"] for p in feed["pins"]]
        assert feed["user_id"] == user and len(pins) == len(set(pins)) == 10
        assert not hid & set(pins)
        assert [p["score"] for p in feed["pins"]] == sorted((p["score"] for p in feed["pins"]), reverse=True)
        assert pins == [s["pin_id"] for s in top["scores"][:10]]
        assert [p["interest_id"] for p in feed["pins"]] == offline["cat"].pin_interest[pins].tolist()
        assert feed["candidates"] == 200 and feed["unscored"] == len(top["unscored"])
    assert sum(f["hidden_excluded"] for f in feeds) > 0  # hidden pins were among the best candidates, and left out


@slow
def test_homefeed_cold_starts_a_new_user_from_the_interests_they_picked(stack, ranking):
    wanted = [int(i) for i in np.unique(ranking.corpus.interest)[:2]]
    response = _post(stack["homefeed"], "homefeed", [{"user_id": 10**12, "n": 10, "interests": wanted}])
    assert response.status_code == 200, response.text
    (feed,) = response.json()["predictions"]
    assert feed["mode"] == "cold_start" and len(feed["pins"]) == 10
    assert {p["interest_id"] for p in feed["pins"]} <= set(wanted)
    assert {p["source"] for p in feed["pins"]} <= {f"popular_interest_{i}" for i in wanted}
    # ranked by the model (as the average user), not left in popularity order
    assert [p["score"] for p in feed["pins"]] == sorted((p["score"] for p in feed["pins"]), reverse=True)
    assert all(p["repin"] is not None for p in feed["pins"])


@slow
def test_exploration_slots_hold_popular_pins_of_random_interests_after_the_ranked_feed(stack, ranking, tiny_artifacts):
    users = [3, 5, 8, 13]
    explore = homefeed_predictor(stack["retrieval"], stack["ranking"], candidates=200,  # as the stack's homefeed
                                 index_dir=tiny_artifacts["index"], explore=2)  # fmt: skip
    corpus = ranking.corpus
    body = {"instances": [{"user_id": u, "n": 10} for u in users]}
    feeds = asyncio.run(explore.predict(body, {"x-request-id": "explore-1"}))["predictions"]
    again = asyncio.run(explore.predict(body, {"x-request-id": "explore-1"}))["predictions"]
    plain = _post(stack["homefeed"], "homefeed", body["instances"]).json()["predictions"]
    drawn = set()
    for feed, same, ranked in zip(feeds, again, plain, strict=True):
        pins = [p["pin_id"] for p in feed["pins"]]
        assert len(pins) == len(set(pins)) == 10 and feed == same  # a request id draws the same pins again
        head, tail = feed["pins"][:8], feed["pins"][8:]
        # the ranked feed first: its best 8, which the plain feed's best 10 hold (ranking scored 202 candidates here
        # and 200 there, so a near-tie at the cut may round the other way)
        assert {p["pin_id"] for p in head} <= {p["pin_id"] for p in ranked["pins"]}
        assert [p["score"] for p in head] == sorted((p["score"] for p in head), reverse=True)
        assert {p["source"] for p in tail} == {"explore"} and len({p["interest_id"] for p in tail}) == 2
        for p in tail:  # one of the 20 most popular pins of its interest, ranked like any other candidate
            assert p["pin_id"] in _popular(corpus, 20, p["interest_id"]) and p["repin"] is not None
            drawn.add(p["interest_id"])
    assert len(drawn) > 2  # interests drawn afresh for each feed
    with pytest.raises(ValueError, match="serving corpus"):
        homefeed_predictor(stack["retrieval"], stack["ranking"], explore=1)


@slow
def test_homefeed_passes_an_upstream_400_on_with_its_message(stack):
    response = _post(stack["homefeed"], "homefeed", [{"user_id": 1}, {"user_id": 2, "interests": [10**4]}])
    assert response.status_code == 400
    assert response.json()["error"].startswith("retrieval rejected the request: instances[1].interests[0]:")


def _serving_processes() -> dict[int, psutil.Process]:
    found = {}
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "serving" in process.cmdline():
                found[process.pid] = process
    return found


@slow
@pytest.mark.parametrize("body_raises", [False, True])
def test_the_launcher_leaves_no_process_behind(tmp_path, body_raises):
    before = _serving_processes()
    spec = ServerSpec("homefeed", ["homefeed", "--retrieval-url", _closed_url(), "--ranking-url", _closed_url()])
    with contextlib.suppress(RuntimeError), running_servers([spec], tmp_path) as urls:
        started = [p for pid, p in _serving_processes().items() if pid not in before]
        assert len(started) == 1
        assert httpx.get(f"{urls['homefeed']}/v1/models/homefeed").json() == {"name": "homefeed", "ready": True}
        if body_raises:
            raise RuntimeError("the body failed")
    assert not any(p.is_running() for p in started)  # is_running compares start times: a reused pid is not ours
    assert (tmp_path / "homefeed.log").stat().st_size > 0


@slow
def test_the_launcher_reports_a_server_that_dies_while_loading(tmp_path):
    absent = ["--model-dir", str(tmp_path / "absent"), "--features-dir", str(tmp_path), "--index-dir", str(tmp_path)]
    spec = ServerSpec("ranking", ["ranking", *absent])
    with pytest.raises(ServerFailed, match="is not a ranking model directory"), running_servers([spec], tmp_path):
        pass


@slow
@pytest.mark.parametrize(("field", "value", "said"), [
    (("sequence", "seq_len"), 50, r"built for sequence length 50 \(this server: 100\)"),
    (("n_segments",), 5, r"built for segments 5 \(this server: 4\)"),
])  # fmt: skip
def test_a_ranking_model_built_for_another_contract_is_refused_at_load(tiny_artifacts, tmp_path, field, value, said):
    model_dir = shutil.copytree(tiny_artifacts["ranking"], tmp_path / "ranking")
    config = json.loads((model_dir / "config.json").read_text())
    *path, name = field
    target = config
    for key in path:
        target = target[key]
    target[name] = value
    (model_dir / "config.json").write_text(json.dumps(config))
    predictor = ranking_predictor(model_dir, tiny_artifacts["features"], tiny_artifacts["index"], "cpu")
    with pytest.raises(ValueError, match=said):
        predictor.load()
    assert not predictor.ready


def test_the_in_process_app_has_kserves_health_and_the_predictors_metrics(client):
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v2/health/ready").status_code == 200
    client.post("/v1/models/retrieval:predict", json={"instances": [{"user_id": 0, "k": 5}]})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'homefeed_stage_seconds_count{model="retrieval"' in metrics.text
