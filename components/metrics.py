"""Offline metrics, as pure functions over arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd


def recall_per_user(ranked: np.ndarray, relevant: list[set[int]], k: int) -> np.ndarray:
    """[U] |relevant ∩ top-k| / |relevant| of each user with something relevant; `ranked` is [U, >=k] pin ids."""
    return np.asarray(
        [len(rel & set(row[:k].tolist())) / len(rel) for row, rel in zip(ranked, relevant, strict=True) if rel],
        dtype=np.float64,
    )


def recall_at_k(ranked: np.ndarray, relevant: list[set[int]], ks: tuple[int, ...]) -> dict[int, float]:
    """Mean over users of |relevant ∩ top-k| / |relevant|; `ranked` is [U, max(ks)] pin ids, best first."""
    out = {}
    for k in ks:
        per_user = recall_per_user(ranked, relevant, k)
        out[k] = float(per_user.mean()) if len(per_user) else float("nan")
    return out


def ratio_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) / mean(b) for per-user metrics of two models on the same users, with a 95% paired bootstrap interval
    (users resampled together for both): how sure a "1.05x" is when a holdout holds a few hundred users."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"per-user metrics of the same users expected, got shapes {a.shape} and {b.shape}")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    boot = a[idx].mean(1) / np.maximum(b[idx].mean(1), 1e-12)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(a.mean() / max(b.mean(), 1e-12)), float(lo), float(hi)


def rank_in_request(request_id: np.ndarray, score: np.ndarray) -> np.ndarray:
    """[N] 1-based rank of each impression among its request's, best score first; ties by position."""
    df = pd.DataFrame({"req": request_id, "score": score})
    return df.groupby("req")["score"].rank(ascending=False, method="first").to_numpy()


def hit_at_k(request_id: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 3) -> float:
    """HIT@k as TransAct defines it: rank each request's impressed pins by score; the share of the pins that got
    the action which land in their request's top k. Ties are broken by position, pessimistically for nothing."""
    positives = np.asarray(label).astype(bool)
    return float((rank_in_request(request_id, score)[positives] <= k).mean()) if positives.any() else float("nan")


def sampled_rank(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[U] 0-based rank of each row's positive among its sampled candidates: the negatives (`neg` [U, n]; NaN pads a
    row with fewer) that score strictly higher, plus a uniformly random share of those that tie. Random tie-breaking
    rather than counting ties against the positive: integer scores such as popularity counts tie often, and
    counting every tie as a loss would understate such a baseline."""
    higher = (neg > pos[:, None]).sum(1)
    ties = (neg == pos[:, None]).sum(1)
    return higher + rng.integers(0, ties + 1)


def hr_ndcg_at_k(rank: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k (the positive in the top k) and NDCG@k (1/log2(rank + 2) when in the top k, else 0) from 0-based ranks
    of one positive per user, as SASRec's sampled evaluation defines them; means over users."""
    hit = rank < k
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    return {f"HR@{k}": float(hit.mean()), f"NDCG@{k}": float(ndcg.mean())}


def top_k(queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """[Q, k] row indices of `items`, best first by inner product with each query (exact search, in chunks of
    queries so the score matrix stays small); k is capped at the number of items."""
    k = min(k, len(items))
    out = []
    for lo in range(0, len(queries), chunk):
        s = queries[lo : lo + chunk] @ items.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(s, part, 1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(part, order, 1))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC: the probability that a random positive scores above a random negative (ties count half), from the
    rank sum (Mann-Whitney U); NaN when one class is absent."""
    label = np.asarray(label).astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = pd.Series(np.asarray(score)).rank(method="average").to_numpy()
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
