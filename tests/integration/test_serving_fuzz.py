"""Property-based fuzzing of the three REST endpoints, v1 and v2: whatever a client sends, the answer is never a 5xx.
Bodies are drawn from arbitrary JSON, from near-valid instances (real field names with values of any type, ids
around the real ranges, so many requests are valid and go all the way through retrieval and ranking) and from v2
tensors with any name, shape, datatype and data.

Most bodies go to the servers' REST application built in this process (`serving.server.rest_app`, the app
`python -m serving` runs, through FastAPI's TestClient), with retrieval and ranking loaded here and homefeed calling
the session's real retrieval and ranking servers; fewer go over loopback to the session's real servers
(tests/integration/conftest.py), which adds what only a server has: its HTTP parsing and the processes' own state.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.server import homefeed_predictor, ranking_predictor, rest_app, retrieval_predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ("retrieval", "ranking", "homefeed")
FIELDS = ("user_id", "k", "n", "interests", "candidates")
EXAMPLES = 60  # bodies per model and protocol, in this process
HTTP_EXAMPLES = 12  # bodies per model and protocol, over loopback

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids = st.integers(min_value=-3, max_value=3000)  # the tiny world's users, pins and interests, and a little beyond
field_values = ids | st.lists(ids, max_size=6) | json_values
instances = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), field_values, max_size=4)
v1_bodies = (
    st.fixed_dictionaries({"instances": st.lists(instances, max_size=4)})
    | st.fixed_dictionaries({"instances": json_values})
    | json_values
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(FIELDS) | st.text(max_size=6),
        "shape": st.lists(st.integers(min_value=-1, max_value=6), max_size=3),
        "datatype": st.sampled_from(["INT64", "INT32", "UINT8", "FP32", "BYTES", "BOOL", "NOPE"]),
        "data": st.lists(ids | scalars | st.lists(ids, max_size=3), max_size=8),
    }
)
v2_bodies = st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=3)}) | json_values


@pytest.fixture(scope="module")
def in_process(tiny_artifacts, tiny_stack):
    """(path -> response) on the REST app built in this process; a server error comes back as the 500 it would be."""
    art = tiny_artifacts
    retrieval = retrieval_predictor(art["retrieval"], art["features"], art["index"])
    ranking = ranking_predictor(art["ranking"], art["features"], art["index"], "cpu")
    homefeed = homefeed_predictor(tiny_stack["retrieval"], tiny_stack["ranking"], candidates=50)
    for model in (retrieval, ranking, homefeed):
        model.load()
    with TestClient(rest_app(retrieval, ranking, homefeed), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def over_http(tiny_stack):
    with httpx.Client(timeout=60) as client:
        yield tiny_stack, client


def _check(response: httpx.Response, body) -> None:
    assert response.status_code < 500, f"{response.status_code} for {body!r}: {response.text[:500]}"
    if response.status_code == 200:
        response.json()  # a success is a JSON answer
    else:  # a refusal says why: ours and KServe's as "error", FastAPI's schema validation (422) as "detail"
        answer = response.json()
        assert answer.get("error") or answer.get("detail"), answer


PROTOCOLS = {"v1": ("/v1/models/{}:predict", v1_bodies), "v2": ("/v2/models/{}/infer", v2_bodies)}


def _fuzz(post, path: str, bodies, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies)
    def check(body):
        _check(post(path, json=body), body)

    check()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", MODELS)
def test_no_body_gets_a_server_error(in_process, model, protocol):
    path, bodies = PROTOCOLS[protocol]
    _fuzz(in_process.post, path.format(model), bodies, EXAMPLES)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", MODELS)
def test_no_body_gets_a_server_error_from_the_real_servers(over_http, model, protocol):
    urls, client = over_http
    path, bodies = PROTOCOLS[protocol]
    _fuzz(client.post, urls[model] + path.format(model), bodies, HTTP_EXAMPLES)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("raw", [b"", b"not json", b'{"instances": [', b"\xff\xfe", b"[1, 2]", b"null"])
def test_a_body_that_is_not_a_json_object_is_a_client_error(over_http, model, raw):
    found, client = over_http
    for path, _ in PROTOCOLS.values():
        url = found[model] + path.format(model)
        response = client.post(url, content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, f"{url}: {response.status_code} {response.text[:300]}"
