"""Multi-embedding retrieval building blocks (seed 000): one user yields up to K embeddings, one per interest.

The user tower clusters the user's action sequence with capsule-network routing (a differentiable clustering):
    1. `maxmin_init` picks K mutually distant actions as the initial cluster centres (farthest-point), so the
       routing starts with one centre per distinct interest instead of K near-copies of the dominant one and
       converges in a few iterations;
    2. `CapsuleClustering` routes every action to exactly one capsule (single-assignment routing), so each
       capsule summarises a disjoint set of actions and the K embeddings stay diverse;
    3. `top_representative` keeps the K_serve capsules that hold the most actions, bounding ANN cost per request;
    4. `round_robin_merge` interleaves the per-embedding ANN results, so every served interest gets slots near
       the top of the candidate list rather than the heaviest one filling it.

Plain torch only (no torchrec) so the module also runs on the GPU machine's torch build.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NO_CAPSULE = -1  # assignment of padding actions


def _check_sequence(seq: torch.Tensor, mask: torch.Tensor) -> None:
    if seq.dim() != 3:
        raise ValueError(f"seq: expected [B, L, d], got shape {tuple(seq.shape)}")
    if mask.shape != seq.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected bool [B, L] = {tuple(seq.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")


def maxmin_init(seq: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Farthest-point (maxmin) choice of k initial cluster centres among the valid actions.

    The first centre is the newest valid action (sequences are newest first, so the first True of `mask`): the
    choice is deterministic, identical at training and serving, and anchors one cluster on the user's current
    intent, which is the interest most likely to predict the next engagement. Each next centre is the valid,
    not yet chosen action whose squared Euclidean distance to its nearest chosen centre is largest.

    Args:
        seq: [B, L, d] action embeddings (only their geometry is used; no gradient flows through a choice).
        mask: [B, L] bool, True for real actions, False for padding.
        k: number of centres wanted.

    Returns:
        idx: [B, k] int64 positions in the sequence; -1 where the slot is invalid.
        valid: [B, k] bool; a user with n < k valid actions gets n valid slots and k - n invalid ones, never a
            repeated action.

    Example:
        >>> seq = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.0]]])
        >>> maxmin_init(seq, torch.tensor([[True, True, True, False]]), k=4)
        (tensor([[ 0,  2,  1, -1]]), tensor([[ True,  True,  True, False]]))
    """
    _check_sequence(seq, mask)
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    x = seq.detach()
    batch = x.shape[0]
    rows = torch.arange(batch, device=x.device)
    idx = torch.full((batch, k), NO_CAPSULE, dtype=torch.long, device=x.device)
    valid = torch.zeros(batch, k, dtype=torch.bool, device=x.device)
    available = mask.clone()
    min_dist = torch.full(mask.shape, float("inf"), dtype=x.dtype, device=x.device)
    pick = mask.to(torch.int8).argmax(dim=1)  # first True = newest action
    # k is small (a handful of interests), so a loop over slots vectorised over the batch is cheap
    for j in range(k):
        ok = available[rows, pick]  # False once the user's valid actions are used up
        idx[:, j] = torch.where(ok, pick, torch.full_like(pick, NO_CAPSULE))
        valid[:, j] = ok
        available[rows, pick] = False
        centre = x[rows, pick].unsqueeze(1)  # [B, 1, d]
        dist = (x - centre).pow(2).sum(-1)
        # an invalid pick must not shrink distances, or it would bias the next choices
        min_dist = torch.where(ok.unsqueeze(1), torch.minimum(min_dist, dist), min_dist)
        pick = min_dist.masked_fill(~available, -1.0).argmax(dim=1)  # farthest from every chosen centre
    return idx, valid


def squash(z: torch.Tensor, dim: int = -1, eps: float = 1e-9) -> torch.Tensor:
    """Capsule-network squash: keeps the direction, maps the length n to n^2 / (1 + n^2) in [0, 1).

    The length then reads as how strongly the capsule's actions agree; eps keeps an empty (zero) capsule at zero
    instead of NaN."""
    sq = z.pow(2).sum(dim, keepdim=True)
    return z * (sq / (1.0 + sq)) / torch.sqrt(sq + eps)


