"""Versioned pin collections behind an alias, on real Milvus Lite: publish, swap, retire, refuse a bad index, and
keep answering searches on the alias while a new version is built and swapped in."""

import re
import threading
import time

import numpy as np
import pytest

# pytest puts this folder on sys.path (rootdir-relative "prepend" imports, no __init__.py): the sibling module is
# importable by its bare name, under `pytest` as well as `python -m pytest`.
from test_milvus_index import lite_server  # noqa: F401  (the milvus-lite server fixture)

from components.index import milvus
from components.index.client import client_for
from components.index.versions import RecallCheckFailed, live_collection, publish_version, versions

pytestmark = pytest.mark.integration

DIM = 32
K = 10
V2_IDS = 10_000  # each version's pin ids start at a multiple of this, so a hit names its version
CHEAP_HNSW = {"M": 8, "efConstruction": 64}  # quick to build, and its recall on these pins still passes 0.95


def _corpus(n: int, first_id: int, seed: int, interests: int = 20, dim: int = DIM) -> tuple:
    """n seeded unit vectors with ids first_id.., spread over `interests` interests: build_index's five columns."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return ids, emb, ids % interests, ids * 7, 1_700_000_000_000 + ids


def _publish(uri, version: int, n: int = 2000, **kwargs) -> dict:
    """Publish corpus number `version` (ids from (version - 1) * V2_IDS) as the next version of base "pins"."""
    kwargs.setdefault("hnsw", CHEAP_HNSW)
    return publish_version(uri, "pins", *_corpus(n, (version - 1) * V2_IDS, seed=version), **kwargs)


def _queries(n: int = 4, seed: int = 99) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _version_of(pin_id: int) -> int:
    return pin_id // V2_IDS + 1


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two versions published in turn at one uri; read-only for the tests that use it."""
    uri = str(tmp_path_factory.mktemp("versions") / "milvus.db")
    return uri, _publish(uri, 1), _publish(uri, 2)


def test_the_first_publish_creates_v1_and_the_alias(published):
    uri, first, _ = published
    assert first["collection"] == "pins_v1" and first["version"] == 1
    assert first["alias"] == "pins_live" and first["previous"] is None and first["dropped"] == []
    assert first["count"] == 2000 and first["recall_k"] == 100
    assert 0.95 <= first["recall"] <= 1.0


def test_the_second_publish_creates_v2_and_moves_the_alias(published):
    uri, _, second = published
    assert second["collection"] == "pins_v2" and second["version"] == 2
    assert second["previous"] == "pins_v1" and second["dropped"] == []  # keep=2: v1 stays for a rollback
    assert live_collection(uri, "pins_live") == "pins_v2"
    assert versions(uri, "pins") == ["pins_v1", "pins_v2"]
    assert client_for(uri).describe_alias("pins_live")["collection_name"] == "pins_v2"


def test_search_and_count_on_the_alias_see_the_live_version_only(published):
    uri, _, _ = published
    results = milvus.search(uri, "pins_live", _queries(), k=50)
    assert all(len(hits) == 50 for hits in results)
    assert {_version_of(h["pin_id"]) for hits in results for h in hits} == {2}
    # the old version is still there, by its own name, until it is retired
    old = milvus.search(uri, "pins_v1", _queries(), k=50)
    assert {_version_of(h["pin_id"]) for hits in old for h in hits} == {1}
    assert milvus.count(uri, "pins_live") == 2000


def test_a_third_publish_retires_the_oldest_but_never_the_live_one(tmp_path):
    uri = str(tmp_path / "milvus.db")
    for v in (1, 2):
        _publish(uri, v, n=300)
    third = _publish(uri, 3, n=300)
    assert third["collection"] == "pins_v3" and third["previous"] == "pins_v2"
    assert third["dropped"] == ["pins_v1"]
    assert versions(uri, "pins") == ["pins_v2", "pins_v3"]
    assert "pins_v1" not in client_for(uri).list_collections()
    hits = milvus.search(uri, "pins_live", _queries(), k=K)
    assert {_version_of(h["pin_id"]) for per_query in hits for h in per_query} == {3}


