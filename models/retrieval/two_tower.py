"""The two-tower retrieval model (seed 000): a user tower computed once per request and a pin tower computed
offline for the whole corpus; relevance is the inner product of their L2-normalised outputs.

This is the walking-skeleton version: ID embeddings, categorical and dense features and MLP towers. Feature
crossing (MaskNet/DHEN), pretrained IDs, multi-embedding and conditional retrieval come in issue F4 behind the same
inputs and outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import FrozenEmbedding, mlp


@dataclass
class TwoTowerConfig:
    n_users: int
    n_pins: int
    n_interests: int
    n_segments: int = 4
    id_dim: int = 32
    out_dim: int = 64
    hidden: tuple[int, ...] = (128,)
    id_dropout: float = 0.5  # seed 000: aggressive dropout on ID embeddings against overfitting
    temperature: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


def init_id_embedding(table: nn.Embedding, std: float = 0.01) -> None:
    """Start ID vectors near zero. Most IDs are seen in few examples; at PyTorch's default N(0, 1) their untrained
    vectors outweigh the content features and scatter similar pins apart. Measured on the default world (3 epochs):
    recall@100 0.332 with this init against 0.121 with the default (popularity: 0.242)."""
    nn.init.normal_(table.weight, std=std)


class UserTower(nn.Module):
    """Inputs (batch B):
        user_id [B] int64; segment [B] int64; declared [B, K] float multi-hot;
        seq_pin_ids [B, L] int64 (recent engaged pins, -1 padding).
    Output: [B, out_dim] unit vectors.
    """

    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor):
        super().__init__()
        self.user_id = nn.Embedding(cfg.n_users, cfg.id_dim)
        init_id_embedding(self.user_id)
        self.segment = nn.Embedding(cfg.n_segments, 8)
        self.content = FrozenEmbedding(content)
        self.id_dropout = nn.Dropout(cfg.id_dropout)
        in_dim = cfg.id_dim + 8 + cfg.n_interests + self.content.dim
        self.net = mlp(in_dim, cfg.hidden, cfg.out_dim)

    def forward(self, user_id, segment, declared, seq_pin_ids) -> torch.Tensor:
        seq = self.content(seq_pin_ids)  # [B, L, d]
        filled = (seq_pin_ids >= 0).unsqueeze(-1).float()
        seq_mean = (seq * filled).sum(1) / filled.sum(1).clamp(min=1.0)
        x = torch.cat([self.id_dropout(self.user_id(user_id)), self.segment(segment), declared, seq_mean], dim=-1)
        return F.normalize(self.net(x), dim=-1)


class PinTower(nn.Module):
    """Inputs: pin_id [B] int64; interest [B] int64. Content embedding is looked up by pin id.
    Output: [B, out_dim] unit vectors."""

    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor):
        super().__init__()
        self.pin_id = nn.Embedding(cfg.n_pins, cfg.id_dim)
        init_id_embedding(self.pin_id)
        self.interest = nn.Embedding(cfg.n_interests, 16)
        self.content = FrozenEmbedding(content)
        self.id_dropout = nn.Dropout(cfg.id_dropout)
        self.net = mlp(cfg.id_dim + 16 + self.content.dim, cfg.hidden, cfg.out_dim)

    def forward(self, pin_id, interest) -> torch.Tensor:
        x = torch.cat([self.id_dropout(self.pin_id(pin_id)), self.interest(interest), self.content(pin_id)], dim=-1)
        return F.normalize(self.net(x), dim=-1)


class TwoTower(nn.Module):
    """Example:
    >>> cfg = TwoTowerConfig(n_users=10, n_pins=20, n_interests=4)
    >>> m = TwoTower(cfg, torch.randn(20, 8))
    >>> u = m.user(torch.tensor([1]), torch.tensor([0]), torch.zeros(1, 4), torch.tensor([[3, -1]]))
    >>> p = m.pin(torch.tensor([3, 4]), torch.tensor([0, 1]))
    >>> (u @ p.T).shape
    torch.Size([1, 2])
    """

    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.user = UserTower(cfg, content)
        self.pin = PinTower(cfg, content)

    def forward(self, user_id, segment, declared, seq_pin_ids, pin_id, interest):
        """Both towers for a batch of positive pairs: ([B, out], [B, out])."""
        return self.user(user_id, segment, declared, seq_pin_ids), self.pin(pin_id, interest)

    def loss(self, user_vec: torch.Tensor, pin_vec: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """Sampled softmax over in-batch negatives with logQ correction: popular pins appear as negatives more
        often than uniform sampling would, so their logits are lowered by log(sampling probability)."""
        logits = user_vec @ pin_vec.T / self.cfg.temperature - log_q[None, :]
        labels = torch.arange(len(user_vec), device=user_vec.device)
        return F.cross_entropy(logits, labels)
