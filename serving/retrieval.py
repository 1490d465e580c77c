"""The retrieval predictor (CPU): a user's online features -> the two-tower user tower -> Milvus ANN -> candidates.

Request (KServe v1 `POST /v1/models/retrieval:predict`, or v2 `POST /v2/models/retrieval/infer`, serving/v2.py):
    {"instances": [{"user_id": 7, "k": 100, "interests": [3, 5]}]}
    `k` (default 100, 1..1000) candidates per user; `interests` (optional) restricts them to pins of those
    interests, applied as Milvus' partition-key filter.
Response:
    {"predictions": [{"user_id": 7, "mode": "personalized", "reason": null, "hidden_excluded": 1,
                      "candidates": [{"pin_id", "score", "interest_id", "image_signature", "source"}, ...]}]}
    Candidates are best first; one per image signature. Pins the user hid in their online sequence never come back;
    `hidden_excluded` counts those that ranked ahead of the last candidate returned, i.e. that would have taken a
    slot.

How each user is answered (`mode`):
    personalized  the model knows the user (an id it was trained with) and the online store has their profile:
                  the user tower's queries, searched in Milvus. `score` is the inner product of the unit user and
                  pin vectors.
    cold_start    a user the model or the online store does not know (signed up since): the most popular corpus
                  pins of the asked-for interests, else of the interests the profile declares, else overall
                  (serving/corpus.py). `score` is the pin's time-decayed engagement.
    degraded      the online store or Milvus could not be reached: the same popular pins, and `reason` says which
                  dependency failed. The client gets a feed, the operator a log line and a metric
                  (serving/observe.py); a client mistake is still a 400, never hidden by a fallback.

Queries per personalized user, by what the model was trained with (seed 000):
    - one user vector (`source` "user_embedding");
    - a multi-embedding model (`capsules` > 0): one query per valid interest capsule, the most representative first
      ("capsule_<j>");
    - a conditional model asked for `interests`: one query per interest, the interest both the condition fused into
      the user tower and the search filter ("interest_<i>").
Each query's results are merged round robin, keyed by image signature so that one image never takes two slots
(models/retrieval/multi_embedding.py), and every capsule or interest gets slots near the top. The user tower runs
once over all instances; Milvus is searched once per distinct filter. Each query over-fetches by the number of pins
the user hid, so after dropping them min(k, available) candidates remain. A second pin of an image already taken
costs a slot instead: the corpus keeps one pin per signature (components/index/corpus.py), so only an index built
from another corpus holds such pins, and over-fetching for them would cost every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import kserve
import numpy as np
import torch

from components.index.bundle import IndexBundle
from components.index.client import searchable
from components.index.milvus import count, search
from components.train.examples import RETRIEVAL_SEQ_LEN, USER_INPUTS
from components.train.retrieval import load_two_tower
from models.retrieval.multi_embedding import round_robin_merge, top_representative
from serving import observe
from serving.corpus import ServingCorpus
from serving.online import OnlineUsers, declared_interests, online_users, open_store, without_features
from serving.payload import MAX_USER_ID, integer, integer_list, parse, respond
from serving.v2 import Schema
from serving.worker import OffLoop

DEFAULT_K = 100
MAX_K = 1000
ANN_TIMEOUT_S = 2.0  # a Milvus that does not answer in this long is treated as down for the request
USER_EMBEDDING = "user_embedding"  # the candidate's source for a single-vector model without interests
SCHEMA = Schema(
    scalars=("user_id", "k"),
    lists=("interests",),
    table="candidates",
    columns={"pin_id": "INT64", "score": "FP32", "interest_id": "INT64", "image_signature": "INT64", "source": "BYTES"},
    values={"user_id": "INT64", "mode": "BYTES", "reason": "BYTES", "hidden_excluded": "INT64"},
)


class RetrievalPredictor(OffLoop, kserve.Model):
    def __init__(self, model_dir: Path, features_dir: Path, index_dir: Path, name: str = "retrieval"):
        super().__init__(name)
        self.model_dir, self.features_dir, self.index_dir = Path(model_dir), Path(features_dir), Path(index_dir)

    def load(self) -> bool:
        self.model = load_two_tower(self.model_dir)
        self.store = open_store(self.features_dir)
        bundle = IndexBundle.read(self.index_dir)
        # a Lite file in a read-only bundle (a KServe model mount) is searched from a copy in scratch space ($TMPDIR)
        self.index = replace(bundle, uri=searchable(bundle.uri))
        self.corpus = ServingCorpus.load(self.index_dir)
        # opens and loads the collection now: a missing or locked index fails the start, not the first request
        self.corpus_size = count(self.index.uri, self.index.collection)
        # the ready flag drives the readiness probe: set only once every dependency has opened
        self.ready = True
        return self.ready

    def predict_now(self, payload, headers: dict[str, str] | None = None):
        started, rid = time.perf_counter(), observe.request_id(headers, payload)
        instances, as_v2 = parse(payload, SCHEMA)
        requests = self._parse(instances)
        predictions = self.retrieve(requests, rid)
        observe.answered(self.name, rid, [p["mode"] for p in predictions], started)
        return respond(predictions, self.name, rid, as_v2, SCHEMA)

    def retrieve(self, requests: list[dict], rid: str = "-") -> list[dict]:
        """One prediction per parsed request, each personalized, cold-started or degraded (module docstring)."""
        cfg, ids = self.model.cfg, [r["user_id"] for r in requests]
        reason = None
        with observe.stage(self.name, "features"):
            try:
                users = online_users(self.store, ids, cfg.n_interests, RETRIEVAL_SEQ_LEN)
            except Exception as exc:  # noqa: BLE001 -- any failure of the store is answered by the fallback
                observe.dependency_failed(self.name, "feast", rid, exc)
                users, reason = without_features(ids, cfg.n_interests, RETRIEVAL_SEQ_LEN), "feature store unavailable"
        # who would be personalized; without features nobody is, and every user's answer is degraded
        known = users.known & (users.user_id < cfg.n_users)
        personal = [i for i in range(len(requests)) if known[i]] if reason is None else []
        degraded = set(range(len(requests))) if reason else set()
        found: dict[int, list[list[dict]]] = {}
        if personal:
            try:
                found = self._search(users, requests, personal)
            except Exception as exc:  # noqa: BLE001 -- Milvus down, timed out or refusing: fall back, say so
                observe.dependency_failed(self.name, "milvus", rid, exc)
                reason, degraded = "ann index unavailable", set(personal)  # cold starts never needed Milvus
        predictions = []
        for i, r in enumerate(requests):
            hidden, fetch = users.hidden[i], r["k"] + len(users.hidden[i])
            if i in found:
                # a pin keeps the hit (score, source) of the query that contributed it first
                hits = round_robin_merge(found[i], fetch, key=lambda hit: hit["image_signature"])
                mode = "personalized"
            else:
                hits = self.corpus.popular(fetch, r["interests"] or declared_interests(users, i) or None)
                mode = "degraded" if i in degraded else "cold_start"
            predictions.append({**_candidates(r["user_id"], hits, hidden, r["k"]), "mode": mode,
                                "reason": reason if mode == "degraded" else None})  # fmt: skip
        return predictions

    def _search(self, users: OnlineUsers, requests: list[dict], rows: list[int]) -> dict[int, list[list[dict]]]:
        """Per request row of `rows`: the hit lists of its queries, in merge order."""
        with observe.stage(self.name, "tower"):
            queries = self.queries(users, requests, rows)
        by_filter: dict[tuple[int, ...] | None, list[int]] = {}
        for q, query in enumerate(queries):
            by_filter.setdefault(query.filter, []).append(q)
        found: list[list[dict]] = [[] for _ in queries]
        with observe.stage(self.name, "ann"):
            for interests, qs in by_filter.items():
                fetch = max(requests[queries[q].row]["k"] + len(users.hidden[queries[q].row]) for q in qs)
                allowed = None if interests is None else list(interests)
                vectors = np.stack([queries[q].vector for q in qs])
                # the bundle's search breadth, never below what this query fetches (HNSW needs ef >= k)
                ef = None if self.index.search_ef is None else max(fetch, self.index.search_ef)
                hits = search(self.index.uri, self.index.collection, vectors, fetch, allowed, ef=ef,
                              timeout=ANN_TIMEOUT_S)  # fmt: skip
                for q, per_query in zip(qs, hits, strict=True):
                    found[q] = [{**hit, "source": queries[q].source} for hit in per_query]
        out: dict[int, list[list[dict]]] = {i: [] for i in rows}
        for q, query in enumerate(queries):
            out[query.row].append(found[q])
        return out

    def _parse(self, instances: list[dict]) -> list[dict]:
        cfg = self.model.cfg
        requests = []
        for i, instance in enumerate(instances):
            interests = None
            if instance.get("interests") is not None:
                ids = integer_list(instance, i, "interests", 0, cfg.n_interests, max_len=cfg.n_interests)
                interests = tuple(sorted(ids))
            requests.append(
                {
                    "user_id": integer(instance, i, "user_id", 0, MAX_USER_ID),
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
    def queries(self, users: OnlineUsers, requests: list[dict], rows: list[int] | None = None) -> list[Query]:
        """Every ANN query of the requests at `rows` (default all), in each user's merge order (module docstring)."""
        cfg, out = self.model.cfg, []
        rows = list(range(len(requests))) if rows is None else rows
        idx = np.asarray(rows, dtype=np.int64)
        if cfg.capsules:
            inputs = (torch.from_numpy(getattr(users, f)[idx]) for f in USER_INPUTS)
            vecs, valid = (t.numpy() for t in top_representative(*self.model.user.multi(*inputs), cfg.capsules))
        else:
            plain = self.user_vectors(users, idx)
        for j, i in enumerate(rows):
            r = requests[i]
            if cfg.conditional and r["interests"] is not None:
                wanted = np.asarray(r["interests"], dtype=np.int64)
                vectors = self.user_vectors(users, np.full(len(wanted), i), wanted)
                out += [Query(i, v, (int(t),), f"interest_{t}") for t, v in zip(wanted, vectors, strict=True)]
            elif cfg.capsules:
                out += [
                    Query(i, vecs[j, c], r["interests"], f"capsule_{c}") for c in range(cfg.capsules) if valid[j, c]
                ]
            else:
                out.append(Query(i, plain[j], r["interests"], USER_EMBEDDING))
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
        kept.append({f: hit[f] for f in SCHEMA.columns})
    return {"user_id": user_id, "candidates": kept, "hidden_excluded": excluded}
