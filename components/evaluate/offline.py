"""Offline evaluation on a time-split holdout: recall@K for retrieval, HIT@3 per head for ranking. Each is
measured with a simple baseline in the same run (most popular pins; random order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.data.dataset import Dataset
from components.data.split import TimeSplit
from components.evaluate.result import Evaluation
from components.metrics import hit_at_k, recall_at_k, top_k
from components.train.examples import POSITIVE_ACTIONS, Catalog, ranking_examples, read_events
from components.train.ranking import load_pinnability, score, served_score
from components.train.retrieval import load_two_tower, pin_embeddings, user_embeddings
from models.ranking.pinnability import HEADS


def evaluate_retrieval(dataset: Path, model_dir: Path, train_end_ms: int, ks=(10, 100)) -> dict:
    """Users with repins after the cut-off; their embedding as of the cut-off; recall of those repins in top K."""
    ds = Dataset(dataset)
    cat = Catalog.load(ds)
    ev, log = read_events(ds)
    future = ev[(ev.action == "repin") & (ev.ts >= train_end_ms)]
    relevant = future.groupby("user_id").pin_id.apply(set)
    users = relevant.index.to_numpy()
    model = load_two_tower(model_dir)
    u = user_embeddings(model, cat, log, users, np.full(len(users), train_end_ms))
    kmax = min(max(ks), cat.n_pins - 1)
    ranked = top_k(u, pin_embeddings(model, cat), kmax)
    past = ev[ev.action.isin(POSITIVE_ACTIONS) & (ev.ts < train_end_ms)]
    popular = past.pin_id.value_counts().index.to_numpy()[:kmax]
    popular_ranked = np.tile(popular, (len(users), 1))
    return {
        "users": int(len(users)),
        "recall": {str(k): v for k, v in recall_at_k(ranked, list(relevant), ks).items()},
        "popularity_recall": {str(k): v for k, v in recall_at_k(popular_ranked, list(relevant), ks).items()},
    }


def evaluate_ranking(dataset: Path, model_dir: Path, start_ms: int, end_ms: int, seed: int = 0) -> dict:
    """HIT@3 per head on the impressions of [start_ms, end_ms) (hide: in the served order), the model against a
    random order."""
    ds = Dataset(dataset)
    cat = Catalog.load(ds)
    ev, log = read_events(ds)
    ex = ranking_examples(ev, cat, log, start_ms, end_ms, max_examples=None, seed=seed)
    model, user_emb = load_pinnability(model_dir)
    probs = score(model, user_emb, ex)
    rand = np.random.default_rng(seed).random(len(probs))
    out = {"impressions": int(len(probs)), "requests": int(len(np.unique(ex["request_id"])))}
    served = served_score(probs)
    for j, head in enumerate(HEADS):
        # click and repin: ranked by their own head; hide ("lower is better"): hides in the top 3 of the order
        # users are served (the heads blended as serving blends them), since ranked by the hide head itself a
        # better hide head would put more hides on top (components/evaluate/ranking_comparison.py)
        ranked_by = served if head == "hide" else probs[:, j]
        out[f"hit@3_{head}"] = hit_at_k(ex["request_id"], ranked_by, ex["labels"][:, j])
        out[f"hit@3_{head}_random"] = hit_at_k(ex["request_id"], rand, ex["labels"][:, j])
    return out


def evaluate_models(dataset_dir: Path, retrieval_dir: Path, ranking_dir: Path, split: TimeSplit) -> Evaluation:
    """recall@K of retrieval and HIT@3 per head of ranking on the holdout of `split`, each next to its baseline."""
    return Evaluation(
        split,
        evaluate_retrieval(dataset_dir, retrieval_dir, split.train_end_ms, ks=(10, 100)),
        evaluate_ranking(dataset_dir, ranking_dir, split.train_end_ms, split.end_ms),
    )
