"""The KServe predictors on the tiny world's artifacts: online inputs against their offline definition, retrieval and
ranking in-process through FastAPI's TestClient on the model server's REST app, every kind of bad input as a 400,
and the homefeed over real loopback processes started by the launcher."""

from __future__ import annotations

import contextlib
import shutil
import socket

import httpx
import kserve.model_server
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from components.data.dataset import Dataset
from components.features.sequence import ActionLog
from components.features.store import build_feature_store
from components.index.corpus import read_corpus
from components.train.examples import RETRIEVAL_SEQ_LEN, Catalog, sequence_age_hours
from components.train.ranking import score
from components.train.retrieval import pin_embeddings, user_embeddings
from models.ranking.pinnability import BLEND
from serving.__main__ import build_parser
from serving.launcher import ServerFailed, ServerSpec, homefeed_specs, running_servers
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
    model = ranking_predictor(tiny_artifacts["ranking"], tiny_artifacts["features"], device="cpu")
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
    pins = np.stack([rng.choice(offline["pins"], size=25, replace=False) for _ in users])
    answer = ranking.predict(
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
    ("retrieval", {"instances": [{"user_id": 1}, {"user_id": 10**6}]}, "instances[1].user_id"),
    ("retrieval", {"instances": [{"user_id": -1}]}, "instances[0].user_id"),
    ("retrieval", {"instances": [{"user_id": 1, "k": 0}]}, "instances[0].k"),
    ("retrieval", {"instances": [{"user_id": 1, "k": 1001}]}, "instances[0].k"),
    ("retrieval", {"instances": [{"user_id": 1, "interests": []}]}, "instances[0].interests"),
    ("retrieval", {"instances": [{"user_id": 1, "interests": [10**4]}]}, "instances[0].interests[0]"),
    ("retrieval", {"instances": []}, "instances"),
    ("retrieval", {"instances": [7]}, "instances[0]"),
    ("retrieval", {"users": [1]}, "instances"),
    ("ranking", {"instances": [{"user_id": 1}]}, "instances[0].candidates"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": []}]}, "instances[0].candidates"),
    ("ranking", {"instances": [RANKING_USER, {"user_id": 1, "candidates": [5, -1]}]}, "instances[1].candidates[1]"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": [10**7]}]}, "instances[0].candidates[0]"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": ["4"]}]}, "instances[0].candidates[0]"),
    ("ranking", {"instances": [{"user_id": 1, "candidates": [4, 4]}]}, "instances[0].candidates"),
    ("ranking", {"instances": [{"user_id": 10**6, "candidates": [4]}]}, "instances[0].user_id"),
    ("homefeed", {"instances": [{"n": 3}]}, "instances[0].user_id"),
    ("homefeed", {"instances": [{"user_id": 1, "n": 0}]}, "instances[0].n"),
    ("homefeed", {"instances": [{"user_id": 1, "n": 51}]}, "instances[0].n"),
    ("homefeed", {"instances": [{"user_id": 1, "n": "10"}]}, "instances[0].n"),
]


@slow
@pytest.mark.parametrize(("model", "body", "field"), BAD_REQUESTS)
def test_a_bad_request_is_a_400_naming_the_field(client, model, body, field):
    response = client.post(f"/v1/models/{model}:predict", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}:")


@slow
@pytest.mark.parametrize("model", ["retrieval", "ranking"])
def test_a_v2_request_is_a_400_that_says_v1_is_spoken(client, model):
    body = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
    response = client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 400, response.text
    assert f"/v1/models/{model}:predict" in response.json()["error"]


@slow
def test_unknown_users_are_400s_and_unknown_candidates_are_reported_unscored(tiny_artifacts, offline, tmp_path):
    """A store built a week into the data has not seen the users who signed up or pins created after then."""
    early = int(offline["events"]["ts"].min()) + 7 * DAY_MS
    build_feature_store(tiny_artifacts["data"], tmp_path / "features", as_of_ts=early)
    ds = Dataset(tiny_artifacts["data"])
    late_user = int(ds.read("users").query("signup_ts >= @early")["user_id"].iloc[0])
    late_pin = int(ds.read("pins").query("created_ts >= @early")["pin_id"].iloc[0])
    retrieval = retrieval_predictor(tiny_artifacts["retrieval"], tmp_path / "features", tiny_artifacts["index"])
    ranking = ranking_predictor(tiny_artifacts["ranking"], tmp_path / "features", device="cpu")
    retrieval.load()
    ranking.load()
    client = TestClient(rest_app(retrieval, ranking))
    known = int(ds.read("users").query("signup_ts < @early")["user_id"].iloc[0])
    old_pin = int(ds.read("pins").query("created_ts < @early")["pin_id"].iloc[0])

    response = _predict(client, "retrieval", [{"user_id": known}, {"user_id": late_user}])
    assert response.status_code == 400
    assert response.json()["error"] == f"instances[1].user_id: user {late_user} has no online features"
    response = _predict(client, "ranking", [{"user_id": late_user, "candidates": [old_pin]}])
    assert response.status_code == 400
    assert response.json()["error"] == f"instances[0].user_id: user {late_user} has no online features"
    response = _predict(client, "ranking", [{"user_id": known, "candidates": [late_pin, old_pin]}])
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["unscored"] == [late_pin] and [s["pin_id"] for s in prediction["scores"]] == [old_pin]


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
def stack(tiny_artifacts, tmp_path_factory):
    """The three servers as processes on loopback; retrieval reads a copy of the index (this process locks it)."""
    root = tmp_path_factory.mktemp("stack")
    index = shutil.copytree(tiny_artifacts["index"], root / "index", ignore=shutil.ignore_patterns("LOCK"))
    art = tiny_artifacts
    specs = homefeed_specs(art["retrieval"], art["ranking"], art["features"], index, candidates=200, device="cpu")
    with running_servers(specs, root / "logs") as urls:
        yield urls


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
def test_homefeed_passes_an_upstream_400_on_with_its_message(stack):
    response = _post(stack["homefeed"], "homefeed", [{"user_id": 1}, {"user_id": 10**6}])
    assert response.status_code == 400
    assert response.json()["error"].startswith("retrieval rejected the request: instances[1].user_id:")


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
    spec = ServerSpec("ranking", ["ranking", "--model-dir", str(tmp_path / "absent"), "--features-dir", str(tmp_path)])
    with pytest.raises(ServerFailed, match="is not a ranking model directory"), running_servers([spec], tmp_path):
        pass
