from functools import partial

import pytest
import torch

from models.retrieval.multi_embedding import CapsuleClustering, maxmin_init, round_robin_merge, top_representative

pytestmark = pytest.mark.unit

DIM = 16


def _planted(n_clusters: int = 3, per_cluster: int = 8, batch: int = 4, seed: int = 0):
    """Actions from n_clusters tight groups around far-apart centres, in blocks along the sequence (newest first):
    taking the first k actions would pick one cluster only, so a maxmin pass is needed to span them."""
    g = torch.Generator().manual_seed(seed)
    centres = 5.0 * torch.nn.functional.normalize(torch.randn(batch, n_clusters, DIM, generator=g), dim=-1)
    labels = torch.arange(n_clusters).repeat_interleave(per_cluster)  # [L]
    seq = centres[:, labels] + 0.05 * torch.randn(batch, labels.numel(), DIM, generator=g)
    return seq, labels


def _same_partition(assignment: torch.Tensor, labels: torch.Tensor) -> bool:
    """True when assignment equals labels up to a relabelling (a bijection between groups)."""
    pairs = set(zip(assignment.tolist(), labels.tolist(), strict=True))
    return len(pairs) == len(set(labels.tolist())) == len({a for a, _ in pairs})


def test_maxmin_first_pick_is_newest_and_next_picks_span_the_clusters():
    seq, labels = _planted()
    idx, valid = maxmin_init(seq, torch.ones(seq.shape[:2], dtype=torch.bool), k=3)
    assert valid.all()
    assert (idx[:, 0] == 0).all()  # newest action first
    for row in idx:
        assert sorted(labels[row].tolist()) == [0, 1, 2]  # one pick per planted cluster


def test_maxmin_first_pick_skips_leading_padding():
    seq = torch.randn(1, 4, DIM)
    idx, _ = maxmin_init(seq, torch.tensor([[False, True, True, True]]), k=1)
    assert idx.tolist() == [[1]]


def test_maxmin_with_fewer_valid_actions_than_k_marks_extra_slots_invalid():
    seq = torch.zeros(2, 6, DIM)
    seq[:, 2:] = 100.0  # far-away padding would be the maxmin choice if padding were not excluded
    seq[0, 1] = 1.0
    mask = torch.tensor([[True, True, False, False, False, False], [False] * 6])
    idx, valid = maxmin_init(seq, mask, k=4)
    assert valid.tolist() == [[True, True, False, False], [False] * 4]
    assert idx.tolist() == [[0, 1, -1, -1], [-1] * 4]


def test_maxmin_never_repeats_an_action_even_when_actions_coincide():
    seq = torch.zeros(1, 5, DIM)  # all distances zero
    idx, valid = maxmin_init(seq, torch.ones(1, 5, dtype=torch.bool), k=5)
    assert valid.all() and sorted(idx[0].tolist()) == [0, 1, 2, 3, 4]


def test_clustering_shapes_and_single_assignment():
    torch.manual_seed(0)
    layer = CapsuleClustering(dim=DIM, k=4, iterations=3, out_dim=8)
    seq = torch.randn(3, 12, DIM)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, :] = False  # a user with no history
    caps, ok, assign, weights = layer(seq, mask)
    assert caps.shape == (3, 4, 8) and ok.shape == weights.shape == (3, 4) and assign.shape == (3, 12)
    assert torch.isfinite(caps).all() and torch.isfinite(weights).all()
    # every valid action goes to exactly one live capsule, padding to none
    assert (assign[~mask] == -1).all()
    assert ((assign[mask] >= 0) & (assign[mask] < 4)).all()
    # The weights are hard counts in value, but carried by a straight-through estimator (hard + soft - soft.detach()),
    # so they land within float32 rounding of the integer, not on it; how far depends on the CPU's kernels.
    counts_close = partial(torch.testing.assert_close, atol=1e-5, rtol=0)
    counts_close(weights.sum(1).detach(), mask.sum(1).float())
    for b in range(3):
        counts = torch.bincount(assign[b][mask[b]], minlength=4)
        counts_close(weights[b].detach(), counts.float())
        assert torch.equal(ok[b], counts > 0)  # booleans from integer counts
    assert (caps[~ok] == 0).all()
    assert not ok[2].any()