@pytest.mark.slow
def test_retiring_spares_a_version_that_another_alias_points_to(tmp_path):
    # Milvus Lite would silently drop the alias with its collection (Milvus refuses): the canary must keep serving.
    uri = str(tmp_path / "milvus.db")
    _publish(uri, 1, n=300)
    client_for(uri).create_alias("pins_v1", "pins_canary")
    second = _publish(uri, 2, n=300, keep=1)
    assert second["previous"] == "pins_v1" and second["dropped"] == []
    assert versions(uri, "pins") == ["pins_v1", "pins_v2"]
    assert live_collection(uri, "pins_live") == "pins_v2" and live_collection(uri, "pins_canary") == "pins_v1"
    client_for(uri).drop_alias("pins_canary")
    third = _publish(uri, 3, n=300, keep=1)  # keep=1: only the live version is left
    assert third["dropped"] == ["pins_v1", "pins_v2"] and versions(uri, "pins") == ["pins_v3"]


def test_a_swap_to_another_dimension_is_seen_by_searches_on_the_alias(tmp_path):
    # This process caches the alias' dimension on its first search; the swap must not leave the old one behind.
    uri = str(tmp_path / "milvus.db")
    _publish(uri, 1, n=300)
    assert len(milvus.search(uri, "pins_live", _queries(), k=K)[0]) == K  # caches 32 under the alias' name
    publish_version(uri, "pins", *_corpus(300, V2_IDS, seed=2, dim=16), hnsw=CHEAP_HNSW)
    queries = _queries()[:, :16] / np.linalg.norm(_queries()[:, :16], axis=1, keepdims=True)
    hits = milvus.search(uri, "pins_live", queries, k=K)
    assert {_version_of(h["pin_id"]) for per_query in hits for h in per_query} == {2}
    with pytest.raises(ValueError, match="queries have dimension 32, but the index stores 16-d embeddings"):
        milvus.search(uri, "pins_live", _queries(), k=K)


def test_searches_on_the_alias_never_fail_while_a_new_version_is_swapped_in(tmp_path):
    uri = str(tmp_path / "milvus.db")
    _publish(uri, 1)
    log: list[tuple[float, list[set[int]] | None, Exception | None]] = []  # (start, versions per query, error)
    stop = threading.Event()

    def reader():
        queries = _queries()
        while not stop.is_set():
            start = time.monotonic()
            try:
                results = milvus.search(uri, "pins_live", queries, k=K)
                assert all(len(hits) == K for hits in results), [len(hits) for hits in results]
                log.append((start, [{_version_of(h["pin_id"]) for h in hits} for hits in results], None))
            except Exception as e:  # recorded, not raised: the thread must keep searching through the swap
                log.append((start, None, e))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: len(log) >= 3)
        publish_started = time.monotonic()
        result = _publish(uri, 2)
        published = time.monotonic()
        _wait_for(lambda: sum(start > published for start, _, _ in log) >= 3)
    finally:
        stop.set()
        thread.join(timeout=30)

    errors = [e for _, _, e in log if e is not None]
    assert errors == []
    assert result["previous"] == "pins_v1" and result["collection"] == "pins_v2"
    # each search resolved the alias once: all its queries came from one version
    per_search = [set.union(*found) for _, found, _ in log]
    assert all(len(found) == 1 for found in per_search)
    before = [found for (start, _, _), found in zip(log, per_search, strict=True) if start < publish_started]
    during = [
        found for (start, _, _), found in zip(log, per_search, strict=True) if publish_started <= start <= published
    ]
    after = [found for (start, _, _), found in zip(log, per_search, strict=True) if start > published]
    assert before and all(found == {1} for found in before)
    assert during, "no search ran while the new version was being built"
    assert after and all(found == {2} for found in after)
    print(f"{len(log)} searches on the alias, {len(during)} during the publish; none failed")


