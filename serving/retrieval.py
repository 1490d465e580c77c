"""The retrieval predictor (CPU): a user's online features -> the two-tower user tower -> Milvus ANN -> candidates.

Request (KServe v1, `POST /v1/models/retrieval:predict`):
    {"instances": [{"user_id": 7, "k": 100, "interests": [3, 5]}]}
    `k` (default 100, 1..1000) candidates per user; `interests` (optional) restricts them to pins of those
    interests, applied as Milvus' partition-key filter.
Response:
    {"predictions": [{"user_id": 7, "hidden_excluded": 1,
                      "candidates": [{"pin_id", "score", "interest_id", "source": "user_embedding"}, ...]}]}
    Candidates are best first (`score` is the inner product of the unit user and pin vectors). Pins the user hid
    in their online sequence never come back; `hidden_excluded` counts those that ranked ahead of the last
    candidate returned, i.e. that would have taken a slot.

Queries per user, by what the model was trained with (seed 000):
    - one user vector (`source` "user_embedding");
    - a multi-embedding model (`capsules` > 0): one query per valid interest capsule, the most representative first
      ("capsule_<j>");
    - a conditional model asked for `interests`: one query per interest, the interest both the condition fused into
      the user tower and the search filter ("interest_<i>").
Each query's results are merged round robin with duplicates dropped (models/retrieval/multi_embedding.py), so every
capsule or interest gets slots near the top. The user tower runs once over all instances; Milvus is searched once
per distinct filter. Each query over-fetches by the number of pins the user hid, so after dropping them exactly
min(k, available) candidates remain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import kserve
import numpy as np
import torch
from feast import FeatureStore

from components.index.milvus import count, search
from components.steps import read_index_info
from components.train.examples import RETRIEVAL_SEQ_LEN, USER_INPUTS
from components.train.retrieval import load_two_tower
from models.retrieval.multi_embedding import round_robin_merge, top_representative
from serving.online import OnlineUsers, request_users
from serving.payload import integer, integer_list, v1_instances

DEFAULT_K = 100
MAX_K = 1000
USER_EMBEDDING = "user_embedding"  # the candidate's source for a single-vector model without interests


class RetrievalPredictor(kserve.Model):
    def __init__(self, model_dir: Path, features_dir: Path, index_dir: Path, name: str = "retrieval"):
        super().__init__(name)
        self.model_dir, self.features_dir, self.index_dir = Path(model_dir), Path(features_dir), Path(index_dir)

    def load(self) -> bool:
        self.model = load_two_tower(self.model_dir)
        self.store = FeatureStore(repo_path=str(self.features_dir))
        self.index = read_index_info(self.index_dir)
        # opens and loads the collection now: a missing or locked index fails the start, not the first request
        self.corpus_size = count(self.index["uri"], self.index["collection"])
        # the ready flag drives the readiness probe: set only once every dependency has opened
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        requests = self._parse(payload)
        users = request_users(
            self.store, [r["user_id"] for r in requests], self.model.cfg.n_interests, RETRIEVAL_SEQ_LEN
        )
        queries = self.queries(users, requests)
        by_filter: dict[tuple[int, ...] | None, list[int]] = {}
        for q, query in enumerate(queries):
            by_filter.setdefault(query.filter, []).append(q)
        found: list[list[dict]] = [[] for _ in queries]
        for interests, qs in by_filter.items():
            fetch = max(requests[queries[q].row]["k"] + len(users.hidden[queries[q].row]) for q in qs)
            allowed = None if interests is None else list(interests)
            vectors = np.stack([queries[q].vector for q in qs])
            for q, hits in zip(qs, search(self.index["uri"], self.index["collection"], vectors, fetch, allowed),
                               strict=True):  # fmt: skip
                found[q] = [{**hit, "source": queries[q].source} for hit in hits]
        predictions = []
        for i, r in enumerate(requests):
            lists = [found[q] for q, query in enumerate(queries) if query.row == i]
            # a pin keeps the hit (score, source) of the query that contributed it first
            merged = round_robin_merge(lists, r["k"] + len(users.hidden[i]), key=lambda hit: hit["pin_id"])
            predictions.append(_candidates(r["user_id"], merged, users.hidden[i], r["k"]))
        return {"predictions": predictions}

    def _parse(self, payload) -> list[dict]:
        cfg = self.model.cfg
        requests = []
        for i, instance in enumerate(v1_instances(payload, self.name)):
            interests = None
            if instance.get("interests") is not None:
                ids = integer_list(instance, i, "interests", 0, cfg.n_interests, max_len=cfg.n_interests)
                interests = tuple(sorted(ids))
            requests.append(
                {
                    "user_id": integer(instance, i, "user_id", 0, cfg.n_users),
                    "k": integer(instance, i, "k", 1, MAX_K + 1, default=DEFAULT_K),
                    "interests": interests,
                }
            )
        return requests

    @torch.inference_mode()
    def user_vectors(self, users: OnlineUsers, rows=None, condition: np.ndarray | None = None) -> np.ndarray:
        """[B, d] unit user vectors (each user's most representative one, with capsules) for the users at `rows`
        (default: all) of online inputs whose sequences are RETRIEVAL_SEQ_LEN long; `condition`: one interest per
        row for a conditional model."""
        rows = np.arange(len(users.user_id)) if rows is None else rows
        inputs = [torch.from_numpy(getattr(users, f)[rows]) for f in USER_INPUTS]
        cond = None if condition is None else torch.from_numpy(condition)
        return self.model.user(*inputs, cond).numpy()

    @torch.inference_mode()
    def queries(self, users: OnlineUsers, requests: list[dict]) -> list[Query]:
        """Every ANN query of the batch, in each user's merge order (see the module docstring)."""
        cfg, out = self.model.cfg, []
        if cfg.capsules:
            vecs, valid, weights = self.model.user.multi(*(torch.from_numpy(getattr(users, f)) for f in USER_INPUTS))
            vecs, valid = (t.numpy() for t in top_representative(vecs, valid, weights, cfg.capsules))
        else:
            plain = self.user_vectors(users)
        for i, r in enumerate(requests):
            if cfg.conditional and r["interests"] is not None:
                wanted = np.asarray(r["interests"], dtype=np.int64)
                vectors = self.user_vectors(users, np.full(len(wanted), i), wanted)
                out += [Query(i, v, (int(t),), f"interest_{t}") for t, v in zip(wanted, vectors, strict=True)]
            elif cfg.capsules:
                out += [
                    Query(i, vecs[i, j], r["interests"], f"capsule_{j}") for j in range(cfg.capsules) if valid[i, j]
                ]
            else:
                out.append(Query(i, plain[i], r["interests"], USER_EMBEDDING))
        return out


@dataclass(frozen=True)
class Query:
    row: int  # the request it serves
    vector: np.ndarray
    filter: tuple[int, ...] | None  # interests the search is restricted to
    source: str  # reported with each candidate it found


def _candidates(user_id: int, hits: list[dict], hidden: frozenset[int], k: int) -> dict:
    kept, excluded = [], 0
    for hit in hits:
        if len(kept) == k:
            break
        if hit["pin_id"] in hidden:
            excluded += 1
            continue
        kept.append(
            {
                "pin_id": hit["pin_id"],
                "score": hit["score"],
                "interest_id": hit["interest_id"],
                "source": hit["source"],
            }
        )
    return {"user_id": user_id, "candidates": kept, "hidden_excluded": excluded}
