"""Property-based fuzzing of the three REST endpoints, v1 and v2, on real servers (the launcher's processes on
loopback, the tiny world's artifacts): whatever a client sends, the answer is never a 5xx. Bodies are drawn from
arbitrary JSON, from near-valid instances (real field names with values of any type, ids around the real ranges,
so many requests are valid and go all the way through retrieval and ranking) and from v2 tensors with any name,
shape, datatype and data."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import serving_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ("retrieval", "ranking", "homefeed")
FIELDS = ("user_id", "k", "n", "interests", "candidates")
EXAMPLES = 60

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
def urls(tiny_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    with serving_stack(tiny_artifacts, root, candidates=50) as found, httpx.Client(timeout=60) as client:
        yield found, client


def _check(response: httpx.Response, body) -> None:
    assert response.status_code < 500, f"{response.status_code} for {body!r}: {response.text[:500]}"
    if response.status_code == 200:
        response.json()  # a success is a JSON answer
    else:  # a refusal says why: ours and KServe's as "error", FastAPI's schema validation (422) as "detail"
        answer = response.json()
        assert answer.get("error") or answer.get("detail"), answer


PROTOCOLS = {"v1": ("/v1/models/{}:predict", v1_bodies), "v2": ("/v2/models/{}/infer", v2_bodies)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", MODELS)
def test_no_body_gets_a_server_error(urls, model, protocol):
    found, client = urls
    path, bodies = PROTOCOLS[protocol]
    url = found[model] + path.format(model)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies)
    def check(body):
        _check(client.post(url, json=body), body)

    check()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("raw", [b"", b"not json", b'{"instances": [', b"\xff\xfe", b"[1, 2]", b"null"])
def test_a_body_that_is_not_a_json_object_is_a_client_error(urls, model, raw):
    found, client = urls
    for path, _ in PROTOCOLS.values():
        url = found[model] + path.format(model)
        response = client.post(url, content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, f"{url}: {response.status_code} {response.text[:300]}"
