"""The ANN bench's own pieces: the exact baseline it compares against and its recall count."""

import numpy as np
import pytest

from bench.ann import DIM, INTERESTS, Exact, K, corpus, filter_interests, recall_at_k, user_queries

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data():
    emb, interests, centroids = corpus(3000, seed=0)
    return emb, interests, centroids


def test_corpus_is_unit_vectors_in_every_interest_and_seeded(data):
    emb, interests, centroids = data
    assert emb.shape == (3000, DIM) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert set(interests.tolist()) == set(range(INTERESTS))
    again, _, _ = corpus(3000, seed=0)
    assert np.array_equal(emb, again)


def test_exact_topk_matches_a_full_sort_unfiltered_and_filtered(data):
    emb, interests, centroids = data
    queries = user_queries(centroids, 5, np.random.default_rng(1))
    exact = Exact(emb, interests)
    for flt in (None, [3], [1, 2, 5]):
        rows = np.arange(len(emb)) if flt is None else np.flatnonzero(np.isin(interests, flt))
        want = rows[np.argsort(-(emb[rows] @ queries.T), axis=0)[:K].T]
        # Compared by score, rank by rank: the two sides multiply matrices of other shapes, so BLAS may round a
        # near-tie the other way on another CPU and swap two pins whose scores agree to float32 rounding.
        for got in (exact.topk(queries, K, flt), exact.topk(queries[:1], K, flt)):  # a single query: the same answer
            assert set(got.ravel()) <= set(rows.tolist())
            np.testing.assert_allclose(_scores(emb, got, queries), _scores(emb, want[: len(got)], queries), atol=1e-6)


def _scores(emb: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[Q, k] inner products of each query with its ranked pins."""
    return np.einsum("qkd,qd->qk", emb[ids], queries[: len(ids)])


def test_recall_counts_hits_that_reach_the_kth_exact_score(data):
    emb, interests, centroids = data
    queries = user_queries(centroids, 2, np.random.default_rng(2))
    top = Exact(emb, interests).topk(queries, K)
    kth = np.einsum("ij,ij->i", emb[top[:, -1]], queries)
    assert recall_at_k(list(top), queries, emb, kth, K) == pytest.approx(1.0)
    worst = np.argsort(emb @ queries.T, axis=0)[:K].T  # the K lowest scores: none reach the k-th best
    half = [np.concatenate([t[: K // 2], w[: K // 2]]) for t, w in zip(top, worst, strict=True)]
    assert recall_at_k(half, queries, emb, kth, K) == pytest.approx(0.5)


def test_filters_are_mid_size_interests(data):
    _, interests, _ = data
    one, three = filter_interests(interests)
    assert len(one) == 1 and len(three) == 3 and one[0] in three
    sizes = np.bincount(interests, minlength=INTERESTS)
    assert sizes.min() < sizes[one[0]] < sizes.max()
