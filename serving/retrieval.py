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

The user tower runs once over all instances; Milvus is searched once per distinct interest filter (once for a
batch without filters). Each user's search over-fetches by the number of pins they hid, so after dropping them
exactly min(k, available) candidates remain.
"""

from __future__ import annotations

from pathlib import Path

import kserve
import numpy as np
import torch
from feast import FeatureStore

from components.index.milvus import count, search
from components.steps import read_index_info
from components.train.examples import RETRIEVAL_SEQ_LEN
from components.train.retrieval import load_two_tower
from serving.online import OnlineUsers, request_users
from serving.payload import integer, integer_list, v1_instances

DEFAULT_K = 100
MAX_K = 1000
USER_EMBEDDING = "user_embedding"  # the candidate's source: later sources are multi-embedding and interest queries


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
        queries = self.user_vectors(users)
        by_filter: dict[tuple[int, ...] | None, list[int]] = {}
        for i, r in enumerate(requests):
            by_filter.setdefault(r["interests"], []).append(i)
        hits: list[list[dict]] = [[] for _ in requests]
        for interests, rows in by_filter.items():
            fetch = max(requests[i]["k"] + len(users.hidden[i]) for i in rows)
            allowed = None if interests is None else list(interests)
            found = search(self.index["uri"], self.index["collection"], queries[rows], fetch, interests=allowed)
            for i, per_user in zip(rows, found, strict=True):
                hits[i] = per_user
        return {
            "predictions": [_candidates(r["user_id"], hits[i], users.hidden[i], r["k"]) for i, r in enumerate(requests)]
        }

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
    def user_vectors(self, users: OnlineUsers) -> np.ndarray:
        """[B, d] unit user vectors (the queries) for online inputs whose sequences are RETRIEVAL_SEQ_LEN long."""
        inputs = (users.user_id, users.segment, users.declared, users.seq_pin_ids)
        return self.model.user(*(torch.from_numpy(x) for x in inputs)).numpy()


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
                "source": USER_EMBEDDING,
            }
        )
    return {"user_id": user_id, "candidates": kept, "hidden_excluded": excluded}
