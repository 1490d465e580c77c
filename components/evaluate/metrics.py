"""Offline metrics, as pure functions over arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd


def recall_at_k(ranked: np.ndarray, relevant: list[set[int]], ks: tuple[int, ...]) -> dict[int, float]:
    """Mean over users of |relevant ∩ top-k| / |relevant|; `ranked` is [U, max(ks)] pin ids, best first."""
    out = {}
    for k in ks:
        per_user = [
            len(rel & set(row[:k].tolist())) / len(rel) for row, rel in zip(ranked, relevant, strict=True) if rel
        ]
        out[k] = float(np.mean(per_user)) if per_user else float("nan")
    return out


def hit_at_k(request_id: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 3) -> float:
    """HIT@k as TransAct defines it: rank each request's impressed pins by score; the share of the pins that got
    the action which land in their request's top k. Ties are broken by position, pessimistically for nothing."""
    df = pd.DataFrame({"req": request_id, "score": score, "label": label.astype(bool)})
    df["rank"] = df.groupby("req")["score"].rank(ascending=False, method="first")
    positives = df[df.label]
    return float((positives["rank"] <= k).mean()) if len(positives) else float("nan")


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
