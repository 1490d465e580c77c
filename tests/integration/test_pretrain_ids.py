"""Contrastive ID-embedding pretraining (seed 000): torchrec tables trained on Ray Train (2 CPU workers) on a window
that ends before what they are checked against; the window is respected; the vectors predict later engagement.
The other trainings here run in this process (the suite's default, tests/conftest.py)."""

import json

import numpy as np
import pytest
import torch

from components.data.dataset import Dataset
from components.train.pretrain_ids import (
    DAY_MS,
    PretrainOptions,
    id_alignment_recall,
    load_id_embeddings,
    pin_pairs,
    popularity_recall,
    positive_pairs,
    pretrain_ids,
    random_recall,
)
from models.retrieval.id_pretrain import IdPretrainModel

pytestmark = pytest.mark.integration


def test_model_forward_and_loss_train_both_tables():
    torch.manual_seed(0)
    m = IdPretrainModel(n_users=10, n_pins=50, dim=8)
    users, pins = torch.tensor([1, 2, 2, 5]), torch.tensor([3, 4, 4, 9])
    negs = torch.tensor([0, 7, 4])  # 4 is row 1's and row 2's positive: masked for them, not a negative
    u, p = m(users, torch.cat([pins, negs]))
    assert u.shape == (4, 8) and p.shape == (7, 8)
    torch.testing.assert_close(p.norm(dim=1), torch.ones(7))
    log_q = torch.log(torch.full((4,), 0.25))
    loss = m.loss(u, p[:4], users, pins, log_q, log_q, p[4:], negs)
    assert torch.isfinite(loss)
    loss.backward()
    bags = m.ebc.embedding_bags
    assert bags["user_id"].weight.grad[[1, 2, 5]].abs().sum() > 0
    assert bags["pin_id"].weight.grad[[3, 4, 9, 0, 7]].abs().sum() > 0
    assert bags["pin_id"].weight.grad[[1, 2]].abs().sum() == 0  # ids in no pair and no negative: untouched


def test_pin_pairs_are_same_user_and_close_in_time():
    import pandas as pd

    pairs = pd.DataFrame(
        {"user_id": [0, 0, 0, 1, 1], "pin_id": [1, 2, 3, 2, 2], "ts": [0, 60_000, 10 * 3_600_000, 0, 1_000]}
    )
    pp = pin_pairs(pairs, max_gap_ms=30 * 60_000)
    assert list(zip(pp.a, pp.b, strict=True)) == [(1, 2)]  # 2->3 is too far apart; 2->2 is one pin


def test_invalid_windows_raise_clear_errors(tiny_world, tmp_path):
    first, _ = Dataset(tiny_world).manifest()["time_span_ms"]
    with pytest.raises(ValueError, match="window_days must be positive"):
        pretrain_ids(tiny_world, tmp_path, first + 3 * DAY_MS, window_days=0)
    with pytest.raises(ValueError, match="before the dataset's first event"):
        pretrain_ids(tiny_world, tmp_path, first, window_days=7)
    with pytest.raises(ValueError, match=r"holds \d+ click/repin pairs; training needs at least"):
        pretrain_ids(tiny_world, tmp_path, first + 3 * DAY_MS, window_days=0.01)


