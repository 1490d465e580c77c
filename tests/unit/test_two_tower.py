"""The two-tower model: shapes per crossing kind, TorchRec ID bags, ID dropout, conditional input, pretrained IDs
and the sampled-softmax loss with logQ correction and mixed negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.retrieval.crossing import KINDS, make_crossing
from models.retrieval.two_tower import TwoTower, TwoTowerConfig, _bags

pytestmark = pytest.mark.unit
N_USERS, N_PINS, N_INTERESTS = 30, 50, 5


def _model(**kw) -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(n_users=N_USERS, n_pins=N_PINS, n_interests=N_INTERESTS, **kw)
    return TwoTower(cfg, torch.randn(N_PINS, 8))


def _user_inputs(b: int = 4):
    seq = torch.full((b, 6), -1, dtype=torch.int64)
    seq[0, :3] = torch.tensor([1, 2, 3])
    seq[1, :1] = torch.tensor([7])  # row 2 and 3: no actions at all
    return torch.arange(b), torch.zeros(b, dtype=torch.int64), torch.zeros(b, N_INTERESTS), seq


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("conditional", [False, True])
def test_towers_give_unit_vectors_for_every_crossing(kind, conditional):
    model = _model(crossing=kind, conditional=conditional).eval()
    u = model.user(*_user_inputs())
    p = model.pin(torch.tensor([0, 5, 9]), torch.tensor([0, 1, 4]))
    assert u.shape == (4, 64) and p.shape == (3, 64)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(p.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("kind", KINDS)
def test_crossing_maps_fields_to_its_out_dim_and_trains(kind):
    m = make_crossing(kind, n_fields=4, field_dim=8)
    x = torch.randn(3, 4, 8, requires_grad=True)
    y = m(x)
    assert y.shape == (3, m.out_dim)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unknown_crossing_is_refused():
    with pytest.raises(ValueError, match="unknown crossing"):
        make_crossing("fm", 3, 8)


def test_engaged_pins_are_a_mean_pooled_bag_and_padding_never_reaches_the_table():
    model = _model(crossing="none").eval()
    table = model.user.ids.embedding_bags["seq_pin_id"].weight
    bags = _bags(torch.tensor([0, 1]), torch.tensor([[1, 2, 3], [-1, -1, -1]]), ("user_id", "seq_pin_ids"))
    assert bags["seq_pin_ids"].values().tolist() == [1, 2, 3]  # the padding is not in the jagged values
    pooled = model.user.ids(bags)
    torch.testing.assert_close(pooled["seq_pin_ids"][0], table[[1, 2, 3]].mean(0))
    torch.testing.assert_close(pooled["seq_pin_ids"][1], torch.zeros(table.shape[1]))  # an empty bag: zeros


def test_id_dropout_half_in_training_none_in_eval():
    model = _model(crossing="none")
    pooled = torch.ones(1000, 32)
    model.train()
    dropped = model.user.id_dropout(pooled)
    assert 0.4 < (dropped == 0).float().mean() < 0.6  # p = 0.5, as seed 000 prescribes
    model.eval()
    torch.testing.assert_close(model.user.id_dropout(pooled), pooled)
    a, b = model.user(*_user_inputs()), model.user(*_user_inputs())
    torch.testing.assert_close(a, b)  # eval is deterministic
    model.train()
    assert not torch.allclose(model.user(*_user_inputs()), model.user(*_user_inputs()))
    quiet = _model(crossing="none", id_dropout=0.0).train()
    torch.testing.assert_close(quiet.user(*_user_inputs()), quiet.user(*_user_inputs()))


def test_condition_changes_the_user_vector_and_none_means_no_interest():
    model = _model(conditional=True).eval()
    args = _user_inputs()
    plain = model.user(*args)
    torch.testing.assert_close(plain, model.user(*args, torch.full((4,), N_INTERESTS)))
    assert not torch.allclose(plain, model.user(*args, torch.full((4,), 2)))


def test_pretrained_ids_are_copied_into_every_id_table_and_can_be_frozen():
    model = _model()
    user, pin = torch.randn(N_USERS, 32), torch.randn(N_PINS, 32)
    model.load_pretrained_ids(user, pin, freeze=True)
    torch.testing.assert_close(model.user.ids.embedding_bags["user_id"].weight, user)
    torch.testing.assert_close(model.user.ids.embedding_bags["seq_pin_id"].weight, pin)
    torch.testing.assert_close(model.pin.ids.embedding_bags["pin_id"].weight, pin)
    assert not model.pin.ids.embedding_bags["pin_id"].weight.requires_grad
    with pytest.raises(ValueError, match="pretrained ids of shape"):
        model.load_pretrained_ids(user[:3], pin)


def test_loss_is_softmax_over_logq_corrected_in_batch_and_random_negatives():
    model = _model()
    t, b, r = model.cfg.temperature, 4, 3
    u, p, neg = (F.normalize(torch.randn(n, 8), dim=1) for n in (b, b, r))
    pin_ids, neg_ids = torch.tensor([10, 11, 12, 13]), torch.tensor([11, 40, 41])
    log_q = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    got = model.loss(u, p, pin_ids, log_q, neg, neg_ids)
    logits = torch.cat([u @ p.T / t - (log_q + math.log(b))[None, :], u @ neg.T / t - math.log(r / N_PINS)], dim=1)
    logits[1, b + 0] = float("-inf")  # row 1's positive is pin 11, which was also drawn as a random negative
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.arange(b)))


def test_uniform_sampling_needs_no_correction_and_a_repeated_positive_is_not_a_negative():
    model = _model()
    u, p = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    uniform = torch.full((4,), math.log(1 / 4))  # every pin q = 1/B: the correction is the same for all candidates
    plain = F.cross_entropy(u @ p.T / model.cfg.temperature, torch.arange(4))
    torch.testing.assert_close(model.loss(u, p, torch.arange(4), uniform), plain)
    # rows 0 and 1 share their positive pin: neither may count the other's copy as a negative
    twice = model.loss(u, p, torch.tensor([7, 7, 8, 9]), uniform)
    logits = u @ p.T / model.cfg.temperature
    logits[0, 1] = logits[1, 0] = float("-inf")
    torch.testing.assert_close(twice, F.cross_entropy(logits, torch.arange(4)))


def test_multi_embedding_tower_gives_a_vector_per_capsule_and_one_for_a_user_without_actions():
    model = _model(capsules=3).eval()
    vecs, valid, weights = model.user.multi(*_user_inputs())
    assert vecs.shape == (4, 3, 64) and valid.shape == (4, 3)
    assert valid.sum(1).tolist() == [3, 1, 1, 1]  # 3 actions -> up to 3 capsules; 1 action -> 1; none -> slot 0
    # every action in exactly one capsule; the weights are straight-through counts, integers only to float32 rounding
    torch.testing.assert_close(weights.sum(1), torch.tensor([3.0, 1.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(vecs.norm(dim=-1)[valid], torch.ones(int(valid.sum())))
    heaviest = weights.masked_fill(~valid, -1).argmax(1)
    torch.testing.assert_close(model.user(*_user_inputs()), vecs[torch.arange(4), heaviest])


def test_training_scores_each_positive_against_its_closest_capsule():
    model = _model(capsules=3).eval()
    args = _user_inputs()
    pin_id, interest = torch.tensor([1, 7, 9, 10]), torch.tensor([0, 1, 2, 3])
    u, p = model(*args, pin_id, interest)
    vecs, valid, _ = model.user.multi(*args)
    agree = torch.einsum("bko,bo->bk", vecs, p).masked_fill(~valid, float("-inf"))
    torch.testing.assert_close(u, vecs[torch.arange(4), agree.argmax(1)])
