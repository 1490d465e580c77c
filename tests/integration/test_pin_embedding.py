"""Pin embeddings by batch inference of the pin tower on Ray (components/index/embed.py) against the in-process
`pin_embeddings` of the same trained model, and the `index` step that uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ray

from components.data.dataset import Dataset
from components.index.bundle import INDEX_FILE
from components.index.embed import embed_pins
from components.train.examples import Catalog
from components.train.retrieval import load_two_tower, pin_embeddings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def in_process(tiny_artifacts) -> np.ndarray:
    """[P, d] every pin's embedding computed in this process, without Ray."""
    model = load_two_tower(tiny_artifacts["retrieval"])
    return pin_embeddings(model, Catalog.load(Dataset(tiny_artifacts["data"])))


def test_ray_embeddings_equal_the_in_process_ones_in_the_order_asked(tiny_artifacts, in_process):
    known = Dataset(tiny_artifacts["data"]).read("pins", columns=["pin_id"]).pin_id.to_numpy()
    rng = np.random.default_rng(7)
    ids = rng.permutation(known)[:700]
    ids = np.concatenate([ids, ids[:5]])  # a pin asked for twice gets its vector at both positions
    stats: dict = {}
    emb = embed_pins(tiny_artifacts["retrieval"], tiny_artifacts["data"], ids, batch_size=128, workers=2, stats=stats)
    assert emb.dtype == np.float32 and emb.shape == (len(ids), in_process.shape[1])
    np.testing.assert_allclose(emb, in_process[ids], atol=1e-5, rtol=0)
    cpus = int(ray.cluster_resources()["CPU"])
    assert stats["engine"] == "ray" and stats["workers"] == min(2, cpus) and stats["batch_size"] == 128
    assert stats["pins"] == len(ids) > 2 * stats["batch_size"]  # several batches, spread over both actors
    assert stats["seconds"] > 0


def _no_ray(monkeypatch) -> None:
    """Fail the test if the call gets as far as starting Ray or building a Ray dataset."""
    import ray.data

    from components.train import ray_runner

    def refuse(*_args, **_kwargs):
        raise AssertionError("Ray work started")

    monkeypatch.setattr(ray_runner, "ensure_ray", refuse)
    monkeypatch.setattr(ray.data, "from_pandas", refuse)


def test_no_pin_ids_give_an_empty_matrix_without_ray(tiny_artifacts, in_process, monkeypatch):
    _no_ray(monkeypatch)
    emb = embed_pins(tiny_artifacts["retrieval"], tiny_artifacts["data"], [])
    assert emb.shape == (0, in_process.shape[1]) and emb.dtype == np.float32


def test_unknown_pin_ids_are_named_before_any_ray_work(tiny_artifacts, monkeypatch):
    _no_ray(monkeypatch)
    n_pins = load_two_tower(tiny_artifacts["retrieval"]).cfg.n_pins
    with pytest.raises(ValueError, match=rf"2 pin ids are not in .*: -1, {n_pins + 3}$"):
        embed_pins(tiny_artifacts["retrieval"], tiny_artifacts["data"], [0, n_pins + 3, 1, -1])


def test_without_workers_the_same_embeddings_come_from_this_process(tiny_artifacts, in_process, monkeypatch):
    _no_ray(monkeypatch)
    ids = np.array([5, 0, 5, 17, 3], dtype=np.int64)
    stats: dict = {}
    emb = embed_pins(tiny_artifacts["retrieval"], tiny_artifacts["data"], ids, batch_size=2, workers=0, stats=stats)
    np.testing.assert_allclose(emb, in_process[ids], atol=1e-5, rtol=0)  # the same pin tower, batched otherwise
    assert stats["engine"] == "local" and stats["workers"] == 0 and stats["pins"] == len(ids)


def test_the_index_step_records_how_it_embedded_the_corpus(tiny_artifacts):
    info = json.loads((tiny_artifacts["index"] / INDEX_FILE).read_text())
    embedding = info["embedding"]  # tiny_artifacts embeds in this process (embed_workers=0)
    assert embedding["engine"] == "local" and embedding["workers"] == 0 and embedding["batch_size"] >= 1
    assert embedding["seconds"] > 0
    assert info["count"] == info["corpus"]["counts"]["served"]  # the corpus pins alone, not the whole catalogue
