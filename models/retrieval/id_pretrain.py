"""Contrastive pretraining of user and pin ID embeddings (seed 000: "pre-trained large-scale user and Pin ID
embeddings through contrastive learning", with torchrec).

Two torchrec tables, "user_id" [n_users, dim] and "pin_id" [n_pins, dim], in one `EmbeddingBagCollection` fed by a
`KeyedJaggedTensor` with one id per bag: the same table names and shapes as the two-tower's ID tables, so the
pretrained rows load straight into them (frozen or fine-tuned, with dropout p=0.5 there, not here).

The objective is an in-batch sampled softmax over co-engagement pairs with a temperature and logQ correction:
  * user -> pin and pin -> user (symmetric) over (user, engaged pin) pairs;
  * optionally pin -> pin (symmetric) over pairs of pins the same user engaged with shortly one after the other.
In-batch negatives are drawn in proportion to how often an id appears in the pairs, so each negative's logit is
lowered by its log sampling probability (log_q); without it the embeddings learn popularity more than affinity.
A column whose pair shares an id with the row's pair (the same pin twice in a batch, or another pin of the same user)
is a positive of that row too: it is masked, not counted as a negative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.retrieval.losses import sampled_softmax

USER_TABLE, PIN_TABLE = "user_id", "pin_id"


@dataclass
class IdPretrainConfig:
    n_users: int
    n_pins: int
    dim: int = 32
    temperature: float = 0.1
    init_std: float = 0.1  # small but not near zero: nothing else feeds these vectors, they learn from scratch

    def to_dict(self) -> dict:
        return asdict(self)


class IdPretrainModel(nn.Module):
    """Example:
    >>> m = IdPretrainModel(n_users=10, n_pins=20, dim=8)
    >>> u, p = m(torch.tensor([1, 2]), torch.tensor([3, 4, 5]))
    >>> u.shape, p.shape
    (torch.Size([2, 8]), torch.Size([3, 8]))
    >>> loss = m.loss(u, p[:2], torch.tensor([1, 2]), torch.tensor([3, 4]), torch.zeros(2), torch.zeros(2))
    """

    def __init__(self, n_users: int, n_pins: int, dim: int = 32, temperature: float = 0.1, init_std: float = 0.1):
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        self.cfg = IdPretrainConfig(n_users, n_pins, dim, temperature, init_std)
        init = partial(nn.init.normal_, mean=0.0, std=init_std)
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=name,
                    embedding_dim=dim,
                    num_embeddings=n,
                    feature_names=[name],
                    pooling=PoolingType.SUM,  # one id per bag: the sum is the row itself
                    init_fn=init,
                )
                for name, n in ((USER_TABLE, n_users), (PIN_TABLE, n_pins))
            ],
            device=torch.device("cpu"),
        )

    @classmethod
    def from_config(cls, cfg: IdPretrainConfig | dict) -> IdPretrainModel:
        cfg = cfg if isinstance(cfg, IdPretrainConfig) else IdPretrainConfig(**cfg)
        return cls(cfg.n_users, cfg.n_pins, cfg.dim, cfg.temperature, cfg.init_std)

    def tables(self) -> dict[str, torch.Tensor]:
        """The raw table rows: {"user": [n_users, dim], "pin": [n_pins, dim]} (detached copies)."""
        bags = self.ebc.embedding_bags
        return {"user": bags[USER_TABLE].weight.detach().clone(), "pin": bags[PIN_TABLE].weight.detach().clone()}

    def forward(self, user_ids: torch.Tensor, pin_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """user_ids [Bu] and pin_ids [Bp] int64 (the two may differ in length) -> ([Bu, dim], [Bp, dim]) unit vectors.

        One KeyedJaggedTensor carries both keys; its batch is max(Bu, Bp) and the shorter key's extra bags are empty.
        """
        from torchrec import KeyedJaggedTensor

        bu, bp = len(user_ids), len(pin_ids)
        stride = max(bu, bp)
        lengths = torch.zeros(2 * stride, dtype=torch.int64)
        lengths[:bu] = 1
        lengths[stride : stride + bp] = 1
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=[USER_TABLE, PIN_TABLE],
            values=torch.cat([user_ids, pin_ids]).long(),
            lengths=lengths,
        )
        out = self.ebc(kjt)
        return F.normalize(out[USER_TABLE][:bu], dim=-1), F.normalize(out[PIN_TABLE][:bp], dim=-1)

    def _softmax(self, a, b, a_ids, b_ids, b_log_q, neg=None) -> torch.Tensor:
        """Row i of `a` against every row of `b` (and `neg`): pairs that share either id are not negatives."""
        return sampled_softmax(a, b, b_ids, b_log_q, self.cfg.temperature, query_ids=a_ids, neg=neg)

    def loss(
        self,
        user_vec: torch.Tensor,
        pin_vec: torch.Tensor,
        user_ids: torch.Tensor,
        pin_ids: torch.Tensor,
        user_log_q: torch.Tensor,
        pin_log_q: torch.Tensor,
        neg_vec: torch.Tensor | None = None,
        neg_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Symmetric in-batch softmax over B (user, pin) pairs: mean of the user->pin and pin->user losses.

        user_log_q / pin_log_q [B]: log of each id's share of the training pairs (its in-batch sampling probability).
        neg_vec [R, dim] / neg_ids [R]: optional pins drawn uniformly from the whole corpus, extra negatives of the
        user->pin side (mixed negative sampling): in-batch negatives alone never push away the pins absent from the
        pairs, whose random initial vectors would otherwise score like anything else.
        """
        neg = None if neg_vec is None else (neg_vec, neg_ids, self.cfg.n_pins)
        up = self._softmax(user_vec, pin_vec, user_ids, pin_ids, pin_log_q, neg)
        pu = self._softmax(pin_vec, user_vec, pin_ids, user_ids, user_log_q)
        return 0.5 * (up + pu)

    def pin_pair_loss(
        self,
        a_vec: torch.Tensor,
        b_vec: torch.Tensor,
        a_ids: torch.Tensor,
        b_ids: torch.Tensor,
        a_log_q: torch.Tensor,
        b_log_q: torch.Tensor,
        neg_vec: torch.Tensor | None = None,
        neg_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Symmetric in-batch softmax over B (pin, pin) co-engagement pairs, with the same optional uniform negatives."""
        neg = None if neg_vec is None else (neg_vec, neg_ids, self.cfg.n_pins)
        ab = self._softmax(a_vec, b_vec, a_ids, b_ids, b_log_q, neg)
        ba = self._softmax(b_vec, a_vec, b_ids, a_ids, a_log_q, neg)
        return 0.5 * (ab + ba)
