"""Grouped (once-per-user) scoring equals per-pair scoring, for every sequence kind.

Why these tests: serving computes the user-only parts of Pinnability once per request and, for early-fusion
TransAct, splits the first encoder layer's Q/K/V projection by hand. Any slip there (a dropped bias, a mask read
per user instead of per pair, a wrong column split) silently changes the served ranking while training and offline
evaluation, which use `forward`, look fine. So the grouped path is held to `forward` on the expanded inputs, with
users whose sequences are full, partly padded, a single action, empty, and with padding in the middle.

Only torch, numpy and the model code are imported, so the file also runs on the GPU machine (no data-layer deps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.ranking import sequence
from models.ranking.pinnability import HEADS, Pinnability, PinnabilityConfig
from models.ranking.sequence import KINDS, SequenceConfig
from serving.scorer import Scorer, pair_bucket, user_bucket

pytestmark = pytest.mark.unit

D, L, N_PINS, USER_DIM = 8, 6, 40, 6  # pin dim, sequence length, content rows, user embedding width
PAD_PIN, PAD_ACTION = -1, 0  # the data's padding (components.features.sequence)
LENGTHS = (L, 3, 1, 0)  # valid actions of users 0..3: full, half, one, empty (and user 4 has a gap, below)
TOL = 1e-5


def _model(kind: str, seed: int = 0, **seq_kw) -> Pinnability:
    torch.manual_seed(seed)
    seq = SequenceConfig(kind=kind, action_dim=4, first_k=3, seq_len=L, n_heads=2, ffn_dim=16, **seq_kw)
    cfg = PinnabilityConfig(n_interests=5, hidden=(16,), cross_rank=8, sequence=seq)
    model = Pinnability(cfg, torch.randn(N_PINS, D), user_dim=USER_DIM).eval()
    with torch.no_grad():  # biases and norms off their init (zero in-projection bias, unit norms) hide slips
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.2 * torch.randn_like(param))
    return model


def _request(seed: int = 0) -> dict[str, torch.Tensor]:
    """Five users (see LENGTHS; user 4 has padding inside its sequence) and 13 pairs in an interleaved order."""
    g = torch.Generator().manual_seed(seed)
    n_users = len(LENGTHS) + 1
    seq_pin_ids = torch.randint(0, N_PINS, (n_users, L), generator=g)
    for user, n in enumerate(LENGTHS):
        seq_pin_ids[user, n:] = PAD_PIN
    seq_pin_ids[4, 1:3] = PAD_PIN  # a gap, not only a padded tail
    actions = torch.randint(1, 4, (n_users, L), generator=g).masked_fill(seq_pin_ids < 0, PAD_ACTION)
    user_row = torch.tensor([0, 3, 1, 0, 2, 4, 3, 0, 1, 2, 4, 4, 0])
    n_pairs = len(user_row)
    return {
        "segment": torch.randint(0, 4, (n_users,), generator=g),
        "user_emb": torch.randn(n_users, USER_DIM, generator=g),
        "seq_pin_ids": seq_pin_ids,
        "seq_actions": actions,
        "pin_ids": torch.randint(0, N_PINS, (n_pairs,), generator=g),
        "interest": torch.randint(0, 5, (n_pairs,), generator=g),
        "user_row": user_row,
    }


def _forward_expanded(model: Pinnability, r: dict) -> torch.Tensor:
    row = r["user_row"]
    return model(
        r["segment"][row], r["user_emb"][row], r["pin_ids"], r["interest"], r["seq_pin_ids"][row], r["seq_actions"][row]
    )


def _grouped(model: Pinnability, r: dict) -> torch.Tensor:
    return model.score_grouped(**r)


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_equals_forward_on_expanded_pairs(kind):
    model, r = _model(kind), _request()
    with torch.inference_mode():
        expected, got = _forward_expanded(model, r), _grouped(model, r)
    assert got.shape == (len(r["user_row"]), len(HEADS))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)
    # the check has teeth: pairs of different users (and candidates) do score differently
    assert (expected[0] - expected[1]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_equals_forward_with_grad_enabled(kind):
    """Outside inference mode nn.TransformerEncoderLayer takes its slow path (no fused kernel): same answer."""
    model, r = _model(kind, seed=1), _request(seed=1)
    torch.testing.assert_close(_grouped(model, r).detach(), _forward_expanded(model, r).detach(), rtol=0, atol=TOL)


@pytest.mark.parametrize("kind", ["transact_v10", "transact_v11"])
def test_early_fusion_splits_the_first_layer(kind, monkeypatch):
    """The default TransAct layers take the shared-projection path, and the fallback (no split) agrees with it."""
    model, r = _model(kind, seed=2), _request(seed=2)
    assert sequence._splittable(model.sequence.encoder.layers[0])
    calls = []
    split = sequence._split_first_layer
    monkeypatch.setattr(sequence, "_split_first_layer", lambda *a: calls.append(1) or split(*a))
    with torch.inference_mode():
        with_split = _grouped(model, r)
        monkeypatch.setattr(sequence, "_splittable", lambda layer: False)
        without_split = _grouped(model, r)
        expected = _forward_expanded(model, r)
    assert calls == [1]
    torch.testing.assert_close(with_split, expected, rtol=0, atol=TOL)
    torch.testing.assert_close(without_split, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("ablation", [{"action_embedding": False}, {"early_fusion": False}])
def test_grouped_equals_forward_for_transact_ablations(ablation):
    model, r = _model("transact_v11", seed=3, **ablation), _request(seed=3)
    assert model.sequence.reads_candidate == ablation.get("early_fusion", True)
    with torch.inference_mode():
        torch.testing.assert_close(_grouped(model, r), _forward_expanded(model, r), rtol=0, atol=TOL)


def test_sequence_longer_than_seq_len_is_cut_the_same_way_for_v10():
    model, r = _model("transact_v10", seed=4), _request(seed=4)
    longer = torch.randint(0, N_PINS, (len(r["segment"]), 2))
    r["seq_pin_ids"] = torch.cat([r["seq_pin_ids"], longer], dim=1)
    r["seq_actions"] = torch.cat([r["seq_actions"], torch.ones_like(longer)], dim=1)
    with torch.inference_mode():
        torch.testing.assert_close(_grouped(model, r), _forward_expanded(model, r), rtol=0, atol=TOL)


@pytest.mark.parametrize("kind", ["lstm", "transact_v11"])
def test_score_grouped_refuses_training_mode(kind):
    model = _model(kind).train()
    with pytest.raises(RuntimeError, match="eval"):
        _grouped(model, _request())


def _numpy(r: dict) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in r.items()}


@pytest.mark.parametrize("kind", ["avgpool", "transact_v11"])
def test_scorer_grouped_and_ungrouped_agree_in_fp32(kind):
    model, r = _model(kind, seed=5), _request(seed=5)
    grouped = Scorer(model, "cpu", "fp32", grouped=True).score(**_numpy(r))
    pairwise = Scorer(model, "cpu", "fp32", grouped=False).score(**_numpy(r))
    with torch.inference_mode():
        expected = torch.sigmoid(_forward_expanded(model, r)).numpy()
    assert grouped.dtype == np.float32 and grouped.shape == (len(r["user_row"]), len(HEADS))
    np.testing.assert_allclose(pairwise, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grouped, pairwise, rtol=0, atol=TOL)


def test_scorer_leaves_the_callers_model_alone_and_scores_empty_requests():
    model = _model("transact_v11").train()
    scorer = Scorer(model, "cpu", "auto")
    assert model.training and not scorer.model.training and scorer.dtype == torch.float32
    r = _numpy(_request())
    empty = {**r, "pin_ids": r["pin_ids"][:0], "interest": r["interest"][:0], "user_row": r["user_row"][:0]}
    assert scorer.score(**empty).shape == (0, len(HEADS))


def test_bf16_is_refused_off_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        Scorer(_model("none"), "cpu", "bf16")


def test_padding_to_buckets_does_not_change_the_scores():
    """What compile mode feeds the model (buckets, a longer padded sequence) scores the real pairs the same."""
    model, r = _model("transact_v11", seed=6), _numpy(_request(seed=6))
    scorer = Scorer(model, "cpu", "fp32")
    plain = scorer.score(**r)
    scorer.compiled, scorer.seq_len = True, L + 3  # padding only; the eager function stays
    np.testing.assert_allclose(scorer.score(**r), plain, rtol=0, atol=TOL)


def test_buckets_are_bounded():
    assert [pair_bucket(n) for n in (1, 16, 17, 100, 129, 1000, 1024, 1025)] == [16, 16, 32, 128, 256, 1024, 1024, 2048]
    assert len({pair_bucket(n) for n in range(1, 1001)}) == 11
    assert [user_bucket(n) for n in (1, 2, 3, 5)] == [1, 2, 4, 8]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 scoring needs CUDA")
@pytest.mark.parametrize("grouped", [True, False])
def test_bf16_scores_close_to_fp32_on_cuda(grouped):
    model, r = _model("transact_v11", seed=7), _numpy(_request(seed=7))
    fp32 = Scorer(model, "cuda", "fp32", grouped=grouped).score(**r)
    bf16 = Scorer(model, "cuda", "bf16", grouped=grouped).score(**r)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, rtol=0, atol=2e-2)  # bf16 keeps ~3 significant digits