@pytest.mark.slow
def test_pretrain_on_ray_respects_window_and_predicts_later_engagement(tiny_world, tmp_path):
    ds = Dataset(tiny_world)
    first, last = ds.manifest()["time_span_ms"]
    end = (first + last) // 2
    start = end - 6 * DAY_MS
    assert start > first  # the window cuts the data at both ends
    summary = pretrain_ids(
        tiny_world, tmp_path / "ids", end, window_days=6, opts=PretrainOptions(seed=0, num_workers=2)
    )

    # outputs
    emb = load_id_embeddings(tmp_path / "ids" / "id_embeddings.pt")
    n_users = int(ds.read("users").user_id.max()) + 1
    n_pins = int(ds.read("pins").pin_id.max()) + 1
    assert emb["user"].shape == (n_users, 32) and emb["pin"].shape == (n_pins, 32)
    assert emb["user"].dtype == emb["pin"].dtype == torch.float32
    assert torch.isfinite(emb["user"]).all() and torch.isfinite(emb["pin"]).all()
    assert (emb["window_start_ms"], emb["window_end_ms"], emb["dim"]) == (start, end, 32)
    on_disk = json.loads((tmp_path / "ids" / "pretrain_metrics.json").read_text())
    assert on_disk == summary
    assert np.isfinite(summary["final_loss"]) and summary["samples_per_s"] > 0 and summary["seconds"] > 0
    assert summary["loss_history"][-1] < summary["loss_history"][0]

    # the window: exactly the clicks and repins of [start, end), counted independently of the job
    ev = ds.read("events")
    expected = int((ev.action.isin(["click", "repin"]) & (ev.ts >= start) & (ev.ts < end)).sum())
    assert summary["pairs"] == expected == int(emb["pin_pairs"].sum()) == int(emb["user_pairs"].sum())
    assert start <= summary["max_pair_ts_ms"] < end

    # quality: engagements after the window, ranked by user . pin similarity
    before, after = positive_pairs(ev, start, end), positive_pairs(ev, end, last + 1)
    got = {k: id_alignment_recall(emb, after, k) for k in (10, 100)}
    rand = {k: random_recall(n_pins, after, k) for k in (10, 100)}
    pop = {k: popularity_recall(before, after, k) for k in (10, 100)}
    print(f"recall@10/100 pretrained {got} random {rand} popularity {pop}")
    assert got[10] > 5 * rand[10] and got[100] > rand[100] + 0.03


@pytest.mark.slow
def test_id_overfitting_experiment_measures_every_variant_on_both_sides_of_the_cut(tiny_world, tmp_path):
    from components.data.split import time_split
    from components.evaluate.id_overfitting import evaluate_id_pretraining

    cut = time_split(tiny_world, 3.0).train_end_ms
    result = evaluate_id_pretraining(tiny_world, tmp_path, cut, epochs=1, n_pairs=500)
    assert result["pretraining"]["aligned"]["window_end_ms"] == cut
    assert result["pretraining"]["misaligned"]["window_end_ms"] > cut  # it covers the holdout: the leak shown
    assert len(result["variants"]) == 5
    for v in result["variants"].values():
        assert 0.0 <= v["holdout_hit_rate"] <= 1.0 and 0.0 <= v["train_hit_rate"] <= 1.0
        # all three are rounded to 4 decimals, so they agree to within three half-units of the last place
        assert v["gap"] == pytest.approx(v["train_hit_rate"] - v["holdout_hit_rate"], abs=1.6e-4)
    assert "| pretrained misaligned, dropout 0.5 |" in (tmp_path / "id_pretraining.md").read_text()


@pytest.mark.slow
def test_pipeline_steps_hand_pretrained_ids_to_retrieval_and_skip_when_off(tiny_world, tmp_path):
    from components.train.pretrain_ids import EMBEDDINGS_FILE, METRICS_FILE
    from pipelines import steps

    split = steps.time_split(tiny_world)
    off = steps.pretrain_ids_step(tiny_world, tmp_path / "off", split, epochs=0)
    assert off["pretrained"] is False and not (tmp_path / "off" / EMBEDDINGS_FILE).exists()
    assert json.loads((tmp_path / "off" / METRICS_FILE).read_text())["pretrained"] is False
    on = steps.pretrain_ids_step(tiny_world, tmp_path / "on", split, epochs=1)
    assert on["pretrained"] is True and (tmp_path / "on" / EMBEDDINGS_FILE).exists()
    models = {}
    for name in ("off", "on"):
        steps.train_retrieval_step(
            tiny_world, tmp_path / f"model_{name}", split, epochs=1, pretrained_dir=tmp_path / name
        )
        models[name] = torch.load(tmp_path / f"model_{name}" / "model.pt", weights_only=True)
    plain = tmp_path / "model_plain"
    steps.train_retrieval_step(tiny_world, plain, split, epochs=1)
    # off trains exactly as no pretraining at all; on starts elsewhere, so it ends elsewhere
    assert (plain / "model.pt").read_bytes() == (tmp_path / "model_off" / "model.pt").read_bytes()
    differs = [k for k in models["on"] if not torch.allclose(models["on"][k], models["off"][k], atol=1e-4)]
    assert any("user" in k and "emb" in k for k in differs), differs