class CapsuleClustering(nn.Module):
    """Differentiable clustering of a user's actions into at most k interest capsules.

    Every action i is mapped into capsule space by a shared bilinear map, u_i = e_i S. The capsules start at the
    maxmin-chosen actions; each routing iteration then
        logits_ij = <u_i, c_j>                                  (agreement of action i with capsule j)
        w_ij      = one_hot(argmax_j logits_ij)  forward        (single assignment: one capsule per action)
                    softmax_j(logits_ij)          backward      (straight-through estimator)
        c_j       = squash(sum_i w_ij u_i / sum_i w_ij)
    The hard argmax has zero gradient almost everywhere, so without the estimator S would learn nothing from
    the routing; passing the softmax's gradient through treats the assignment as its soft relaxation on the way
    back while the forward pass (and serving) stays a true partition of the actions.

    Capsules average their votes rather than sum them (as MIND does): a sum lets the biggest cluster's capsule
    grow longest and win the dot-product logits of borderline actions, a rich-get-richer effect that works against
    the diversity single assignment is for. Cluster size is reported separately in `weights`.

    Args:
        dim: action embedding size d.
        k: maximum number of capsules (interests).
        iterations: routing iterations; maxmin initialisation lets a few (3) suffice.
        out_dim: capsule size (default d).

    Shapes:
        forward(seq [B, L, d], mask [B, L] bool) ->
            capsules [B, k, out_dim] (zeros where invalid), capsule_valid [B, k] bool,
            assignment [B, L] int64 (capsule of each action, -1 for padding),
            weights [B, k] float (number of actions routed to each capsule: its representativeness).

    Example:
        >>> layer = CapsuleClustering(dim=8, k=4)
        >>> caps, ok, assign, w = layer(torch.randn(2, 10, 8), torch.ones(2, 10, dtype=torch.bool))
        >>> caps.shape, assign.shape, w.sum(1).tolist()
        (torch.Size([2, 4, 8]), torch.Size([2, 10]), [10.0, 10.0])
    """

    def __init__(self, dim: int, k: int, iterations: int = 3, out_dim: int | None = None):
        super().__init__()
        if k < 1 or iterations < 1:
            raise ValueError(f"k and iterations must be >= 1, got k={k}, iterations={iterations}")
        self.k = k
        self.iterations = iterations
        self.bilinear = nn.Parameter(torch.empty(dim, out_dim or dim))
        # orthogonal: at the start capsule space is a rotation of action space, so routing clusters the actions'
        # own geometry until training reshapes it
        nn.init.orthogonal_(self.bilinear)

    def forward(
        self, seq: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_sequence(seq, mask)
        votes = seq @ self.bilinear  # [B, L, out]
        idx, init_valid = maxmin_init(votes, mask, self.k)
        centres = votes.gather(1, idx.clamp(min=0).unsqueeze(-1).expand(-1, -1, votes.shape[-1]))
        capsules = squash(centres) * init_valid.unsqueeze(-1)
        alive = init_valid
        for _ in range(self.iterations):
            logits = torch.einsum("blo,bko->blk", votes, capsules)
            # slots without a centre (fewer actions than k, or emptied by an earlier iteration) take no actions
            # (finite fill: a user with no valid action has no live slot, and an all -inf row would softmax to NaN)
            logits = logits.masked_fill(~alive.unsqueeze(1), torch.finfo(logits.dtype).min)
            soft = logits.softmax(dim=-1)
            hard = F.one_hot(logits.argmax(dim=-1), self.k).to(soft.dtype)
            # straight-through: (soft - soft.detach()) is exactly 0 forward, so adding it to hard last keeps the
            # forward weights whole counts on every CPU, while the gradient flows through soft
            route = (hard + (soft - soft.detach())) * mask.unsqueeze(-1)  # padding routes nowhere
            weights = route.sum(dim=1)  # [B, k]
            alive = weights.detach() > 0
            mean = torch.einsum("blk,blo->bko", route, votes) / weights.detach().clamp(min=1.0).unsqueeze(-1)
            capsules = squash(mean) * alive.unsqueeze(-1)
        assignment = torch.where(mask, logits.argmax(dim=-1), torch.full_like(mask, NO_CAPSULE, dtype=torch.long))
        return capsules, alive, assignment, weights


def top_representative(
    capsules: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor, k_serve: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k_serve capsules holding the most actions, heaviest first; valid capsules always rank above invalid.

    Ties keep the capsule order (stable sort), so capsule 0, seeded on the newest action, wins a tie.

    Args:
        capsules: [B, k, out]; valid: [B, k] bool; weights: [B, k]; k_serve <= k.

    Returns:
        emb [B, k_serve, out] and valid [B, k_serve] (a user with fewer valid capsules gets invalid tail slots,
        which serving skips: no ANN query for them).

    Example:
        >>> caps = torch.eye(3).unsqueeze(0)
        >>> emb, ok = top_representative(caps, torch.tensor([[True, True, False]]), torch.tensor([[1.0, 4.0, 9.0]]), 2)
        >>> emb[0].argmax(-1).tolist(), ok.tolist()
        ([1, 0], [[True, True]])
    """
    if not 1 <= k_serve <= capsules.shape[1]:
        raise ValueError(f"k_serve: expected 1..{capsules.shape[1]} (the number of capsules), got {k_serve}")
    score = weights.detach().masked_fill(~valid, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k_serve]
    emb = capsules.gather(1, order.unsqueeze(-1).expand(-1, -1, capsules.shape[-1]))
    return emb, valid.gather(1, order)


def round_robin_merge(
    result_lists: Sequence[Sequence], n: int, key: Callable[[object], Hashable] | None = None
) -> list:
    """Merge per-embedding ANN results (each best first) into one list of at most n unique items.

    Round r takes the r-th item of every list, in list order (pass the lists heaviest capsule first, as
    `top_representative` orders them); an item already taken is skipped, without taking a replacement from the
    same list in that round. Every interest thus gets a slot near the top whatever its cluster size. With `key`,
    items are told apart by key(item) (say, a hit's pin id) and the first one met is kept.

    Example:
        >>> round_robin_merge([[1, 2, 3], [2, 4], [5]], n=5)
        [1, 2, 5, 4, 3]
    """
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    key = key or (lambda item: item)
    merged: list = []
    seen: set = set()
    depth = max((len(r) for r in result_lists), default=0)
    for r in range(depth):
        for results in result_lists:
            if len(merged) == n:
                return merged
            if r < len(results) and key(results[r]) not in seen:
                seen.add(key(results[r]))
                merged.append(results[r])
    return merged