def test_clustering_recovers_planted_clusters():
    seq, labels = _planted()
    mask = torch.ones(seq.shape[:2], dtype=torch.bool)
    _, ok, assign, weights = CapsuleClustering(dim=DIM, k=3)(seq, mask)
    assert ok.all()
    for b in range(seq.shape[0]):
        assert _same_partition(assign[b], labels)
    assert (weights == 8).all()


def test_clustering_with_more_capsules_than_clusters_keeps_capsules_pure():
    seq, labels = _planted()
    mask = torch.ones(seq.shape[:2], dtype=torch.bool)
    mask[:, -3:] = False
    _, _, assign, _ = CapsuleClustering(dim=DIM, k=5)(seq, mask)
    for b in range(seq.shape[0]):
        for capsule in assign[b][mask[b]].unique():
            assert labels[assign[b] == capsule].unique().numel() == 1  # no capsule mixes two interests


def test_gradients_reach_the_bilinear_map_through_capsules_and_routing():
    torch.manual_seed(0)
    layer = CapsuleClustering(dim=DIM, k=3)
    seq = torch.randn(2, 10, DIM, requires_grad=True)
    mask = torch.ones(2, 10, dtype=torch.bool)
    caps, _, _, weights = layer(seq, mask)
    caps.pow(2).sum().backward(retain_graph=True)
    grad = layer.bilinear.grad.clone()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.isfinite(seq.grad).all()
    # weights are hard counts forward; only the straight-through softmax can carry a gradient back
    layer.bilinear.grad = None
    weights[:, 0].sum().backward()
    assert torch.isfinite(layer.bilinear.grad).all() and layer.bilinear.grad.abs().sum() > 0


def test_clustering_is_deterministic():
    seq, _ = _planted()
    mask = torch.ones(seq.shape[:2], dtype=torch.bool)
    layer = CapsuleClustering(dim=DIM, k=4)
    a, b = layer(seq, mask), layer(seq, mask)
    assert torch.equal(a[2], b[2]) and torch.equal(a[1], b[1])  # the routing (integers, booleans) is the same
    # the float outputs too, to rounding: the same kernels on the same input, but no bit-for-bit promise across threads
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)


def test_top_representative_keeps_heaviest_valid_capsules():
    caps = torch.arange(5.0).view(1, 5, 1).expand(2, 5, 3)
    valid = torch.tensor([[True, True, False, True, True], [True, False, False, False, False]])
    weights = torch.tensor([[3.0, 5.0, 9.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    emb, ok = top_representative(caps, valid, weights, k_serve=3)
    assert emb.shape == (2, 3, 3)
    # the invalid capsule 2 loses despite its weight; the tie 3 vs 3 keeps capsule order
    assert emb[0, :, 0].tolist() == [1.0, 0.0, 4.0] and ok[0].all()
    assert emb[1, 0, 0] == 0.0 and ok[1].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="k_serve"):
        top_representative(caps, valid, weights, k_serve=6)


def test_round_robin_merge_order_and_dedup():
    lists = [[1, 2, 3], [2, 4], [5]]
    # round 0: 1, 2, 5; round 1: 2 (taken), 4; round 2: 3
    assert round_robin_merge(lists, n=5) == [1, 2, 5, 4, 3]
    assert round_robin_merge(lists, n=10) == [1, 2, 5, 4, 3]
    assert round_robin_merge(lists, n=4) == [1, 2, 5, 4]
    assert round_robin_merge(lists, n=0) == []
    assert round_robin_merge([], n=3) == [] and round_robin_merge([[], [7]], n=3) == [7]
    with pytest.raises(ValueError, match="n"):
        round_robin_merge(lists, n=-1)
