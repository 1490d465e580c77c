"""TransAct and the sequence baselines (seed 003) inside Pinnability: shapes, padding, the time-window mask, export.

Why these tests: the paper's comparison is only fair if every kind sees the same inputs and none reads padding (a
model that attends to padding learns the sequence length, not the user's intent), and the time-window mask must
change training only, never serving.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.data.contracts import ACTIONS
from components.features.sequence import PAD_ACTION, PAD_PIN
from models.ranking.pinnability import HEADS, Pinnability, PinnabilityConfig, export, head_loss, load
from models.ranking.sequence import (
    KINDS,
    N_ACTIONS,
    PAD_INDEX,
    SequenceConfig,
    make_sequence_module,
    model_actions,
    time_window_mask,
)

pytestmark = pytest.mark.unit

D, A, K, L = 8, 4, 3, 6  # pin dim, action dim, first K, sequence length: small and fast
REPO = Path(__file__).resolve().parents[2]


def _cfg(kind: str, **kw) -> SequenceConfig:
    return SequenceConfig(kind=kind, action_dim=A, first_k=K, seq_len=L, **kw)


def _inputs(batch: int = 4, seed: int = 0):
    """Row 0 full, row 1 half padded, row 2 with one action, row 3 (if any) empty; ages in hours."""
    g = torch.Generator().manual_seed(seed)
    cand = torch.randn(batch, D, generator=g)
    seq = torch.randn(batch, L, D, generator=g)
    actions = torch.randint(0, N_ACTIONS, (batch, L), generator=g)
    lengths = [L, L // 2, 1, 0][:batch]
    for row, n in enumerate(lengths):
        actions[row, n:] = PAD_INDEX
        seq[row, n:] = 0.0  # what FrozenEmbedding returns for pin -1
    ages = torch.rand(batch, L, generator=g) * 48
    return cand, seq, actions, ages


def _module(kind: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return make_sequence_module(_cfg(kind, **kw), D).eval()


# --- shapes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_output_size_of_every_kind(kind):
    fused = 2 * D + A
    expected = {
        "none": 0,
        "avgpool": D,
        "cnn": D,
        "rnn": D,
        "lstm": D,
        "transformer": (K + 1) * D,  # pin embeddings only, v1.1 reduction
        "transact_v10": L * fused,
        "transact_v11": (K + 1) * fused,
    }[kind]
    m = _module(kind)
    out = m(*_inputs())
    assert m.out_dim == expected
    assert out.shape == (4, expected)


@pytest.mark.parametrize(
    ("switches", "d_model"),
    [
        ({}, 2 * D + A),
        ({"action_embedding": False}, 2 * D),
        ({"early_fusion": False}, D + A),
        ({"action_embedding": False, "early_fusion": False}, D),
    ],
)
def test_ablations_change_d_model(switches, d_model):
    m = _module("transact_v11", **switches)
    assert m.d_model == d_model
    assert m.out_dim == (K + 1) * d_model
    assert m(*_inputs()).shape == (4, (K + 1) * d_model)


def test_early_fusion_stacks_candidate_action_and_pin_per_position():
    m = _module("transact_v11")
    cand, seq, actions, _ = _inputs()
    tokens = m.tokens(cand, seq, actions)
    assert tokens.shape == (4, L, 2 * D + A)
    assert torch.equal(tokens[:, :, :D], cand.unsqueeze(1).expand(-1, L, -1))  # the candidate, at every position
    assert torch.equal(tokens[:, :, D + A :], seq)


def test_v10_pads_short_sequences_to_seq_len():
    m = _module("transact_v10")
    cand, seq, actions, ages = _inputs()
    out = m(cand, seq[:, :3], actions[:, :3], ages[:, :3])
    assert out.shape == (4, L * m.d_model)
    assert (out.view(4, L, -1)[:, 3:] == 0).all()


# --- padding ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_padding_is_never_read(kind):
    m = _module(kind)
    cand, seq, actions, ages = _inputs()
    pad = (actions == PAD_INDEX).unsqueeze(-1)
    noisy_seq = torch.where(pad, torch.randn_like(seq) * 100, seq)
    noisy_ages = torch.where(pad.squeeze(-1), torch.zeros_like(ages), ages)
    with torch.no_grad():
        assert torch.allclose(m(cand, seq, actions, ages), m(cand, noisy_seq, actions, noisy_ages), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", [False, True])
def test_a_row_without_actions_gives_finite_output_and_gradients(kind, training):
    m = _module(kind).train(training)
    cand, seq, actions, ages = _inputs()
    actions[:] = PAD_INDEX
    seq = seq.detach().requires_grad_(True)
    out = m(cand, seq, actions, ages, torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    if out.numel():
        out.sum().backward()
        assert torch.isfinite(seq.grad).all()


def test_padding_has_its_own_action_row():
    m = _module("transact_v11")
    assert len(ACTIONS) == N_ACTIONS
    assert PAD_INDEX not in range(N_ACTIONS)
    assert m.action.num_embeddings == N_ACTIONS + 1 and m.action.padding_idx == PAD_INDEX
    assert (m.action.weight[PAD_INDEX] == 0).all()


def test_model_actions_reads_padding_from_the_pin_id():
    # the data pads with PAD_ACTION, a real action's index; a real action with that code must stay itself
    pins = torch.tensor([[5, 7, PAD_PIN, PAD_PIN]])
    actions = torch.tensor([[2, PAD_ACTION, PAD_ACTION, PAD_ACTION]])
    assert model_actions(pins, actions).tolist() == [[2, PAD_ACTION, PAD_INDEX, PAD_INDEX]]


# --- the random time-window mask ----------------------------------------------------------------------------------


def test_time_window_mask_hides_exactly_the_actions_younger_than_the_window():
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    ages = torch.tensor([[0.5, 3.0, 12.0, 30.0, 0.0], [1.0, 2.0, 40.0, 0.0, 0.0]])
    visible, window = time_window_mask(valid, ages, 24.0, torch.Generator().manual_seed(3))
    expected_window = torch.rand(2, generator=torch.Generator().manual_seed(3)) * 24.0
    assert torch.allclose(window, expected_window)
    for row in range(2):
        for pos in range(5):
            want = bool(valid[row, pos]) and float(ages[row, pos]) >= float(window[row])
            assert bool(visible[row, pos]) == want, (row, pos, float(window[row]))


def test_time_window_mask_never_hides_every_action():
    valid = torch.tensor([[True, True, False], [False, False, False]])
    ages = torch.zeros(2, 3)  # all younger than any window > 0
    for seed in range(5):
        visible, _ = time_window_mask(valid, ages, 24.0, torch.Generator().manual_seed(seed))
        assert torch.equal(visible, valid)


def test_time_window_mask_is_reproducible_with_a_seeded_generator():
    valid = torch.ones(64, 10, dtype=torch.bool)
    ages = torch.rand(64, 10, generator=torch.Generator().manual_seed(0)) * 48
    a = time_window_mask(valid, ages, 24.0, torch.Generator().manual_seed(7))
    b = time_window_mask(valid, ages, 24.0, torch.Generator().manual_seed(7))
    c = time_window_mask(valid, ages, 24.0, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mask_probability_masks_that_share_of_the_rows_and_no_other():
    valid = torch.ones(4_000, 5, dtype=torch.bool)
    ages = torch.zeros(4_000, 5)
    ages[:, 0] = 0.1  # one action a few minutes old (hidden by almost any window), the rest far older
    ages[:, 1:] = 100.0
    visible, window = time_window_mask(valid, ages, 24.0, torch.Generator().manual_seed(0), probability=0.2)
    masked = ~visible[:, 0]
    assert 0.17 < masked.float().mean() < 0.23  # about a fifth of the rows, minus the few windows under 6 minutes
    assert (window[masked] > 0.1).all() and (window[~masked] <= 0.1).all()
    assert visible[:, 1:].all()  # older actions stay visible wherever the mask applied
    with pytest.raises(ValueError, match="mask_probability"):
        _cfg("transact_v11", mask_probability=1.5)


def test_time_window_mask_acts_in_training_only():
    m = _module("transact_v11", dropout=0.0, mask_probability=1.0)
    cand, seq, actions, _ = _inputs()
    ages = torch.full((4, L), 100.0)
    ages[0, :2] = 0.0  # row 0 has two actions from the request's moment: any window hides them
    run = lambda seed: m(cand, seq, actions, ages, torch.Generator().manual_seed(seed))  # noqa: E731
    with torch.no_grad():
        m.eval()
        # eval: the generator is unused, so two seeds give the same output (to rounding: the same kernels twice)
        torch.testing.assert_close(run(0), run(1), atol=1e-6, rtol=1e-6)
        evaluated = run(0)
        m.train()  # dropout 0: training differs from eval only by the mask
        masked = run(0)
        m.cfg.time_window_mask = False
        unmasked = run(0)
    assert torch.allclose(unmasked, evaluated, atol=1e-6)
    assert not torch.allclose(masked[0], unmasked[0], atol=1e-4)  # recent actions hidden
    assert torch.allclose(masked[1:], unmasked[1:], atol=1e-6)  # nothing within 24 h: nothing to hide


def test_training_with_the_mask_needs_ages():
    m = _module("transact_v11").train()
    cand, seq, actions, _ = _inputs()
    with pytest.raises(ValueError, match="seq_age_h"):
        m(cand, seq, actions, None)


# --- Pinnability --------------------------------------------------------------------------------------------------


def _pinnability(kind: str = "transact_v11", n_pins: int = 30, seed: int = 0, **seq_kw) -> Pinnability:
    torch.manual_seed(seed)
    cfg = PinnabilityConfig(n_interests=5, hidden=(16,), sequence=_cfg(kind, **seq_kw))
    return Pinnability(cfg, torch.randn(n_pins, D), user_dim=6)


def _batch(batch: int = 5, n_pins: int = 30, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    seq_pins = torch.randint(0, n_pins, (batch, L), generator=g)
    seq_pins[1, 2:] = PAD_PIN
    seq_pins[2] = PAD_PIN
    actions = torch.randint(1, N_ACTIONS, (batch, L), generator=g).masked_fill(seq_pins < 0, PAD_ACTION)
    return {
        "segment": torch.randint(0, 4, (batch,), generator=g),
        "user_emb": torch.randn(batch, 6, generator=g),
        "pin_ids": torch.randint(0, n_pins, (batch,), generator=g),
        "interest": torch.randint(0, 5, (batch,), generator=g),
        "seq_pin_ids": seq_pins,
        "seq_actions": actions,
        "seq_age_h": torch.rand(batch, L, generator=g) * 48,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_pinnability_gives_one_logit_per_head(kind):
    model = _pinnability(kind).eval()
    logits = model(**_batch())
    assert logits.shape == (5, len(HEADS)) and torch.isfinite(logits).all()


def test_head_loss_weights_each_head():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    click, repin, hide = math.log(2), math.log(1 + math.e**2), math.log(1 + math.e)
    weights = {"click": 1.0, "repin": 2.0, "hide": 1.0}
    assert head_loss(logits, labels, weights).item() == pytest.approx((click + 2 * repin + hide) / 3, rel=1e-6)
    assert head_loss(logits, labels, {"click": 0.0, "repin": 0.0, "hide": 3.0}).item() == pytest.approx(hide)


def test_config_round_trips_through_json():
    cfg = PinnabilityConfig(
        n_interests=7, hidden=(32, 8), cross_layers=3, sequence=SequenceConfig(kind="lstm", early_fusion=False)
    )
    back = PinnabilityConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.sequence, SequenceConfig) and back.hidden == (32, 8)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown sequence kind"):
        SequenceConfig(kind="gru")


@pytest.mark.parametrize("kind", ["transact_v11", "none"])
def test_export_then_load_gives_the_same_outputs(kind, tmp_path):
    model = _pinnability(kind).eval()
    batch = _batch()
    export(model, tmp_path)
    loaded = load(tmp_path)
    assert not loaded.training and loaded.cfg == model.cfg
    with torch.no_grad():
        # the same weights through the loaded module: equal to float32 rounding (kernels may differ in order)
        torch.testing.assert_close(loaded(**batch), model(**batch), atol=1e-6, rtol=1e-5)


def test_exported_program_matches_the_module_at_any_batch_size(tmp_path):
    model = _pinnability().train()
    export(model, tmp_path, program=True)
    assert model.training  # exporting leaves the caller's mode alone
    program = torch.export.load(tmp_path / "model.pt2").module()
    batch = _batch(batch=7, seed=2)  # dict order = the contract's order; the program takes positional inputs
    with torch.no_grad():
        assert torch.allclose(program(*batch.values()), model.eval()(**batch), atol=1e-6)


def test_no_torchrec_anywhere_in_the_ranking_model():
    imports = re.compile(r"^\s*(import|from)\s+torchrec", re.MULTILINE)  # docstrings may name it
    assert not [p.name for p in (REPO / "models" / "ranking").glob("*.py") if imports.search(p.read_text())]
    code = "import sys, models.ranking.pinnability, models.ranking.sequence; print(any('torchrec' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- it learns short-term intent ----------------------------------------------------------------------------------


def _intent_data(n: int, n_pins: int, g: torch.Generator) -> tuple[dict, torch.Tensor]:
    """Label 1 when the candidate is the pin of the newest action: only the sequence can tell."""
    seq_pins = torch.randint(0, n_pins, (n, L), generator=g)
    positive = torch.rand(n, generator=g) < 0.5
    other = (seq_pins[:, 0] + torch.randint(1, n_pins, (n,), generator=g)) % n_pins  # never the newest pin
    pin_ids = torch.where(positive, seq_pins[:, 0], other)
    batch = {
        "segment": torch.zeros(n, dtype=torch.long),
        "user_emb": torch.zeros(n, 6),
        "pin_ids": pin_ids,
        "interest": torch.zeros(n, dtype=torch.long),
        "seq_pin_ids": seq_pins,
        "seq_actions": torch.randint(1, N_ACTIONS, (n, L), generator=g),
        "seq_age_h": torch.full((n, L), 100.0),  # older than any window: the mask leaves them alone
    }
    return batch, positive.float().unsqueeze(1).expand(-1, len(HEADS)).contiguous()


def _train_and_score(kind: str, steps: int = 300) -> float:
    n_pins = 20
    model = _pinnability(kind, n_pins=n_pins, seed=1, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch, labels = _intent_data(128, n_pins, g)
        loss = head_loss(model(**batch, generator=g), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch, labels = _intent_data(1000, n_pins, torch.Generator().manual_seed(99))
    with torch.no_grad():
        predicted = model.eval()(**batch)[:, 1] > 0
    return (predicted == labels[:, 1].bool()).float().mean().item()


def test_transact_learns_short_term_intent_that_no_sequence_cannot():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine's cores are shared
    try:
        with_sequence, without = _train_and_score("transact_v11"), _train_and_score("none")
    finally:
        torch.set_num_threads(threads)
    assert without < 0.6  # the label is independent of every non-sequence feature
    assert with_sequence > 0.8 and with_sequence > without + 0.2, (with_sequence, without)
