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

import json
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.server import homefeed_predictor, ranking_predictor, rest_app, retrieval_predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ("retrieval", "ranking", "homefeed")
FIELDS = ("user_id", "k", "n", "interests", "candidates")
# Bodies per model and protocol, in this process and over loopback: 6 x (150 + 12) = 972 generated bodies, and the
# 36 fixed ones of the last test: over a thousand cases, the same ones on every run (derandomized: seeded by the
# test itself), so a failure found once is found again.
EXAMPLES = 150
HTTP_EXAMPLES = 12

# Text with lone surrogates too (JSON's "\\ud800" escape: valid JSON, invalid UTF-8), floats with the infinities
# (Python's json writes them as Infinity, which some JSON readers take), integers well past 64 bits.
text = st.text(alphabet=st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
               max_size=8)  # fmt: skip
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ids = st.integers(min_value=-3, max_value=3000)  # the tiny world's users, pins and interests, and a little beyond
field_values = ids | st.lists(ids, max_size=6) | json_values
instances = st.dictionaries(st.sampled_from(FIELDS) | text, field_values, max_size=4)
# Instances each model reads, with values in and around the valid ranges: these get past the parser to the model
# (and, for the homefeed, to retrieval and ranking) often enough to fuzz more than the validation.
_small = st.integers(min_value=-1, max_value=60)
_pins = st.lists(ids, min_size=1, max_size=6, unique=True)
NEAR_VALID = {
    "retrieval": st.fixed_dictionaries(
        {"user_id": ids}, optional={"k": _small, "interests": st.lists(_small, max_size=3)}
    ),
    "ranking": st.fixed_dictionaries({"user_id": ids, "candidates": _pins}),
    "homefeed": st.fixed_dictionaries(
        {"user_id": ids}, optional={"n": _small, "interests": st.lists(_small, max_size=3)}
    ),
}
v1_bodies = (
    st.fixed_dictionaries({"instances": st.lists(instances, max_size=4)})
    | st.fixed_dictionaries({"instances": json_values})
    | json_values
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(FIELDS) | text,
        "shape": st.lists(st.integers(min_value=-1, max_value=6), max_size=3),
        "datatype": st.sampled_from(["INT64", "INT32", "UINT8", "UINT64", "INT8", "FP32", "BYTES", "BOOL", "NOPE"]),
        "data": st.lists(ids | scalars | st.lists(ids, max_size=3), max_size=8),
    }
)
v2_bodies = (
    st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=3)})
    | st.fixed_dictionaries({"id": text, "inputs": st.lists(tensors, max_size=3)})
    | json_values
)


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


def _fuzz(post, path: str, bodies, examples: int) -> Counter:
    """Post `examples` generated bodies to `path`; the status codes seen, counted."""
    seen: Counter = Counter()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])  # fmt: skip
    @given(body=bodies)
    def check(body):
        # encoded here: json.dumps escapes lone surrogates and writes the infinities, as a careless client would
        raw = json.dumps(body).encode()
        response = post(path, content=raw, headers={"content-type": "application/json"})
        _check(response, body)
        seen[response.status_code] += 1

    check()
    assert sum(seen.values()) >= examples, seen  # every example ran: none was filtered or skipped
    return seen


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", MODELS)
def test_no_body_gets_a_server_error(in_process, model, protocol):
    path, bodies = PROTOCOLS[protocol]
    if protocol == "v1":
        bodies = st.fixed_dictionaries({"instances": st.lists(NEAR_VALID[model], min_size=1, max_size=3)}) | bodies
    seen = _fuzz(in_process.post, path.format(model), bodies, EXAMPLES)
    if protocol == "v1":  # near-valid instances: some go all the way through, not all stop at the parser
        assert seen[200] > 0, seen


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
