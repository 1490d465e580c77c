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


class CrossNetV2(nn.Module):
    """DCN v2's cross network: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, per layer.

    Each layer raises the polynomial degree of the feature interactions by one while the residual keeps the lower
    ones, so `layers` cross layers model interactions up to degree layers + 1 at the cost of one matmul each.
    W_l is full rank by default; with `rank` r it is the DCN v2 paper's low-rank form U_l V_l^T (dim x r, r x dim):
    2 * dim * r weights instead of dim^2, which is what makes crossing a wide input (a flattened sequence output
    next to the other features) affordable and trainable.

    Example:
        >>> CrossNetV2(12, layers=2)(torch.zeros(3, 12)).shape
        torch.Size([3, 12])
        >>> CrossNetV2(12, layers=2, rank=4)(torch.zeros(3, 12)).shape
        torch.Size([3, 12])
    """

    def __init__(self, dim: int, layers: int = 2, rank: int | None = None):
        super().__init__()
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be >= 1 or None (full rank); got {rank}")

        def weight() -> nn.Module:
            if rank is None or rank >= dim:
                return nn.Linear(dim, dim)
            return nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))

        self.layers = nn.ModuleList(weight() for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for linear in self.layers:
            x = x0 * linear(x) + x
        return x
