"""Feature crossing inside a tower (seed 000): MaskNet for bit-wise crossing, DHEN to stack crossing modules.

A tower first turns each of its F input fields (an ID, a categorical, a pooled sequence, ...) into a d-dimensional
vector, giving a [B, F, d] field matrix. A crossing module maps it to one [B, out_dim] vector for the tower's MLP:

- `none`: the fields concatenated, no explicit crossing (the plain two-tower, our ablation baseline).
- `masknet`: parallel MaskBlocks (MaskNet, Wang et al. 2021). Each block computes an instance-guided mask from the
  whole input (two linear layers, the first wider) and multiplies it element-wise (Hadamard) into the layer-normed
  input, then a linear layer, layer norm and ReLU. The blocks' outputs are concatenated.
- `dhen`: DHEN layers (Zhang et al. 2022) stacked serially. Each layer runs several crossing modules in parallel on
  the same field matrix — MaskNet (bit-wise), a transformer encoder across fields (field-wise interaction: each
  field attends to the others), DCN v2 (explicit polynomial crossing) and an MLP — and combines their outputs back
  into a field matrix with a residual connection, so the next layer crosses the crossed features again.

Each kind is picked by name (`make_crossing`), so ablations change one config value.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import CrossNetV2, mlp

KINDS = ("none", "masknet", "dhen")


class MaskBlock(nn.Module):
    """One MaskBlock: out = ReLU(LN(W · (mask(x) ⊙ LN(x)))), mask(x) = W2 · ReLU(W1 · x), W1 `reduction` × wider.

    Example:
        >>> MaskBlock(12, 8)(torch.zeros(3, 12)).shape
        torch.Size([3, 8])
    """

    def __init__(self, in_dim: int, out_dim: int, reduction: float = 2.0):
        super().__init__()
        self.norm_in = nn.LayerNorm(in_dim)
        self.mask = nn.Sequential(
            nn.Linear(in_dim, int(in_dim * reduction)), nn.ReLU(), nn.Linear(int(in_dim * reduction), in_dim)
        )
        self.hidden = nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mask is computed from the raw input (instance-guided), applied to its normalised form
        return self.hidden(self.mask(x) * self.norm_in(x))


class MaskNet(nn.Module):
    """Parallel MaskNet: `blocks` MaskBlocks on the same input, outputs concatenated ([B, blocks · block_dim])."""

    def __init__(self, in_dim: int, blocks: int = 2, block_dim: int = 64, reduction: float = 2.0):
        super().__init__()
        self.blocks = nn.ModuleList(MaskBlock(in_dim, block_dim, reduction) for _ in range(blocks))
        self.out_dim = blocks * block_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([block(x) for block in self.blocks], dim=-1)


class Flatten(nn.Module):
    """No crossing: the fields side by side."""

    def __init__(self, n_fields: int, field_dim: int):
        super().__init__()
        self.out_dim = n_fields * field_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return fields.flatten(1)


class MaskNetCrossing(nn.Module):
    def __init__(self, n_fields: int, field_dim: int, blocks: int = 2, block_dim: int = 64):
        super().__init__()
        self.net = MaskNet(n_fields * field_dim, blocks, block_dim)
        self.out_dim = self.net.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.net(fields.flatten(1))


class DHENLayer(nn.Module):
    """One DHEN layer: MaskNet, a transformer encoder over fields, DCN v2 and an MLP in parallel on [B, F, d];
    their outputs, each brought back to F · d, are concatenated and projected to [B, F, d], plus the input
    (residual) and a layer norm."""

    def __init__(self, n_fields: int, field_dim: int, heads: int = 2, dropout: float = 0.0):
        super().__init__()
        flat = n_fields * field_dim
        self.n_fields, self.field_dim = n_fields, field_dim
        self.masknet = MaskNet(flat, blocks=1, block_dim=flat)
        self.attention = nn.TransformerEncoderLayer(
            field_dim, heads, dim_feedforward=2 * field_dim, dropout=dropout, batch_first=True
        )
        self.cross = CrossNetV2(flat, layers=1)
        self.mlp = mlp(flat, [flat], flat)
        self.combine = nn.Linear(4 * flat, flat)
        self.norm = nn.LayerNorm(field_dim)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        flat = fields.flatten(1)
        parts = [self.masknet(flat), self.attention(fields).flatten(1), self.cross(flat), self.mlp(flat)]
        mixed = self.combine(torch.cat(parts, dim=-1)).view_as(fields)
        return self.norm(fields + mixed)


class DHEN(nn.Module):
    def __init__(self, n_fields: int, field_dim: int, layers: int = 2, heads: int = 2):
        super().__init__()
        self.layers = nn.Sequential(*(DHENLayer(n_fields, field_dim, heads) for _ in range(layers)))
        self.out_dim = n_fields * field_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.layers(fields).flatten(1)


def make_crossing(kind: str, n_fields: int, field_dim: int) -> nn.Module:
    """The crossing module `kind` for F fields of d dims; it maps [B, F, d] to [B, module.out_dim].

    Example:
        >>> m = make_crossing("dhen", n_fields=5, field_dim=16)
        >>> m(torch.zeros(2, 5, 16)).shape == (2, m.out_dim)
        True
    """
    if kind == "none":
        return Flatten(n_fields, field_dim)
    if kind == "masknet":
        return MaskNetCrossing(n_fields, field_dim)
    if kind == "dhen":
        return DHEN(n_fields, field_dim)
    raise ValueError(f"unknown crossing {kind!r}; choose one of {KINDS}")
