"""The sampled softmax both retrieval trainings use (the two-tower and the ID pretraining): one definition."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sampled_softmax(
    query: torch.Tensor,
    cand: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_log_q: torch.Tensor,
    temperature: float,
    query_ids: torch.Tensor | None = None,
    neg: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> torch.Tensor:
    """Row i of `query` against every row of `cand` (and of `neg`); the positive is cand[i].

    Each candidate's logit is lowered by the log of how many times it is expected among a row's candidates (logQ
    correction): an id with sampling probability q appears B·q times in a batch of B positives, and one of R ids
    drawn uniformly from a corpus of n appears R/n times. Without it, popular ids, over-represented as in-batch
    negatives, are pushed down too hard. A column that is in fact another copy of row i's pair (the same candidate
    id, or with `query_ids` the same query id) is masked rather than counted as a negative.

    Args:
        cand_log_q [B]: log of each in-batch candidate's probability per draw.
        neg: (vectors [R, d], ids [R], n) uniform random negatives from a corpus of n ids (mixed negatives).
    """
    b = len(query)
    logits = query @ cand.T / temperature - (cand_log_q + math.log(b))[None, :]
    same = cand_ids[:, None] == cand_ids[None, :]
    if query_ids is not None:
        same |= query_ids[:, None] == query_ids[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    if neg is not None:
        neg_vec, neg_ids, n = neg
        extra = query @ neg_vec.T / temperature - math.log(len(neg_ids) / n)
        logits = torch.cat([logits, extra.masked_fill(cand_ids[:, None] == neg_ids[None, :], float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.arange(b, device=query.device))
