"""The pin index on real Milvus Lite: in-process (`.db` uri) and as a `milvus-lite server` reached over gRPC."""

import numpy as np
import pytest

from components.data.dataset import Dataset
from components.index import build_index, count, search
from components.index.client import client_for
from components.index.servers import local_milvus

pytestmark = pytest.mark.integration

K = 10


@pytest.fixture(scope="module")
def pins(tiny_world):
    return Dataset(tiny_world).read("pins")


def _embeddings(pins) -> np.ndarray:
    return np.stack(pins.embedding.to_numpy())


def _build(uri, pins, collection="pins"):
    return build_index(
        uri,
        collection,
        pins.pin_id.to_numpy(),
        _embeddings(pins),
        pins.interest_id.to_numpy(),
        pins.image_signature_coarse.to_numpy(),
        pins.created_ts.to_numpy(),
        hnsw={"M": 16, "efConstruction": 128},
    )


@pytest.fixture(scope="module")
def index(pins, tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("index") / "milvus.db")
    built = _build(uri, pins)
    return uri, built


def test_count_is_the_number_of_pins(index, pins):
    uri, built = index
    assert built == len(pins) == 2000
    assert count(uri, "pins") == len(pins)
    client = client_for(uri)
    assert client.describe_index("pins", "embedding")["index_type"] == "HNSW"
    fields = {f["name"]: f for f in client.describe_collection("pins")["fields"]}
    assert fields["interest_id"].get("is_partition_key") is True


def test_a_pins_own_embedding_finds_that_pin_first(index, pins):
    uri, _ = index
    emb = _embeddings(pins)
    # exact re-pins share an embedding, so only pins whose vector is unique have one right answer
    _, first, times = np.unique(emb, axis=0, return_index=True, return_counts=True)
    rows = first[times == 1][:25]
    results = search(uri, "pins", emb[rows], k=K)
    assert [hits[0]["pin_id"] for hits in results] == pins.pin_id.to_numpy()[rows].tolist()
    assert all(abs(hits[0]["score"] - 1.0) < 1e-4 for hits in results)  # unit vectors: IP with itself is 1
    assert all(len(hits) == K for hits in results)


def test_an_interest_filter_returns_only_pins_of_that_interest(index, pins):
    uri, _ = index
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((8, 32)).astype(np.float32)
    interest_of = dict(zip(pins.pin_id, pins.interest_id, strict=True))
    sizes = pins.interest_id.value_counts()
    for interest in sizes.index[[0, len(sizes) // 2, -1]]:  # the largest, a middle and the smallest interest
        results = search(uri, "pins", queries, k=K, interests=[int(interest)])
        for hits in results:
            assert len(hits) == min(K, sizes[interest])
            assert {interest_of[h["pin_id"]] for h in hits} == {interest}
            assert {h["interest_id"] for h in hits} == {interest}
    two = [int(sizes.index[0]), int(sizes.index[-1])]
    hits = search(uri, "pins", queries[:1], k=50, interests=two)[0]
    assert {interest_of[h["pin_id"]] for h in hits} == set(two)


def test_ann_agrees_with_exact_inner_product_top_10(index, pins):
    uri, _ = index
    emb = _embeddings(pins)
    ids = pins.pin_id.to_numpy()
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((50, emb.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = queries @ emb.T
    results = search(uri, "pins", queries, k=K, ef=64)
    score_of = [dict(zip(ids, row, strict=True)) for row in exact]
    tenth = np.sort(exact, axis=1)[:, -K]
    # A hit is right when its exact score reaches the 10th best: identical re-pin embeddings tie, and either is right.
    recall = np.mean(
        [sum(score_of[q][h["pin_id"]] >= tenth[q] - 1e-5 for h in hits) / K for q, hits in enumerate(results)]
    )
    print(f"HNSW recall@10 against exact inner product on 50 queries: {recall:.3f}")
    assert recall >= 0.9
    for q, hits in enumerate(results):  # the returned scores are the real inner products, best first
        assert np.allclose([h["score"] for h in hits], [score_of[q][h["pin_id"]] for h in hits], atol=1e-5)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_bad_input_is_refused_with_the_argument_named(index, pins, tmp_path):
    uri, _ = index
    emb = _embeddings(pins)
    with pytest.raises(ValueError, match="interest_ids has 1999 values but embeddings has 2000 rows"):
        build_index(
            str(tmp_path / "bad.db"),
            "pins",
            pins.pin_id.to_numpy(),
            emb,
            pins.interest_id.to_numpy()[:-1],
            pins.image_signature_coarse.to_numpy(),
            pins.created_ts.to_numpy(),
        )
    with pytest.raises(ValueError, match="queries have dimension 16, but the index stores 32-d embeddings"):
        search(uri, "pins", emb[:3, :16], k=K)
    with pytest.raises(ValueError, match="ef must be at least k"):
        search(uri, "pins", emb[:3], k=K, ef=5)
    assert count(uri, "pins") == len(pins)  # nothing was touched by the refused calls


@pytest.fixture
def lite_server(tmp_path):
    with local_milvus(tmp_path / "data") as uri:
        yield uri


def test_the_same_functions_work_against_a_milvus_lite_server(lite_server, pins):
    some = pins.iloc[:300]
    assert _build(lite_server, some, collection="pins_remote") == 300
    assert count(lite_server, "pins_remote") == 300
    hits = search(lite_server, "pins_remote", _embeddings(some)[:1], k=5)[0]
    assert hits[0]["pin_id"] == some.pin_id.iloc[0] and len(hits) == 5
