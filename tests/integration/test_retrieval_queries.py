"""The retrieval server's multi-embedding and conditional queries, against a real Milvus Lite index and Feast store:
one query per capsule or per asked-for interest, merged round robin, hidden pins dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.index.milvus import search
from components.train.examples import RETRIEVAL_SEQ_LEN
from components.train.retrieval import RetrievalTraining, train_retrieval
from models.retrieval.multi_embedding import round_robin_merge, top_representative
from pipelines import steps
from serving.online import online_users
from serving.server import retrieval_predictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def predictor(tiny_world, tiny_artifacts, tmp_path_factory):
    """A two-tower with 3 capsules and the interest condition, trained briefly, indexed, served in-process."""
    root = tmp_path_factory.mktemp("multi")
    cut = steps.time_split(tiny_world).train_end_ms
    opts = RetrievalTraining(epochs=1, batch_size=128, capsules=3, conditional=True, crossing="masknet")
    train_retrieval(tiny_world, root / "retrieval", cut, opts)
    steps.index_pins(tiny_world, root / "retrieval", root / "index")
    model = retrieval_predictor(root / "retrieval", tiny_artifacts["features"], root / "index")
    model.load()
    return model


def _busiest_users(model, n: int) -> list[int]:
    users = online_users(model.store, list(range(model.model.cfg.n_users)), model.model.cfg.n_interests)
    return [int(u) for u in np.argsort(-(users.seq_pin_ids >= 0).sum(1), kind="stable")[:n]]


def test_one_query_per_capsule_merged_round_robin(predictor):
    users = _busiest_users(predictor, 3)
    k = 40
    out = predictor.predict_now({"instances": [{"user_id": u, "k": k} for u in users]})["predictions"]
    online = online_users(predictor.store, users, predictor.model.cfg.n_interests, RETRIEVAL_SEQ_LEN)
    inputs = [torch.from_numpy(getattr(online, f)) for f in ("user_id", "segment", "declared", "seq_pin_ids")]
    with torch.no_grad():
        vecs, valid, weights = predictor.model.user.multi(*inputs)
        vecs, valid = top_representative(vecs, valid, weights, 3)
    for i, pred in enumerate(out):
        pins = [c["pin_id"] for c in pred["candidates"]]
        assert len(pins) == len(set(pins)) == k
        assert not set(pins) & online.hidden[i]
        queries = vecs[i][valid[i]].numpy()
        assert len(queries) >= 2  # the busiest users' actions fall into several capsules
        fetch = k + len(online.hidden[i])
        hits = search(predictor.index.uri, predictor.index.collection, queries, fetch)
        expected = [p for p in round_robin_merge([[h["pin_id"] for h in q] for q in hits], fetch)
                    if p not in online.hidden[i]][:k]  # fmt: skip
        assert pins == expected
        sources = [c["source"] for c in pred["candidates"]]
        assert len({s for s in sources if s.startswith("capsule_")}) >= 2


def test_conditional_queries_one_per_interest_with_that_interest_as_filter(predictor):
    user = _busiest_users(predictor, 1)[0]
    wanted = [1, 3]
    pred = predictor.predict_now({"instances": [{"user_id": user, "k": 30, "interests": wanted}]})["predictions"][0]
    assert {c["interest_id"] for c in pred["candidates"]} <= set(wanted)
    assert {c["source"] for c in pred["candidates"]} == {"interest_1", "interest_3"}
    # round robin: the top two candidates come one from each interest's query
    assert {pred["candidates"][0]["source"], pred["candidates"][1]["source"]} == {"interest_1", "interest_3"}
    online = online_users(predictor.store, [user], predictor.model.cfg.n_interests, RETRIEVAL_SEQ_LEN)
    conditioned = predictor.user_vectors(online, np.zeros(1, dtype=np.int64), np.asarray([3]))
    top = search(predictor.index.uri, predictor.index.collection, conditioned, 5, interests=[3])[0]
    first = next(c for c in pred["candidates"] if c["source"] == "interest_3")
    assert first["pin_id"] == next(h["pin_id"] for h in top if h["pin_id"] not in online.hidden[0])