def test_a_version_that_fails_the_recall_check_is_dropped_and_the_alias_stays(tmp_path):
    uri = str(tmp_path / "milvus.db")
    _publish(uri, 1, n=300)
    # A sparse graph (M=2, efConstruction=8) over 2,000 pins in one interest (so one HNSW graph), searched with the
    # narrowest breadth ef=k: it misses some true neighbours, so it cannot reach recall 1.0.
    ids, emb, _, signatures, created = _corpus(2000, V2_IDS, seed=2)
    with pytest.raises(RecallCheckFailed, match=r"recall@10 of 'pins_v2' is 0\.\d+, below min_recall 1\.0") as err:
        publish_version(
            uri,
            "pins",
            ids,
            emb,
            np.zeros_like(ids),
            signatures,
            created,
            hnsw={"M": 2, "efConstruction": 8},
            recall_k=K,
            ef=K,
            min_recall=1.0,
        )
    recall = float(re.search(r"is (0\.\d+)", str(err.value)).group(1))
    print(f"the sparse index' recall@{K}: {recall}")
    assert 0.5 < recall < 1.0
    assert isinstance(err.value, ValueError)
    assert "pins_v2" not in client_for(uri).list_collections()
    assert versions(uri, "pins") == ["pins_v1"]
    assert live_collection(uri, "pins_live") == "pins_v1"
    hits = milvus.search(uri, "pins_live", _queries(), k=K)
    assert {_version_of(h["pin_id"]) for per_query in hits for h in per_query} == {1}
    # the number is free again: the next good publish is v2
    assert _publish(uri, 2, n=300)["collection"] == "pins_v2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": "2pins"}, "base must be a Milvus name"),
        ({"base": "pins-v"}, "base must be a Milvus name"),
        ({"alias": "live alias"}, "alias must be a Milvus name"),
        ({"alias": "pins_v7"}, "alias 'pins_v7' looks like a version of 'pins'"),
        ({"min_recall": 0}, r"min_recall must be in \(0, 1\], got 0"),
        ({"min_recall": 1.5}, r"min_recall must be in \(0, 1\], got 1.5"),
        ({"recall_sample": 0}, "recall_sample must be an integer >= 1, got 0"),
        ({"keep": 0}, "keep must be an integer >= 1, got 0"),
        ({"recall_k": 0}, "recall_k must be an integer >= 1, got 0"),
        ({"ef": 5}, r"ef must be at least the recall check's k = min\(recall_k, pins\) = 100, got 5"),
        ({"alias": "pins_v1", "base": "other"}, "alias 'pins_v1' is the name of an existing collection"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(published, kwargs, message):
    uri, _, _ = published
    kwargs = {"base": "pins", **kwargs}
    with pytest.raises(ValueError, match=message):
        publish_version(uri, kwargs.pop("base"), *_corpus(300, 50 * V2_IDS, seed=5), **kwargs)
    assert versions(uri, "pins") == ["pins_v1", "pins_v2"] and versions(uri, "other") == []
    assert live_collection(uri, "pins_live") == "pins_v2"


def test_live_collection_names_a_missing_alias(published):
    uri, _, _ = published
    with pytest.raises(ValueError, match="alias 'nope_live' does not exist"):
        live_collection(uri, "nope_live")
    assert versions(uri, "nope") == []


def test_publish_and_swap_work_against_a_milvus_lite_server(lite_server):  # noqa: F811
    first = _publish(lite_server, 1, n=300)
    second = _publish(lite_server, 2, n=300)
    assert (first["collection"], second["collection"], second["previous"]) == ("pins_v1", "pins_v2", "pins_v1")
    assert live_collection(lite_server, "pins_live") == "pins_v2"
    assert milvus.count(lite_server, "pins_live") == 300
    hits = milvus.search(lite_server, "pins_live", _queries(), k=K)
    assert {_version_of(h["pin_id"]) for per_query in hits for h in per_query} == {2}
