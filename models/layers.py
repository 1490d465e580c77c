"""Small layers shared by the retrieval and ranking models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) blocks, then an optional linear output layer without activation.

    Example:
        >>> mlp(16, [32, 32], 8)(torch.zeros(4, 16)).shape
        torch.Size([4, 8])
    """
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class FrozenEmbedding(nn.Module):
    """A lookup into fixed vectors (pin content embeddings); index -1 is padding and returns zeros.

    Args:
        table: [N, d] float tensor, stored as a buffer so it moves with the module but is never trained.
    """

    def __init__(self, table: torch.Tensor):
        super().__init__()
        pad = torch.zeros(1, table.shape[1], dtype=table.dtype)
        self.register_buffer("table", torch.cat([table, pad], dim=0))

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # -1 indexes the appended zero row
        return self.table[torch.where(ids < 0, torch.full_like(ids, self.table.shape[0] - 1), ids)]
