"""Both models train on a local Ray instance (2 CPU workers), land in the artifact directory, load and score."""

import json

import numpy as np
import pytest

from components.data.dataset import Dataset
from components.evaluate.offline import evaluate_ranking, evaluate_retrieval
from components.features.sequence import ActionLog
from components.train.examples import Catalog
from components.train.ranking import RankingTraining, load_pinnability, train_ranking
from components.train.retrieval import (
    RetrievalTraining,
    load_two_tower,
    pin_embeddings,
    train_retrieval,
    user_embeddings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAY = 86_400_000


def test_train_evaluate_retrieval_and_ranking_on_ray(tiny_world, tmp_path):
    ds = Dataset(tiny_world)
    start, end = ds.manifest()["time_span_ms"]
    cut = end - 3 * DAY
    summary = train_retrieval(
        tiny_world, tmp_path / "retrieval", cut, RetrievalTraining(epochs=1, batch_size=128, num_workers=2)
    )
    assert np.isfinite(summary["train_loss"]) and summary["train_examples"] > 256
    assert {"model.pt", "config.json", "train_metrics.json"} <= {p.name for p in (tmp_path / "retrieval").iterdir()}

    cat = Catalog.load(ds)
    model = load_two_tower(tmp_path / "retrieval")
    pins = pin_embeddings(model, cat)
    assert pins.shape == (cat.n_pins, model.cfg.out_dim)
    np.testing.assert_allclose(np.linalg.norm(pins, axis=1), 1.0, rtol=1e-4)
    users = user_embeddings(model, cat, ActionLog(ds.read("events")), np.arange(cat.n_users), np.full(cat.n_users, cut))
    np.save(tmp_path / "user_emb.npy", users)

    rec = evaluate_retrieval(tiny_world, tmp_path / "retrieval", cut, ks=(10, 100))
    assert rec["users"] > 0
    assert all(0.0 <= v <= 1.0 for v in (*rec["recall"].values(), *rec["popularity_recall"].values()))
    assert rec["recall"]["100"] >= rec["recall"]["10"]

    opts = RankingTraining(epochs=1, batch_size=128, max_examples=4_000, num_workers=2)
    summary = train_ranking(tiny_world, tmp_path / "ranking", tmp_path / "user_emb.npy", start, cut, opts)
    assert summary["train_examples"] == 4_000 and np.isfinite(summary["train_loss"])
    model, user_emb = load_pinnability(tmp_path / "ranking")
    assert model.sequence.out_dim > 0 and user_emb.shape == users.shape
    rank = evaluate_ranking(tiny_world, tmp_path / "ranking", cut, end + 1)
    assert rank["requests"] > 0
    for head in ("click", "repin", "hide"):
        assert 0.0 <= rank[f"hit@3_{head}"] <= 1.0
    json.dumps(rank)  # results are plain JSON


def test_the_same_training_runs_in_one_process_without_ray(tiny_world, tmp_path, monkeypatch):
    from components.train import ray_runner
    from components.train.retrieval import train_retrieval_local

    def refuse(*_args, **_kwargs):
        raise AssertionError("a Ray instance was started")

    monkeypatch.setattr(ray_runner, "ensure_ray", refuse)  # Ray Train's local mode needs none
    ds = Dataset(tiny_world)
    cut = ds.manifest()["time_span_ms"][1] - 3 * DAY
    summary = train_retrieval_local(tiny_world, tmp_path, cut, RetrievalTraining(epochs=1, batch_size=128))
    assert np.isfinite(summary["train_loss"]) and summary["samples_per_s"] > 0
    model = load_two_tower(tmp_path)  # the same files Ray Train's checkpoint leaves
    assert pin_embeddings(model, Catalog.load(ds)).shape == (model.cfg.n_pins, model.cfg.out_dim)
    rec = evaluate_retrieval(tiny_world, tmp_path, cut, ks=(100,))
    assert 0.0 < rec["recall"]["100"] <= 1.0
